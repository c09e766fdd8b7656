"""What ships inside the package: the CamVid demo pipelines and sample maps (``gesco_diffusers/assets``).

One place for their paths, so commands, the evaluator, the demo and the benchmarks agree on what ``--model fast``
means. Light: importing it loads no torch.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

#: Shipped pipelines by the short names the commands accept (``--model demo``, ``--model fast``).
#: ``demo``: the CamVid model trained with ``training/train.py`` (SDE-DPM-Solver++, 40 guided steps);
#: ``fast``: its distilled student (``training/distill.py``: guidance, then trajectory distillation; 4 single-map U-Net
#: calls per image, DDIM predicting x0);
#: ``ablation``: the demo configuration trained without noisy maps (Table VIII's second arm).
SHIPPED_MODELS = {"demo": "camvid", "fast": "camvid-fast", "ablation": "camvid-no-noisy-training"}
#: The model the commands run when none is named.
DEFAULT_MODEL = "demo"


#: Shipped comparison networks (``gesco_diffusers/assets/baselines``), trained by ``training/train_baseline.py``:
#: DeepJSCC at three bandwidth ratios k/n (Fig. 10: 1/48, about the paper's DeepJSCC rate; 1/4, about the channel uses
#: of our coded 64x80 map; 1/2, twice that) and the learned map denoiser (Table IX).
SHIPPED_BASELINES = {
    "deepjscc-r1_48": "camvid-deepjscc-r1_48",
    "deepjscc-r1_4": "camvid-deepjscc-r1_4",
    "deepjscc-r1_2": "camvid-deepjscc-r1_2",
    "map-denoiser": "camvid-map-denoiser",
}
#: What ``gesco evaluate --baselines deepjscc`` runs when no model folders are given.
DEFAULT_DEEPJSCC = ("deepjscc-r1_48", "deepjscc-r1_4", "deepjscc-r1_2")
#: The receiver of ``--fds learned`` when no ``--denoiser`` is given.
DEFAULT_DENOISER = "map-denoiser"


def assets_dir() -> Path:
    return Path(str(resources.files("gesco_diffusers").joinpath("assets")))


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a shipped pipeline by its short name (see :data:`SHIPPED_MODELS`)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}; choose one of {sorted(SHIPPED_MODELS)}")
    return assets_dir() / "demo" / SHIPPED_MODELS[name]


def demo_model_path() -> Path:
    """The shipped CamVid demo pipeline (``gesco_diffusers/assets/demo/camvid``)."""
    return shipped_model_path("demo")


def resolve_model(model: Optional[str]) -> Optional[str]:
    """``None`` -> the default shipped model's folder (``None`` if it is not installed); a shipped name -> its folder;
    anything else (a folder or Hub id) unchanged."""
    if model is None:
        path = shipped_model_path(DEFAULT_MODEL)
        return str(path) if (path / "model_index.json").is_file() else None
    if model in SHIPPED_MODELS:
        path = shipped_model_path(model)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"the shipped model {model!r} is not installed at {path}")
        return str(path)
    return model


def resolve_baseline(spec: str) -> str:
    """A shipped baseline's short name -> its folder (which must be installed); a folder or Hub id unchanged."""
    if spec in SHIPPED_BASELINES:
        path = assets_dir() / "baselines" / SHIPPED_BASELINES[spec]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the shipped baseline {spec!r} is not installed at {path}")
        return str(path)
    return spec


def required_model(model: Optional[str]) -> str:
    """:func:`resolve_model` for the commands that need a trained model: an error where it gives ``None``."""
    resolved = resolve_model(model)
    if resolved is None:
        raise FileNotFoundError(f"no --model given and the shipped {DEFAULT_MODEL!r} model is not installed")
    return resolved


def sample_data_dir() -> Path:
    """The shipped CamVid samples as a dataset root: ``val/images`` and ``val/labels`` (four pairs)."""
    return assets_dir() / "samples" / "camvid"


def sample_maps() -> list[Path]:
    """The shipped CamVid sample label maps (their photos are in the sibling ``images`` folder)."""
    return sorted((sample_data_dir() / "val" / "labels").glob("*.png"))


def sample_photo(map_path: Path) -> Optional[Path]:
    """The photo of a label map laid out as the samples are (``<root>/labels/x.png`` -> ``<root>/images/x.png``), or
    ``None`` when there is none."""
    map_path = Path(map_path)
    photo = map_path.parent.parent / "images" / map_path.name
    return photo if photo.is_file() else None
