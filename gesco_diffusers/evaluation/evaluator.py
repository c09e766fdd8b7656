"""The paper's evaluation (Sec. IV) of a pipeline over a grid of channel conditions: :func:`evaluate`.

It plans the runs (:mod:`.protocol`), makes the missing images of each (:mod:`.sources`, stored by :mod:`.store`),
scores every run from its PNG files (:mod:`.scoring`, :mod:`.rates`) and writes the report (:mod:`.reports`). Under
``torchrun`` or ``accelerate launch`` the processes share the work (:mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import torch

from ..channel import channel_for, resolve_psnr_convention
from ..presets import check_image_size, get_dataset_preset
from ..utils.files import check_writable_dir
from .data import EvaluationData
from .distributed import Processes, SingleProcess, numbered_batches
from .protocol import DEFAULT_IMAGE_QUALITIES, PAPER_PSNRS, ChannelCondition, Run, channel_grid, plan_runs
from .rates import SenderRates
from .reports import PAPER_FDS_MODES, EvaluationReport, RunRecord, write_report
from .scoring import KPISuite, ScoringNetworks, check_judge_labels
from .sources import (
    GenerationSettings,
    ImageSources,
    check_generation_arguments,
    check_size,
    load_pipeline,
    sample_size,
    sampling,
)
from .store import check_folder, remove_stale_temporaries, save_png, write_settings

if TYPE_CHECKING:  # the pipeline stack is heavy: only its type is needed here
    from ..pipelines import GescoPipeline

__all__ = ["EvaluationSettings", "evaluate", "generate_images", "score_runs"]

Logger = Callable[[str], None]
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation runs and how.

    Attributes:
        dataset: dataset preset/layout (default: the pipeline's preset); ``split``: ``"val"`` or ``"train"``.
        conditions: channel conditions (:func:`~.protocol.channel_grid`); default AWGN at the paper's PSNRs.
        data_dir: the dataset folder in its usual layout; or ``dataset_name``: a Hub id / ``save_to_disk`` folder.
        fds: FDS modes of the ``ours`` runs among :data:`~.protocol.FDS_MODES` (the first one is used for Fig. 7).
        out_dir: where images, tables, plots and results go (resumable, see :mod:`.store`).
        limit: evaluate the first ``limit`` maps only. ``size``: generation ``(H, W)`` (default: the U-Net's).
        num_inference_steps, guidance_scale, sampler: sampling (default: the pipeline's own; ``sampler``: a name
            of :data:`gesco_diffusers.diffusion.SAMPLERS`).
        seed: item ``i`` is sampled with seed ``seed + i``.
        batch_size: images per pipeline call and per metric forward. ``device``: default CUDA if available.
        table_psnr: the PSNR of Tables V, VI and VIII (10 dB in the paper); it must be in the grid.
        image_codec, image_quality: the full-image baseline (``None`` codec: no baseline; quality default: the
            codec's). ``image_qualities``: its Fig. 7 curve. ``map_codec``: the lossless map codec of Fig. 7.
        rate_distortion: also run the noiseless link for Fig. 7.
        psnr_convention: ``"paper"`` (Eq. 15) or ``"official_table"`` (the authors' noise table, AWGN) for the
            ``ours`` runs; default: the one stored with each pipeline (converted checkpoints: the table).
        deepjscc: DeepJSCC networks (folders, or shipped names such as ``deepjscc-r1_4``) run beside the pipeline
            at every analog condition (Fig. 10).
        denoiser: the :class:`~gesco_diffusers.receiver.MapDenoiser` folder (or shipped name) of the ``learned``
            FDS mode (Table IX); needed when ``fds`` lists it.
    """

    dataset: Optional[str] = None
    split: str = "val"
    conditions: Optional[Sequence[ChannelCondition]] = None
    data_dir: Optional[PathLike] = None
    dataset_name: Optional[str] = None
    fds: Sequence[str] = PAPER_FDS_MODES
    out_dir: PathLike = "outputs/evaluate"
    limit: Optional[int] = None
    size: Optional[Sequence[int]] = None
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    sampler: Optional[str] = None
    seed: int = 0
    batch_size: int = 4
    device: Union[str, torch.device, None] = None
    table_psnr: float = 10.0
    image_codec: Optional[str] = "hevc"
    image_quality: Optional[int] = None
    image_qualities: Sequence[int] = DEFAULT_IMAGE_QUALITIES
    map_codec: str = "hevc-lossless"
    rate_distortion: bool = True
    psnr_convention: Optional[str] = None
    deepjscc: Sequence[str] = ()
    denoiser: Optional[str] = None

    def checked(self) -> "EvaluationSettings":
        """These settings checked (before any model is loaded), with the conditions and the image quality filled
        in."""
        from ..sender.codecs import get_codec

        fds = tuple(self.fds)
        steps = 1 if self.num_inference_steps is None else self.num_inference_steps
        check_generation_arguments(self.seed, self.batch_size, steps, fds)
        check_writable_dir(self.out_dir, "output folder")  # before any model loads
        out = Path(self.out_dir).resolve()
        if self.data_dir is not None and Path(self.data_dir).resolve() in (out, *out.parents):
            raise ValueError(f"output folder {str(self.out_dir)!r} is inside the dataset folder {str(self.data_dir)!r}")
        if self.size is not None:
            check_image_size(self.size, "size")
        conditions = list(self.conditions) if self.conditions is not None else channel_grid(["awgn"], PAPER_PSNRS)
        if not conditions or not all(isinstance(c, ChannelCondition) and not c.is_clean for c in conditions):
            raise ValueError("conditions must be a non-empty list of noisy ChannelConditions (see channel_grid)")
        image_quality = self.image_quality
        if self.image_codec is not None:
            codec = get_codec(self.image_codec)
            if codec.lossless:
                raise ValueError(f"image_codec must be a lossy codec, {self.image_codec!r} is lossless")
            image_quality = codec.default_quality if image_quality is None else image_quality
        if not get_codec(self.map_codec).lossless:
            raise ValueError(f"map_codec must be a lossless codec, {self.map_codec!r} is lossy")
        from ..receiver import LEARNED_RECEIVER

        if (LEARNED_RECEIVER in fds) != (self.denoiser is not None):
            raise ValueError(f"the {LEARNED_RECEIVER!r} FDS mode and a denoiser go together: give both or neither")
        deepjscc = tuple(self.deepjscc)
        if len(set(deepjscc)) != len(deepjscc):
            raise ValueError(f"deepjscc lists a network twice: {list(deepjscc)}")
        return replace(self, fds=fds, conditions=conditions, image_quality=image_quality, deepjscc=deepjscc)


def evaluate(
    pipeline: Union["GescoPipeline", PathLike],
    settings: Optional[EvaluationSettings] = None,
    *,
    networks: Union[ScoringNetworks, KPISuite, None] = None,
    ablation_pipeline: Union["GescoPipeline", PathLike, None] = None,
    log: Optional[Logger] = None,
    **changes: Any,
) -> EvaluationReport:
    """Generate and score images for a pipeline over a dataset split and a grid of channel conditions.

    Args:
        pipeline: a :class:`GescoPipeline` or its folder (taken as trained with noisy maps, Sec. IV-A).
        settings: what to run and how (:class:`EvaluationSettings`; default: its defaults). Keywords named after its
            fields (``changes``) replace those fields.
        networks: the scoring networks (:class:`ScoringNetworks`, default: the locally installed defaults; or an
            already loaded :class:`KPISuite`).
        ablation_pipeline: the same model trained *without* noisy maps, for Table VIII.
        log: called with progress lines (default: silent).

    Returns:
        The :class:`EvaluationReport`; it is also written to ``settings.out_dir`` (:func:`write_report`).

    Under ``torchrun`` or ``accelerate launch`` the processes share the work (:mod:`.distributed`): each makes and
    scores its batches, only the main process writes ``results.json``, the tables and the plots, and a second launch
    into the same ``out_dir`` is refused while one runs. Every process returns the same report.
    """
    settings = replace(settings or EvaluationSettings(), **changes).checked()
    log = log or (lambda message: None)
    processes = Processes(settings.device)
    if not processes.is_main:
        log = lambda message: None  # noqa: E731  (the main process reports progress)
    with contextlib.ExitStack() as stack:
        return _evaluate(pipeline, settings, networks, ablation_pipeline, log, processes, stack)


def _evaluate(pipeline, s: EvaluationSettings, networks, ablation_pipeline, log: Logger, processes: Processes,
              stack: contextlib.ExitStack) -> EvaluationReport:
    device, conditions, out = processes.device, s.conditions, Path(s.out_dir)
    pipe = load_pipeline(pipeline, device)
    # the pipeline's own step count when none is given (a distilled model stores its few steps)
    num_inference_steps = pipe.default_num_inference_steps if s.num_inference_steps is None else s.num_inference_steps
    scale = pipe.default_guidance_scale if s.guidance_scale is None else s.guidance_scale
    pipe.check_inputs(num_inference_steps, None, scale, "pil", [])  # refused before anything is written
    ablation_pipe = load_pipeline(ablation_pipeline, device) if ablation_pipeline is not None else None
    for model in (p for p in (pipe, ablation_pipe) if p is not None):
        for condition in conditions:  # a level the PSNR convention cannot give fails now, not after hours of runs
            channel_for(model, condition.channel, condition.level_db, s.psnr_convention)
    preset = pipe.dataset_preset
    if ablation_pipe is not None and ablation_pipe.dataset_preset.map_channels != preset.map_channels:
        raise ValueError("the ablation pipeline has another number of map channels than the main pipeline")
    data_preset = get_dataset_preset(s.dataset) if s.dataset is not None else preset
    if data_preset.num_classes != preset.num_classes:
        raise ValueError(f"dataset {data_preset.name!r} has {data_preset.num_classes} classes, the model's maps "
                         f"{preset.num_classes}")
    dataset = data_preset.name
    size = check_size(s.size if s.size is not None else sample_size(pipe), pipe.unet.downsampling_factor)
    shipped = s.data_dir is None and s.dataset_name is None
    data_dir = shipped_data(dataset, s.split) if shipped else s.data_dir
    data = EvaluationData(data_preset, s.split, size, data_dir=data_dir, dataset_name=s.dataset_name, limit=s.limit)
    data_notes = [f"data: the {len(data)} {dataset} samples shipped with the package; pass --data-dir (the dataset "
                  "folder) for the paper's figures"] if shipped else []
    channels = list(dict.fromkeys(c.channel for c in conditions))
    table_condition = ChannelCondition("awgn" if "awgn" in channels else channels[0], s.table_psnr)
    suite = networks if isinstance(networks, KPISuite) else (networks or ScoringNetworks()).load(
        dataset, device, s.batch_size)
    if suite.judge is not None:
        check_judge_labels(suite.judge, preset.num_classes, dataset)

    notes = data_notes + list(suite.notes)
    if table_condition not in conditions:
        notes.append(f"Tables V and VIII need {table_condition.describe()} in the grid: omitted")
    if ablation_pipe is None:
        notes.append("Table VIII: the 'noisy training off' rows need a second pipeline (--ablation-model): omitted")
    else:
        notes.append("Table VIII: the main pipeline is taken as trained on noisy maps, --ablation-model as not")
    if suite.fid is not None and len(data) < 2:
        notes.append("FID skipped: it needs at least 2 images (a covariance)")
    if "digital" in channels and s.image_codec is not None:
        notes.append("the full-image baseline is not run over the digital link (it carries the map's bits)")
    if s.rate_distortion:
        notes.append(f"Fig. 7: map BPP = one-hot map ({preset.map_channels} planes) coded with {s.map_codec}; photo "
                     f"BPP = {s.image_codec} at qualities {list(s.image_qualities)}; both at {size[0]}x{size[1]}")
    baselines, receivers = load_comparison_networks(s, preset, dataset, size, device)
    if baselines:
        notes.append("Fig. 10: channel uses/pixel = complex symbols per pixel: the coded map's (or photo's) bits on "
                     "uncoded QPSK (2 bits per use) vs DeepJSCC's 3 k/n; DeepJSCC's latent has unit power per real "
                     "element, the one-hot map's peak power, so a PSNR gives both the same noise (Eq. 15)")
    runs = plan_runs(
        conditions, s.fds, table_condition=table_condition, image_codec=s.image_codec,
        image_quality=s.image_quality, image_qualities=s.image_qualities, rate_distortion=s.rate_distortion,
        semantic_map=suite.detector is not None or suite.depth is not None, ablation=ablation_pipe is not None,
        baselines=list(baselines),
    )

    pipes = [p for p in (pipe, ablation_pipe) if p is not None]
    # The output folder's lock, held until evaluate returns; taken after the checks above (a refused run creates no
    # folder) and before anything is written.
    stack.enter_context(processes.lock(out, "evaluate"))
    with sampling(pipes, s.sampler):
        guidance = pipe.default_guidance_scale if s.guidance_scale is None else float(s.guidance_scale)
        common = {"dataset": dataset, "split": s.split, "data": str(data_dir or s.dataset_name), "size": list(size),
                  "seed": s.seed}
        generation = GenerationSettings(num_inference_steps, guidance, s.seed, s.psnr_convention)
        sources = ImageSources(pipe, ablation_pipe, generation, common, baselines, receivers)
        generated = generate_images(runs, sources, data, out, s.batch_size, log, processes)
        sampler_name = type(pipe.scheduler).__name__
    rates = SenderRates(data, preset, s.map_codec, s.batch_size, processes, baselines)
    records, per_image, ceiling = score_runs(runs, generated, suite, rates, data, out, s.batch_size, table_condition,
                                             log, processes)
    report = EvaluationReport(
        records=records, ceiling=ceiling, per_image=per_image, notes=notes, table_level_db=float(s.table_psnr),
        primary_channel=table_condition.channel,
        settings={
            **common, "num_items": len(data), "model": str(pipe.name_or_path or "in-memory pipeline"),
            "model_fingerprint": sources.fingerprints[False],
            "ablation_model": None if ablation_pipe is None else str(ablation_pipe.name_or_path),
            "sampler": sampler_name, "num_inference_steps": num_inference_steps, "guidance_scale": guidance,
            "fds": list(s.fds), "image_codec": s.image_codec, "image_quality": s.image_quality,
            "map_codec": s.map_codec, "device": str(device), "conditions": [c.describe() for c in conditions],
            "seeding": "sampler: seed + item index; channel: derive_seed(seed + item index, 1)",
            "psnr_convention": resolve_psnr_convention(pipe, s.psnr_convention),
            "deepjscc": [str(spec) for spec in s.deepjscc],
            "denoiser": None if s.denoiser is None else str(s.denoiser),
            "num_processes": processes.num_processes,
        },
    )
    if processes.is_main:
        write_report(report, out)
    processes.wait()
    return report


def shipped_data(dataset: str, split: str) -> Path:
    """The dataset root of the samples shipped with the package, for an evaluation given no data."""
    from ..shipped import sample_data_dir

    if dataset != "camvid" or split != "val":
        raise ValueError(f"give the folder of the {dataset} dataset (--data-dir) or a Hub/local table (--dataset-name); "
                         "only CamVid val samples ship with the package")
    return sample_data_dir()


def load_comparison_networks(s: EvaluationSettings, preset, dataset: str, size: Sequence[int],
                             device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The DeepJSCC networks (by run name: the shipped name or the folder's name) and the trained receivers (by FDS
    mode), loaded and checked against the evaluation before anything is generated."""
    from ..baselines import DeepJSCC
    from ..receiver import LEARNED_RECEIVER, MapDenoiser
    from ..shipped import resolve_baseline

    baselines: dict[str, Any] = {}
    for spec in s.deepjscc:
        model = DeepJSCC.from_pretrained(resolve_baseline(spec)).to(device).eval()
        if model.config.dataset != dataset or tuple(model.config.resolution) != tuple(size):
            raise ValueError(f"DeepJSCC {spec} was trained on {model.config.dataset} at "
                             f"{model.config.resolution[0]}x{model.config.resolution[1]}; this evaluation is {dataset} "
                             f"at {size[0]}x{size[1]}")
        name = Path(str(spec).rstrip("/\\")).name
        if name in baselines:
            raise ValueError(f"two DeepJSCC networks are named {name!r}: give folders with different names")
        baselines[name] = model
    receivers: dict[str, Any] = {}
    if s.denoiser is not None:
        denoiser = MapDenoiser.from_pretrained(resolve_baseline(s.denoiser)).to(device).eval()
        if denoiser.config.num_classes != preset.num_classes or preset.use_instance_edges:
            raise ValueError(f"the denoiser {s.denoiser} cleans maps of {denoiser.config.num_classes} classes "
                             f"({denoiser.config.dataset}); this model's maps have {preset.map_channels} channels")
        receivers[LEARNED_RECEIVER] = denoiser
    return baselines, receivers


def generate_images(runs: Sequence[Run], sources: ImageSources, data: EvaluationData, out: Path, batch_size: int,
                    log: Logger, processes: Optional[Processes] = None) -> dict[str, int]:
    """Write the missing images of every run; return how many each run made now.

    Every check comes first (each run folder's ``settings.json``, read by every process), then the main process
    writes the new ``settings.json`` files and lists the missing images. The missing images of each run are cut into
    batches of ``batch_size`` (the same batches for any number of processes); batch ``b`` of the whole list is made
    and written by process ``b mod N``. A killed launch leaves whole images only; a rerun, with any number of
    processes, makes the rest."""
    processes = processes or SingleProcess()
    makers, claims, error = [], [], None
    try:
        for run_spec in runs:
            make, settings = sources(run_spec)
            folder = out / "images" / run_spec.name
            claims.append((folder, settings, check_folder(folder, settings)))
            makers.append(make)
    except (ValueError, OSError) as err:
        error = err
    processes.check(error if processes.is_main else None)
    if error is not None:  # (a rank whose own check failed although the main's passed: file system out of sync)
        raise error
    missing = None
    if processes.is_main:
        for folder, settings, unwritten in claims:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)
            if unwritten:
                write_settings(folder, settings)
        missing = [[i for i in range(len(data)) if not (folder / f"{data.stems[i]}.png").is_file()]
                   for folder, _, _ in claims]
    missing = processes.broadcast(missing)
    work = [(number, batch) for number, todo in enumerate(missing) for _, batch in numbered_batches(todo, batch_size)]
    total = sum(len(todo) for todo in missing)
    for number, (run_spec, todo) in enumerate(zip(runs, missing), 1):
        log(f"[{number}/{len(runs)}] {run_spec.name}: {len(data) - len(todo)} done, {len(todo)} to make")
    if processes.num_processes > 1:
        log(f"{total} images in {len(work)} batches over {processes.num_processes} processes"
            + (" (more processes than batches: some have nothing to make)" if len(work) < processes.num_processes
               else ""))
    for number, batch in processes.shard(work):
        items = [data.item(i) for i in batch]
        folder = claims[number][0]
        for item, picture in zip(items, makers[number](items)):
            save_png(picture, folder / f"{item.stem}.png")
    processes.wait()
    return {run_spec.name: len(todo) for run_spec, todo in zip(runs, missing)}


def score_runs(runs: Sequence[Run], generated: dict[str, int], suite: KPISuite, rates: SenderRates,
               data: EvaluationData, out: Path, batch_size: int, table_condition: ChannelCondition,
               log: Logger, processes: Optional[Processes] = None,
               ) -> tuple[list[RunRecord], list[dict[str, Any]], dict[str, float]]:
    """Score every run from its PNG files: the records, the per-image rows and the judge's ceiling."""
    indices = list(range(len(data)))
    log("scoring the real photos (FID statistics, judge ceiling)")
    ceiling = suite.reference_pass(data, indices, batch_size, processes)
    records: list[RunRecord] = []
    per_image: list[dict[str, Any]] = []
    for run_spec in runs:
        log(f"scoring {run_spec.name}")
        downstream = run_spec.condition == table_condition
        kpis, rows = suite.score(out / "images" / run_spec.name, data, indices, batch_size, downstream, processes)
        bpp = rates(run_spec.method)
        if bpp is not None:
            kpis["bpp"] = bpp
        kpis["cpp"] = rates.channel_uses(run_spec.method)
        records.append(replace(run_spec.record(), num_images=len(indices), generated=generated[run_spec.name],
                               kpis=kpis))
        per_image += [{"run": run_spec.name, **row} for row in rows]
    return records, per_image, ceiling
