"""What lets ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` load a saved GESCO pipeline.

diffusers loads pipelines and components it does not ship from Python modules stored in the folder (its "community
pipelines and components"): ``model_index.json`` names ``"_class_name": ["pipeline", "GescoPipeline"]`` for
``pipeline.py`` and ``"unet": ["unet_semantic", "SemanticUNet2DModel"]`` for ``unet/unet_semantic.py``, and
``trust_remote_code=True`` lets it import them (also from a Hub repository, whose download checks that every component
outside diffusers and transformers has such a module). The modules written here are one import from the installed
package each, so a folder carries no copy of the implementation and needs ``gesco-diffusers`` installed, as before.

``GescoPipeline.from_pretrained`` never imports them: :func:`package_names` maps both names back to the package's own
classes, so loading a folder with the pipeline class runs no code from the folder, and folders saved before the modules
existed (``"_class_name": "GescoPipeline"`` and the U-Net's full module path) load unchanged.
"""

from __future__ import annotations

import os
from typing import Union

#: ``model_index.json`` entry of the U-Net when its class comes from the package.
PACKAGE_UNET = ["gesco_diffusers.models.unet_semantic", "SemanticUNet2DModel"]
#: Module names (file stems) in the folder: diffusers' default custom-pipeline file, and the U-Net's module in its
#: component folder.
PIPELINE_MODULE = "pipeline"
UNET_MODULE = "unet_semantic"

_HEADER = (
    '"""Written by GescoPipeline.save_pretrained so that diffusers can load this folder:\n'
    "DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True). The implementation is the\n"
    'gesco-diffusers package, which must be installed."""\n\n'
)


def loading_names(index: dict, pipeline_class: type) -> dict:
    """``model_index.json`` naming the loading modules: the pipeline when its class is the package's own, the U-Net
    when it is the package's ``SemanticUNet2DModel``; other entries unchanged."""
    index = dict(index)
    if pipeline_class.__module__.startswith("gesco_diffusers."):
        index["_class_name"] = [PIPELINE_MODULE, pipeline_class.__name__]
    if list(index.get("unet") or []) == PACKAGE_UNET:
        index["unet"] = [UNET_MODULE, PACKAGE_UNET[1]]
    return index


def package_names(index: dict) -> dict:
    """The inverse of :func:`loading_names`: the entries as the package's classes (nothing in the folder is run)."""
    index = dict(index)
    class_name = index.get("_class_name")
    if isinstance(class_name, (list, tuple)) and len(class_name) == 2 and class_name[0] == PIPELINE_MODULE:
        index["_class_name"] = class_name[1]
    if list(index.get("unet") or []) == [UNET_MODULE, PACKAGE_UNET[1]]:
        index["unet"] = list(PACKAGE_UNET)
    return index


def write_loading_modules(folder: Union[str, os.PathLike], index: dict, pipeline_class: type) -> list[str]:
    """Write the modules that ``index`` (from :func:`loading_names`) names; returns their paths relative to
    ``folder``."""
    modules = {}
    if isinstance(index.get("_class_name"), list):
        modules[f"{PIPELINE_MODULE}.py"] = f"from {pipeline_class.__module__} import {pipeline_class.__name__}"
    if list(index.get("unet") or []) == [UNET_MODULE, PACKAGE_UNET[1]]:
        modules[os.path.join("unet", f"{UNET_MODULE}.py")] = f"from {PACKAGE_UNET[0]} import {PACKAGE_UNET[1]}"
    for relative, line in modules.items():
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{_HEADER}{line}  # noqa: F401\n")
    return sorted(modules)
