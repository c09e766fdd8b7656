"""Model cards and publishing of :class:`~gesco_diffusers.GescoPipeline` folders on the Hugging Face Hub.

Model cards are rendered from the Jinja templates in ``hub_cards/`` (one per dataset for trained pipelines, one for
converted official weights), filled from the pipeline folder itself (dataset preset, map encoding, U-Net and
scheduler configuration, parameter count) plus a training run's arguments and measured KPIs, or a conversion's
provenance. The rendered card is parsed back by :class:`huggingface_hub.ModelCard` and its metadata checked offline
(:func:`validate_card_metadata`; ``ModelCard.validate`` would need the network).

:func:`publish_pipeline` uploads a folder with exactly the file filter that :meth:`GescoPipeline.download` applies
(``TRAINING_STATE_PATTERNS``), so training checkpoints never reach the Hub and what is uploaded is what
``GescoPipeline.from_pretrained(repo_id)`` downloads.

Nothing here leaks or overwrites: training arguments pass through :func:`redact_secrets` before they reach a card;
an existing ``README.md`` (perhaps written by hand) is replaced only with ``overwrite=True`` / ``--overwrite-card``;
``gesco publish --dry-run`` writes nothing and prints the card it would write.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, metadata_load
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from .presets import DatasetPreset, get_dataset_preset
from .utils.files import atomic_write_text, check_writable_dir, read_json_file
from .utils.secrets import redact_secrets  # noqa: F401  (re-exported: the one filter for cards, configs, trackers)

PathLike = Union[str, os.PathLike]

#: One template per dataset (pipelines trained with this package) and one for converted official checkpoints.
CARD_KINDS = ("cityscapes", "coco-stuff", "ade20k", "camvid", "converted")
#: The Hub task closest to "semantic map -> image" (justified in ``hub_cards/_base.md``).
PIPELINE_TAG = "image-to-image"
REQUIRED_TAGS = ("gesco", "semantic-communication", "semantic-image-synthesis")
#: Dataset identifiers written to the card's ``datasets`` metadata.
DATASET_IDS = {"cityscapes": "cityscapes", "coco-stuff": "coco-stuff", "ade20k": "ade20k", "camvid": "camvid"}
DATASET_DISPLAY_NAMES = {"cityscapes": "Cityscapes", "coco-stuff": "COCO-Stuff", "ade20k": "ADE20K",
                         "camvid": "CamVid"}
#: Licence of the authors' code by checkpoint origin (reference doc: GESCO is MIT, SDM has no licence at all).
OFFICIAL_LICENSES = {
    "GESCO": dict(license="mit"),
    "SDM": dict(license="other", license_name="unlicensed-sdm",
                license_link="https://github.com/WeilunWang/semantic-diffusion-model"),
}
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


def templates_dir() -> Path:
    """The templates: ``gesco_diffusers/assets/hub_cards`` if shipped with the package, else the source checkout's
    ``hub_cards/`` beside the package."""
    here = Path(__file__).resolve()
    candidates = [here.parent / "assets" / "hub_cards", here.parents[1] / "hub_cards"]
    for path in candidates:
        if (path / "_base.md").is_file():
            return path
    raise FileNotFoundError(f"model-card templates not found in {[str(p) for p in candidates]}; pass template_dir=")


# --------------------------------------------------------------------------------------------------------------------
# Rendering


def _normalise_kind(kind: str) -> str:
    if kind == "converted":
        return kind
    try:
        name = get_dataset_preset(kind).name
    except ValueError:
        name = kind
    if name not in CARD_KINDS:
        raise ValueError(f"unknown model card kind {kind!r}; choose from {CARD_KINDS}")
    return name


def _dataset_fields(dataset: Union[str, DatasetPreset, Mapping]) -> dict:
    preset = DatasetPreset.from_dict(dataset) if isinstance(dataset, Mapping) else get_dataset_preset(dataset)
    return {**preset.to_dict(), "map_channels": preset.map_channels,
            "display_name": DATASET_DISPLAY_NAMES.get(preset.name, preset.name),
            "hub_id": DATASET_IDS.get(preset.name, preset.name)}


def _check_kpis(kpis: Mapping) -> dict[str, dict[str, Optional[float]]]:
    """``{condition: {metric: value}}`` with finite numbers (``None`` for "not measured")."""
    if not isinstance(kpis, Mapping):
        raise TypeError(f"kpis must be a mapping {{condition: {{metric: value}}}}, got {type(kpis).__name__}")
    checked = {}
    for condition, row in kpis.items():
        if not isinstance(row, Mapping):
            raise TypeError(f"kpis[{condition!r}] must be a mapping {{metric: value}}, got {type(row).__name__}")
        for metric, value in row.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"kpis[{condition!r}][{metric!r}] must be a finite number or None, got {value!r}")
        checked[str(condition)] = {str(m): (None if v is None else float(v)) for m, v in row.items()}
    return checked


def _kpi_columns(kpis: Mapping[str, Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in kpis.values():
        columns += [m for m in row if m not in columns]
    return columns


def _eval_results(kpis: Mapping[str, Mapping[str, Optional[float]]], dataset: Mapping) -> list[EvalResult]:
    """The KPIs as Hub ``model-index`` entries (one per measured condition and metric)."""
    return [
        EvalResult(task_type=PIPELINE_TAG, dataset_type=dataset["hub_id"], dataset_name=dataset["display_name"],
                   metric_type=re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_"), metric_value=value,
                   metric_name=f"{metric} ({condition})", metric_config=condition)
        for condition, row in kpis.items() for metric, value in row.items() if value is not None
    ]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _environment(template_dir: Path):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["value"] = _format_value
    return env


def render_model_card(kind: str, *, template_dir: Optional[PathLike] = None, **fields: Any) -> ModelCard:
    """Render the ``hub_cards/<kind>.md`` template into a :class:`huggingface_hub.ModelCard`.

    Args:
        kind: ``"cityscapes"``, ``"coco-stuff"``, ``"ade20k"``, ``"camvid"`` (a pipeline trained with this package) or
            ``"converted"`` (the authors' weights, see :func:`gesco_diffusers.convert.convert_official_checkpoint`).
        template_dir: folder with the templates (default: :func:`templates_dir`).
        **fields: template fields. Usually :func:`card_fields_from_folder` plus, for trained pipelines,
            ``training_args`` (a dict of the run's arguments) and ``kpis`` (``{condition: {metric: value}}``, e.g.
            ``{"AWGN PSNR 10 dB": {"mIoU": 0.41, "FID": 55.2}}``) and optionally ``channel_settings``; for converted
            weights ``conversion`` (provenance and the mapping summary). Optional: ``repo_id``, ``model_name``,
            ``license`` (+ ``license_name``/``license_link`` for ``"other"``), ``extra_tags``, ``description``.

    Raises:
        ValueError: a field the template needs is missing, or the rendered metadata is invalid.
    """
    import jinja2

    kind = _normalise_kind(kind)
    fields = dict(fields)
    dataset = fields.pop("dataset", None)
    if dataset is None:
        if kind == "converted":
            raise ValueError("a 'converted' model card needs the field 'dataset'")
        dataset = kind
    dataset = _dataset_fields(dataset)
    if kind != "converted" and dataset["name"] != kind:
        raise ValueError(f"model card kind {kind!r} does not match the pipeline's dataset {dataset['name']!r}")

    kpis = _check_kpis(fields.pop("kpis", None) or {})
    for name in ("training_args", "channel_settings"):  # copied verbatim into the card: never with credentials
        if isinstance(fields.get(name), Mapping):
            fields[name] = redact_secrets(fields[name])
    source = (fields.get("conversion") or {}).get("source", "GESCO")
    defaults = dict(OFFICIAL_LICENSES.get(source, {})) if kind == "converted" else dict(license="apache-2.0")
    context = {
        "license_name": None, "license_link": None, **defaults,
        "repo_id": f"your-namespace/gesco-{dataset['name']}", "extra_tags": [], "description": None,
        "training_args": {}, "channel_settings": {}, "kpi_source": None,
        "model_name": f"GESCO {dataset['display_name']}" + (" (converted official weights)"
                                                            if kind == "converted" else ""),
        **{k: v for k, v in fields.items() if v is not None},
        "kind": kind, "dataset": dataset, "kpis": kpis, "kpi_columns": _kpi_columns(kpis),
        "pipeline_tag": PIPELINE_TAG,
    }
    try:
        text = _environment(Path(template_dir) if template_dir else templates_dir()).get_template(f"{kind}.md") \
            .render(**context)
    except jinja2.UndefinedError as err:
        raise ValueError(f"model card template {kind!r} needs a field that was not given: {err.message}") from err
    card = ModelCard(text)
    if kpis:
        card.data.model_name = context["model_name"]
        card.data.eval_results = _eval_results(kpis, dataset)
    validate_card_metadata(card)
    return card


def validate_card_metadata(card: Union[ModelCard, PathLike]) -> ModelCardData:
    """Check a card's YAML metadata offline and return it parsed.

    Checks: the YAML parses (``metadata_load`` for files) into a :class:`ModelCardData` (which also parses
    ``model-index``); ``library_name: diffusers``; ``pipeline_tag`` is :data:`PIPELINE_TAG`; a lower-case licence
    identifier (``other`` needs ``license_name`` and ``license_link``); a non-empty ``datasets`` list; the
    :data:`REQUIRED_TAGS`. Whether the licence id and dataset ids exist on the Hub is not checked (that needs the
    network).
    """
    metadata = card.data.to_dict() if isinstance(card, ModelCard) else metadata_load(Path(card))
    if not metadata:
        raise ValueError("the model card has no YAML metadata block")
    problems = []
    if metadata.get("library_name") != "diffusers":
        problems.append(f"library_name must be 'diffusers', got {metadata.get('library_name')!r}")
    if metadata.get("pipeline_tag") != PIPELINE_TAG:
        problems.append(f"pipeline_tag must be {PIPELINE_TAG!r}, got {metadata.get('pipeline_tag')!r}")
    license_id = metadata.get("license")
    if not isinstance(license_id, str) or not _LICENSE_ID.match(license_id):
        problems.append(f"license must be a lower-case Hub licence identifier, got {license_id!r}")
    elif license_id == "other" and not (metadata.get("license_name") and metadata.get("license_link")):
        problems.append("license 'other' needs license_name and license_link")
    datasets = metadata.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) and d for d in datasets):
        problems.append(f"datasets must be a non-empty list of dataset ids, got {datasets!r}")
    tags = metadata.get("tags") or []
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        problems.append(f"tags lack {missing}")
    if problems:
        raise ValueError("invalid model card metadata:\n  - " + "\n  - ".join(problems))
    return ModelCardData(**metadata)


# --------------------------------------------------------------------------------------------------------------------
# Cards from pipeline folders


def _read_json(path: Path, folder: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: is {str(folder)!r} a GescoPipeline folder?")
    data = read_json_file(path, "pipeline file", allow_constants=True)
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def _count_parameters(weights: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def card_fields_from_folder(folder: PathLike) -> dict:
    """The template fields a saved pipeline folder provides (read from its JSON configs, no weights loaded)."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json", folder)
    unet = _read_json(folder / "unet" / "config.json", folder)
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", folder)
    semantic = index.get("semantic_config") or {}
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    fields: dict[str, Any] = dict(
        pipeline=dict(
            unet=dict(unet, num_parameters=_count_parameters(weights) if weights.is_file() else None,
                      attention_levels=[i for i, t in enumerate(unet["down_block_types"]) if "Attn" in t]),
            scheduler=dict(scheduler, class_name=scheduler.get("_class_name")),
            map_encoding=semantic.get("map_encoding", "one_hot"),
            psnr_convention=semantic.get("psnr_convention", "paper"),
            guidance_scale=semantic.get("guidance_scale"),
            num_inference_steps=semantic.get("num_inference_steps"),
            distilled=bool(semantic.get("distillation")),
            fp16_variant=(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file(),
        ),
    )
    if semantic.get("dataset"):
        fields["dataset"] = semantic["dataset"]
        if fields["pipeline"]["guidance_scale"] is None:
            fields["pipeline"]["guidance_scale"] = semantic["dataset"]["guidance_scale"]
    return fields


def build_model_card(folder: PathLike, kind: Optional[str] = None, **fields: Any) -> ModelCard:
    """Render the card of a saved pipeline folder without writing it.

    ``kind`` defaults to the folder's dataset (``semantic_config["dataset"]["name"]``); ``fields`` override or extend
    :func:`card_fields_from_folder` (e.g. ``training_args``, ``kpis``, ``conversion``, ``repo_id``).
    """
    folder = Path(folder)
    fields = {**card_fields_from_folder(folder), **{k: v for k, v in fields.items() if v is not None}}
    if kind is None:
        if "dataset" not in fields:
            raise ValueError(f"{str(folder)!r} stores no dataset preset: pass kind= (one of {CARD_KINDS})")
        kind = DatasetPreset.from_dict(fields["dataset"]).name if isinstance(fields["dataset"], Mapping) \
            else str(fields["dataset"])
    return render_model_card(kind, **fields)


def save_model_card(card: ModelCard, folder: PathLike, overwrite: bool = False) -> Path:
    """Write ``card`` as ``folder/README.md`` (atomically); an existing README.md is replaced only if ``overwrite``."""
    path = Path(folder) / "README.md"
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists (a hand-written card?); pass overwrite=True / --overwrite-card "
                              "to replace it with the rendered card (--dry-run shows it first)")
    check_writable_dir(path.parent, "the pipeline folder")  # a one-line error naming it, not a temporary file's
    atomic_write_text(path, str(card))
    return path


def write_model_card(folder: PathLike, kind: Optional[str] = None, *, overwrite: bool = False,
                     **fields: Any) -> ModelCard:
    """Render the card of a saved pipeline folder (:func:`build_model_card`) and save it as ``README.md`` in it; an
    existing README.md is replaced only if ``overwrite``."""
    card = build_model_card(folder, kind, **fields)
    save_model_card(card, folder, overwrite=overwrite)
    return card


# --------------------------------------------------------------------------------------------------------------------
# Publishing


def files_to_upload(folder: PathLike) -> list[str]:
    """The repository paths :func:`publish_pipeline` uploads from ``folder`` (training state excluded)."""
    from .pipelines.pipeline_gesco import TRAINING_STATE_PATTERNS  # (the pipeline stack: only when publishing)

    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=[*TRAINING_STATE_PATTERNS, *DEFAULT_IGNORE_PATTERNS]))


def publish_pipeline(
    folder: PathLike,
    repo_id: str,
    token: Optional[str] = None,
    private: bool = False,
    commit_message: str = "Upload GESCO pipeline",
    api: Optional[HfApi] = None,
    revision: Optional[str] = None,
):
    """Create ``repo_id`` (if needed) and upload the pipeline folder with its model card.

    Args:
        folder: a saved :class:`GescoPipeline` folder with a ``README.md`` model card (see :func:`write_model_card`).
        repo_id: ``"namespace/name"``.
        token: Hub token (default: the one ``huggingface_hub`` finds: ``HF_TOKEN`` or ``hf auth login``).
        private: create the repository as private.
        commit_message: commit message of the upload.
        api: the :class:`HfApi` to use (tests pass a fake).
        revision: branch to upload to (default: ``main``).

    Returns:
        the ``CommitInfo`` of the upload.
    """
    from .pipelines.pipeline_gesco import TRAINING_STATE_PATTERNS

    folder = Path(folder)
    _check_repo_id(repo_id)
    _check_pipeline_folder(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no model card (README.md): write one with "
                                "gesco_diffusers.hub.write_model_card(folder, training_args=..., kpis=...)")
    validate_card_metadata(folder / "README.md")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, token=token,
                             repo_type="model", revision=revision, ignore_patterns=list(TRAINING_STATE_PATTERNS))


def _check_repo_id(repo_id: str) -> None:
    validate_repo_id(repo_id)
    if "/" not in repo_id:
        raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}")


def _check_pipeline_folder(folder: Path) -> None:
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a pipeline folder (no model_index.json)")


def _load_json_arg(value: Optional[str], name: str) -> Optional[dict]:
    return None if value is None else read_json_file(value, f"--{name}")


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``gesco publish`` arguments (on ``parser`` if given)."""
    parser = parser or argparse.ArgumentParser(
        prog="gesco publish", description="Upload a GescoPipeline folder and its model card to the Hub.")
    parser.add_argument("folder", help="saved pipeline folder (with README.md, or pass --card-kind/--kpis to write it)")
    parser.add_argument("repo_id", help="namespace/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit-message", default="Upload GESCO pipeline")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--card-kind", choices=CARD_KINDS, default=None,
                        help="write README.md from this template before uploading")
    parser.add_argument("--training-args", default=None, help="JSON file with the training run's arguments")
    parser.add_argument("--kpis", default=None, help="JSON file {condition: {metric: value}} of measured KPIs")
    parser.add_argument("--overwrite-card", action="store_true",
                        help="replace an existing README.md with the card rendered from --card-kind/--training-args/"
                             "--kpis (never replaced otherwise)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write and upload nothing: print the card that would be written and the files that would "
                             "be uploaded")
    return parser


def _print_dry_run(folder: Path, card: Optional[ModelCard], overwrite_card: bool) -> None:
    readme = folder / "README.md"
    files = files_to_upload(folder)
    if card is not None:
        if readme.exists() and not overwrite_card:
            state = "exists: a real run refuses to replace it without --overwrite-card"
        else:
            state = "would be written" + (" (replacing the existing one)" if readme.exists() else "")
        print(f"--- {readme} {state}; dry run: nothing written ---")
        print(str(card).rstrip("\n"))
        files = sorted(set(files) | {"README.md"})
    print("--- files that would be uploaded ---")
    print("\n".join(files))


def run(args: argparse.Namespace, api: Optional[HfApi] = None) -> int:
    folder = Path(args.folder)
    _check_pipeline_folder(folder)  # a dry run of a wrong folder fails like the real run
    _check_repo_id(args.repo_id)  # before a card is written into the folder
    training_args = _load_json_arg(args.training_args, "training-args")
    kpis = _load_json_arg(args.kpis, "kpis")
    card = None
    if args.card_kind or training_args is not None or kpis is not None:
        card = build_model_card(folder, kind=args.card_kind, repo_id=args.repo_id, training_args=training_args,
                                kpis=kpis)
    if args.dry_run:
        _print_dry_run(folder, card, args.overwrite_card)
        return 0
    if card is not None:
        save_model_card(card, folder, overwrite=args.overwrite_card)
    info = publish_pipeline(folder, args.repo_id, token=args.token, private=args.private,
                            commit_message=args.commit_message, api=api)
    print(f"uploaded {folder} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


def main(argv: Optional[Sequence[str]] = None, api: Optional[HfApi] = None) -> int:
    """``gesco publish`` entry point; returns the exit status."""
    return run(build_parser().parse_args(argv), api=api)
