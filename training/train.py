#!/usr/bin/env python
"""Train GESCO's semantic diffusion model with Accelerate (paper Sec. III-B/C, IV-A).

    accelerate launch training/train.py --config training/configs/camvid-small.yaml --output_dir runs/camvid

Shaped like diffusers' ``examples/unconditional_image_generation/train_unconditional.py``. Single GPU, multi-GPU,
multi-node, CPU and mixed precision all come from ``accelerate launch`` (or ``accelerate config``); nothing here is
device-specific. Every flag can also come from a YAML/JSON ``--config`` file whose keys are the flag names; flags on
the command line override it (presets in ``training/configs/``).

Per optimizer step (see :class:`gesco_diffusers.training.SemanticDiffusionObjective`):

1. label maps -> one-hot maps + transmitted-channel mask (the sender, Sec. III-A);
2. noisy-map training (Sec. IV-A): clean with probability 0.3, otherwise AWGN at a PSNR drawn uniformly from
   {30, 25, 20, 15, 10, 1} dB, through the same channel module as inference (``--noise_psnrs``,
   ``--clean_probability``, ``--noise_channel``, ``--psnr_convention official_table``, ``--train_fds``);
3. classifier-free guidance dropout: each map replaced by the all-zero null map with ``--cfg_drop_prob``;
4. ``L = L_simple + lambda L_vlb`` (Eq. 9-11, ``--vlb_weight`` = lambda = 0.001), AdamW, EMA 0.9999.

Outputs in ``--output_dir``: ``checkpoint-<step>/`` (U-Net, optimizer, LR scheduler and EMA state as safetensors +
JSON, no pickle: :mod:`gesco_diffusers.training.checkpoints`; committed atomically, rotated with
``--checkpoints_total_limit``; resume with ``--resume_from_checkpoint latest``), ``train_log.jsonl`` (one line per
optimizer step: loss, mse, vb, psnr, lr), ``validation/step-<step>.png`` (fixed validation maps rendered with the EMA
weights), ``logs/`` (tensorboard, ``--report_to``) and, at the end, a ``GescoPipeline`` (``model_index.json``,
``unet/`` with the EMA weights, ``scheduler/``: the paper's 1000-step linear schedule sampled with the default
sampler, SDE-DPM-Solver++, and ``semantic_config`` with the dataset preset) that
``GescoPipeline.from_pretrained(output_dir)`` loads.

Runs are reproducible from ``--seed``: data order, augmentations and all noise are derived from the seed and the
step/epoch/row counters, so a resumed run continues exactly as an uninterrupted one would (same losses).

A new run refuses an ``--output_dir`` that already holds files: continue the earlier run with
``--resume_from_checkpoint latest`` or delete it with ``--overwrite_output_dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

try:
    import gesco_diffusers  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast, gather_object, set_seed
from diffusers.optimization import get_scheduler

from gesco_diffusers.channel import CHANNEL_REGISTRY, AWGNChannel
from gesco_diffusers.evaluation.distributed import launch_mismatch, requested_world_size
from gesco_diffusers.data import (
    TRANSFORMS,
    EpochShuffleSampler,
    SemanticExampleTransform,
    build_transform,
    find_data_problems,
    load_semantic_dataset,
    raise_for_problems,
    seeded_generator,
)
from gesco_diffusers.diffusion import PAPER_VLB_WEIGHT, GaussianDiffusion, default_scheduler, official_ddpm_scheduler
from gesco_diffusers.models import SemanticUNet2DModel, semantic_unet_config
from gesco_diffusers.pipelines import GescoPipeline
from gesco_diffusers.presets import (
    DATASET_PRESETS,
    DatasetPreset,
    check_image_size,
    default_palette,
    get_dataset_preset,
)
from gesco_diffusers.sender import SemanticEncoder
from gesco_diffusers.training import (
    EMA_SCHEDULES,
    OFFICIAL_CLEAN_PROBABILITY,
    OFFICIAL_TRAINING_PSNRS,
    PAPER_CLEAN_PROBABILITY,
    PAPER_TRAINING_PSNRS,
    RUN_FILES,
    NoisyMapSchedule,
    OneLineArgumentParser,
    SemanticDiffusionObjective,
    build_ema,
    check_output_dir,
    check_range,
    checkpoint_step,
    input_checks,
    load_checkpoint,
    parse_args_with_config,
    resolve_checkpoint,
    run_script,
    save_checkpoint,
    validation_grid,
)
from gesco_diffusers.utils.secrets import redact_secrets

logger = get_logger(__name__, log_level="INFO")

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_LOG = "train_log.jsonl"
# Default model configuration per dataset (``semantic_unet_config`` names); CamVid gets the CPU-sized network.
DEFAULT_MODEL_CONFIG = {"cityscapes": "cityscapes", "coco-stuff": "coco-stuff", "ade20k": "ade20k",
                        "camvid": "camvid-small"}
# Seed domain of the per-step training noise (data order and augmentations use other key shapes).
NOISE_STREAM = 1


# ----------------------------------------------------------------------------------------------------------------------
# Arguments


LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def add_optimisation_arguments(g, *, train_batch_size: int = 4, learning_rate: float = 1e-4,
                               lr_scheduler: str = "constant", lr_warmup_steps: int = 0,
                               max_grad_norm: Optional[float] = None, budget: str = "this run",
                               model_options: bool = True) -> None:
    """The optimisation flags (shared with ``training/distill.py``, with its defaults; ``model_options``: the
    ``--num_epochs``, gradient checkpointing and TF32 flags of a training from data)."""
    bool_flag = argparse.BooleanOptionalAction
    g.add_argument("--train_batch_size", type=int, default=train_batch_size, help="per device")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--learning_rate", type=float, default=learning_rate)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_weight_decay", type=float, default=0.0)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--max_grad_norm", type=float, default=max_grad_norm,
                   help="gradient clipping" + (" (off, as in the paper)" if max_grad_norm is None else ""))
    g.add_argument("--lr_scheduler", default=lr_scheduler, choices=LR_SCHEDULERS)
    g.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps)
    if model_options:
        g.add_argument("--num_epochs", type=int, default=None)
    g.add_argument("--max_train_steps", type=int, default=None, help="optimizer steps (overrides --num_epochs)"
                   if model_options else "optimizer steps")
    g.add_argument("--max_train_minutes", type=float, default=None,
                   help=f"wall-clock budget of {budget}; then stop cleanly, saving the state and the pipeline")
    g.add_argument("--mixed_precision", default=None, choices=("no", "fp16", "bf16"),
                   help="default: accelerate's config/launch setting")
    if model_options:
        g.add_argument("--gradient_checkpointing", action=bool_flag, default=False)
        g.add_argument("--allow_tf32", action=bool_flag, default=False)
    g.add_argument("--seed", type=int, default=0)


def check_optimisation_arguments(args: argparse.Namespace) -> None:
    """The flags of :func:`add_optimisation_arguments` that mean nothing (NaN, inf, 0 steps, a beta of 1) fail now,
    naming the flag, not at step N; so does a run without a length, or a decaying schedule without a known one."""
    lengths = ["--max_train_steps", *(["--num_epochs"] if hasattr(args, "num_epochs") else [])]
    known = args.max_train_steps is not None or getattr(args, "num_epochs", None) is not None
    if not known and args.max_train_minutes is None:
        raise ValueError(f"give a length: {', '.join(lengths)} or --max_train_minutes")
    if args.lr_scheduler not in ("constant", "constant_with_warmup") and not known:
        raise ValueError(f"--lr_scheduler {args.lr_scheduler} needs {' or '.join(lengths)}")
    for name in ("train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("learning_rate", "adam_epsilon", "max_grad_norm", "max_train_minutes"):
        check_range(args, name, 0, low_open=True)
    for name in ("adam_weight_decay", "lr_warmup_steps"):
        check_range(args, name, 0)
    for name in ("adam_beta1", "adam_beta2"):
        check_range(args, name, 0, 1, high_open=True)
    for name in ("max_train_steps", "num_epochs"):
        if hasattr(args, name):
            check_range(args, name, 1)
    check_range(args, "seed", 0, 2**32 - 1)  # (numpy's seed range)


def build_optimizer(parameters, args: argparse.Namespace) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)


def add_data_arguments(g, resolution: bool = True) -> None:
    """The data flags (shared with ``training/distill.py``, which takes the resolution from its teacher)."""
    bool_flag = argparse.BooleanOptionalAction
    g.add_argument("--dataset", default=None, help=f"dataset preset / file layout: {sorted(DATASET_PRESETS)}")
    g.add_argument("--data_dir", default=None, help="root folder of --dataset's files")
    g.add_argument("--dataset_name", default=None, help="Hub id or local datasets folder (instead of --data_dir)")
    g.add_argument("--dataset_config_name", default=None)
    g.add_argument("--image_column", default="image")
    g.add_argument("--label_column", default="label")
    g.add_argument("--instance_column", default=None)
    g.add_argument("--label_remap", default=None,
                   help="raw-id remapping of a --dataset_name table: none, ade20k or coco-stuff")
    g.add_argument("--num_classes", type=int, default=None,
                   help="class count of a custom dataset without a preset (with --dataset_name)")
    g.add_argument("--train_split", default="train")
    g.add_argument("--validation_split", default="val")
    g.add_argument("--cache_dir", default=None)
    g.add_argument("--max_train_samples", type=int, default=None, help="use only the first N training rows")
    if resolution:
        g.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"), default=None,
                       help="training resolution (default: the preset's, e.g. 256 512 for Cityscapes, 64 80 for CamVid)")
    g.add_argument("--train_transform", default="auto", choices=("auto",) + TRANSFORMS,
                   help="auto: keep_aspect (Cityscapes), random_resized_crop (ADE20K/COCO), resize (others)")
    g.add_argument("--random_flip", action=bool_flag, default=True, help="random horizontal flip, p=0.5")
    g.add_argument("--dataloader_num_workers", type=int, default=0)
    g.add_argument("--validate_data", action=bool_flag, default=True,
                   help="check every label map (ids, sizes, pairs) before training")


def check_data_arguments(args: argparse.Namespace) -> None:
    """The numbers of the data flags (shared with ``training/distill.py``), checked while parsing."""
    for name in ("max_train_samples", "num_classes"):
        check_range(args, name, 1)
    check_range(args, "dataloader_num_workers", 0)
    if getattr(args, "resolution", None) is not None:
        check_image_size(args.resolution, "--resolution")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawTextHelpFormatter)
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--config", default=None, help="YAML/JSON file of flag values (CLI flags override it)")

    add_data_arguments(p.add_argument_group("data"))

    g = p.add_argument_group("model and diffusion")
    g.add_argument("--model_config", default=None,
                   help="semantic_unet_config name (tiny, camvid-small, cityscapes, ...) or a JSON file of the config")
    g.add_argument("--pretrained_model_name_or_path", default=None,
                   help="fine-tune this pipeline folder (its unet/) or SemanticUNet2DModel folder")
    g.add_argument("--num_train_timesteps", type=int, default=1000)
    g.add_argument("--beta_schedule", default="linear", choices=("linear", "scaled_linear", "squaredcos_cap_v2"))
    g.add_argument("--vlb_weight", type=float, default=PAPER_VLB_WEIGHT,
                   help="lambda of Eq. 11 on the full VLB (0.001: guided-diffusion's mse + vb at T=1000)")

    g = p.add_argument_group("noisy maps and guidance")
    g.add_argument("--noise_psnrs", type=float, nargs="+", default=None,
                   help=f"PSNRs (dB) of noisy batches (paper: {list(PAPER_TRAINING_PSNRS)}; official_table: "
                        f"{list(OFFICIAL_TRAINING_PSNRS)})")
    g.add_argument("--noise_probabilities", type=float, nargs="+", default=None,
                   help="relative weights of --noise_psnrs (default equal)")
    g.add_argument("--clean_probability", type=float, default=None,
                   help=f"probability of a clean batch (paper {PAPER_CLEAN_PROBABILITY}; official 3/9)")
    g.add_argument("--noise_channel", default="awgn", choices=sorted(CHANNEL_REGISTRY))
    g.add_argument("--psnr_convention", default="paper", choices=("paper", "official_table"),
                   help="official_table: the authors' sigma table and training distribution")
    g.add_argument("--train_fds", action=bool_flag, default=False, help="apply FDS to noisy training maps (paper: off)")
    g.add_argument("--cfg_drop_prob", type=float, default=0.1,
                   help="probability of replacing a map by the null map (classifier-free guidance training)")
    g.add_argument("--guidance_scale", type=float, default=None,
                   help="guidance scale stored with the pipeline (default: the preset's)")

    add_optimisation_arguments(p.add_argument_group("optimisation"))

    g = p.add_argument_group("EMA")
    g.add_argument("--use_ema", action=bool_flag, default=True)
    g.add_argument("--ema_decay", type=float, default=0.9999)
    g.add_argument("--ema_schedule", default="constant", choices=EMA_SCHEDULES,
                   help="constant: ema <- d ema + (1-d) w from step 1 (paper, official code)")
    g.add_argument("--ema_inv_gamma", type=float, default=1.0, help="--ema_schedule warmup only")
    g.add_argument("--ema_power", type=float, default=3 / 4, help="--ema_schedule warmup only")

    g = p.add_argument_group("logging, validation, checkpoints")
    g.add_argument("--output_dir", default="gesco-model")
    g.add_argument("--logging_dir", default="logs", help="inside --output_dir")
    g.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all or none")
    g.add_argument("--tracker_project_name", default="gesco")
    g.add_argument("--validation_steps", type=int, default=1000, help="render validation maps every N steps")
    g.add_argument("--num_validation_maps", type=int, default=4)
    g.add_argument("--validation_inference_steps", type=int, default=25)
    g.add_argument("--validation_psnr", type=float, default=None, help="send validation maps over AWGN at this PSNR")
    g.add_argument("--checkpointing_steps", type=int, default=500)
    g.add_argument("--checkpoints_total_limit", type=int, default=None)
    g.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-<step> folder")
    g.add_argument("--overwrite_output_dir", action="store_true",
                   help="start a new run in an --output_dir that holds an earlier one, deleting its checkpoints, "
                        "log, validation images and pipeline (other files are kept)")
    return p


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    args = parse_args_with_config(build_parser(), argv)
    if args.dataset is None and args.dataset_name is None:
        raise ValueError("give --dataset (with --data_dir) or --dataset_name")
    if args.dataset_name is None and args.data_dir is None:
        raise ValueError(f"--dataset {args.dataset} needs --data_dir (the dataset's root folder; for CamVid: the SegNet "
                         "split, {train,val}/images/*.png and {train,val}/labels/*.png with ids 0-10, 11 unlabelled)")
    for name in ("checkpointing_steps", "validation_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    # Numbers that mean nothing (NaN, inf, 0 steps, a probability of 2) fail now, naming the flag, not at step N.
    check_data_arguments(args)
    check_optimisation_arguments(args)
    for name in ("ema_inv_gamma", "ema_power"):
        check_range(args, name, 0, low_open=True)
    for name in ("vlb_weight", "guidance_scale", "noise_probabilities", "num_validation_maps"):
        check_range(args, name, 0)
    for name in ("cfg_drop_prob", "clean_probability", "ema_decay"):
        check_range(args, name, 0, 1)
    for name in ("num_train_timesteps", "validation_inference_steps", "checkpoints_total_limit"):
        check_range(args, name, 1)
    for name in ("noise_psnrs", "validation_psnr"):
        check_range(args, name)  # dB: finite
    if args.validation_inference_steps > args.num_train_timesteps:
        raise ValueError(f"--validation_inference_steps {args.validation_inference_steps} exceeds the "
                         f"--num_train_timesteps {args.num_train_timesteps}")
    if args.report_to == "none":
        args.report_to = None
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Setup helpers


def resolve_preset(args: argparse.Namespace) -> DatasetPreset:
    """The dataset preset: a named one or a ``classes.json`` file (``--dataset``), or (``--num_classes``) a plain
    custom one for a Hub/local table."""
    if args.num_classes is not None:
        if args.dataset is not None and args.dataset in DATASET_PRESETS:
            raise ValueError("--num_classes is for datasets without a preset; drop it or --dataset")
        resolution = tuple(args.resolution) if args.resolution else None
        if resolution is None:
            raise ValueError("a custom dataset (--num_classes) needs --resolution H W")
        return DatasetPreset(
            name=args.dataset or "custom", num_classes=args.num_classes, unlabelled_id=None,
            use_instance_edges=args.instance_column is not None,
            class_names=tuple(f"class_{i}" for i in range(args.num_classes)),
            palette=tuple(default_palette(args.num_classes)), guidance_scale=args.guidance_scale or 1.0,
            resolution=resolution,
        )
    if args.dataset is None:
        raise ValueError("--dataset_name needs --dataset (a preset name) or --num_classes")
    return get_dataset_preset(args.dataset)


def load_split(args, preset: DatasetPreset, split: str, limit: Optional[int] = None):
    # (a file layout needs the preset itself: a classes.json preset has no registered name)
    return load_semantic_dataset(
        preset if args.dataset_name is None else preset.name, args.data_dir, split, dataset_name=args.dataset_name,
        image_column=args.image_column,
        label_column=args.label_column, instance_column=args.instance_column, label_remap=args.label_remap,
        config_name=args.dataset_config_name, cache_dir=args.cache_dir, limit=limit,
    )


def check_data(accelerator: Accelerator, rows, layout, preset: DatasetPreset, extra=()) -> None:
    """Every process checks its share of the rows; all processes raise the same error if anything is wrong."""
    shard = range(accelerator.process_index, len(rows), accelerator.num_processes)
    problems = find_data_problems(rows, preset.num_classes, layout.remap_labels, preset.use_instance_edges,
                                  indices=shard)
    for more_rows, more_layout in extra:  # the validation maps, checked by the main process
        if accelerator.is_main_process:
            problems += find_data_problems(more_rows, preset.num_classes, more_layout.remap_labels,
                                           preset.use_instance_edges)
    if accelerator.num_processes > 1:
        problems = gather_object(problems)
    raise_for_problems(sorted(problems, key=lambda p: (p.kind, p.file)))


def load_unet(args, preset: DatasetPreset, resolution: tuple[int, int]) -> SemanticUNet2DModel:
    if args.pretrained_model_name_or_path:
        path = Path(args.pretrained_model_name_or_path)
        subfolder = "unet" if (path / "unet").is_dir() else None
        unet = SemanticUNet2DModel.from_pretrained(str(path), subfolder=subfolder)
    else:
        name = args.model_config or DEFAULT_MODEL_CONFIG.get(preset.name)
        if name is None:
            raise ValueError(f"--model_config is needed for dataset {preset.name!r}")
        config = json.loads(Path(name).read_text()) if name.endswith(".json") else semantic_unet_config(name)
        config.update(segmap_channels=preset.map_channels, sample_size=list(resolution))
        torch.manual_seed(args.seed)  # the initial weights depend on the seed only
        unet = SemanticUNet2DModel(**config)
    if unet.config.segmap_channels != preset.map_channels:
        raise ValueError(
            f"the U-Net takes {unet.config.segmap_channels} map channels but preset {preset.name!r} has "
            f"{preset.map_channels}"
        )
    factor = unet.downsampling_factor
    if resolution[0] % factor or resolution[1] % factor:
        raise ValueError(f"--resolution {resolution[0]} {resolution[1]} is not divisible by the U-Net's "
                         f"downsampling factor {factor}")
    return unet


def build_noise_schedule(args) -> NoisyMapSchedule:
    official = args.psnr_convention == "official_table"
    psnrs = args.noise_psnrs or (OFFICIAL_TRAINING_PSNRS if official else PAPER_TRAINING_PSNRS)
    clean = args.clean_probability
    if clean is None:
        clean = OFFICIAL_CLEAN_PROBABILITY if official else PAPER_CLEAN_PROBABILITY
    return NoisyMapSchedule(psnrs, clean, args.noise_probabilities, args.noise_channel, args.psnr_convention,
                            fds=args.train_fds)


class ValidationMaps:
    """A few fixed validation maps, rendered with the EMA weights every ``--validation_steps`` steps."""

    def __init__(self, args, preset: DatasetPreset, resolution, layout_rows) -> None:
        rows, layout = layout_rows
        rows = rows.select(range(min(args.num_validation_maps, len(rows))))
        rows.set_transform(SemanticExampleTransform(build_transform(layout.eval_transform, resolution), resolution,
                                                    layout.remap_labels, args.seed))
        examples = [rows[i] for i in range(len(rows))]
        self.labels = torch.stack([e["label"] for e in examples])
        self.instances = torch.stack([e["instance"] for e in examples]) if "instance" in examples[0] else None
        self.images = torch.stack([e["pixel_values"] for e in examples])
        self.args, self.preset = args, preset

    @torch.no_grad()
    def render(self, accelerator: Accelerator, unet: SemanticUNet2DModel, step: int) -> Path:
        args = self.args
        pipeline = GescoPipeline(unet=unet, scheduler=default_scheduler(**scheduler_overrides(args)),
                                 semantic_config=semantic_config(args, self.preset, None))
        pipeline.set_progress_bar_config(disable=True)
        channel = AWGNChannel(args.validation_psnr) if args.validation_psnr is not None else None
        was_training = unet.training
        unet.eval()
        with accelerator.autocast():
            images = pipeline(self.labels, instance_map=self.instances, channel=channel, fds=channel is not None,
                              num_inference_steps=args.validation_inference_steps,
                              generator=torch.Generator().manual_seed(args.seed), output_type="np").images
        unet.train(was_training)
        grid = validation_grid(self.labels, images, self.preset.palette, self.images)
        path = Path(args.output_dir) / "validation" / f"step-{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                import numpy as np

                tracker.writer.add_images("validation", np.asarray(grid)[None], step, dataformats="NHWC")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"validation": wandb.Image(grid)}, step=step)
        return path


def train_run_files(args) -> tuple[str, ...]:
    """What this script writes into ``--output_dir`` (removed by ``--overwrite_output_dir``)."""
    logging_dir = Path(args.logging_dir)
    return RUN_FILES + ((args.logging_dir,) if not logging_dir.is_absolute() and ".." not in logging_dir.parts else ())


def scheduler_overrides(args) -> dict[str, Any]:
    return {"num_train_timesteps": args.num_train_timesteps, "beta_schedule": args.beta_schedule}


def semantic_config(args, preset: DatasetPreset, noise_schedule: Optional[NoisyMapSchedule]) -> dict[str, Any]:
    config = {"dataset": preset.to_dict(),
              "guidance_scale": args.guidance_scale if args.guidance_scale is not None else preset.guidance_scale,
              "psnr_convention": args.psnr_convention}
    if noise_schedule is not None:
        config["training"] = {"noisy_maps": noise_schedule.describe(), "cfg_drop_prob": args.cfg_drop_prob,
                              "vlb_weight": args.vlb_weight, "ema_decay": args.ema_decay if args.use_ema else None}
    return config


def tracker_config(args) -> dict[str, Any]:
    """Hyper-parameters for the trackers (tensorboard's hparams accept scalars and strings only), secrets redacted."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in redact_secrets(vars(args)).items()}


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines past the resumed step (written by the interrupted run after its last checkpoint).

    A run killed while appending can leave a half-written last line: it is dropped with a warning. A damaged line
    anywhere else is an error, since the log would no longer say what happened.
    """
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not a JSON record ({err}); fix or remove the line") from err
            logger.warning(f"{path}: dropping the half-written last line {number} ({line[:60]!r})")
            continue
        if record["step"] <= last_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


def checkpoint_contents(unet, optimizer, lr_scheduler, ema) -> dict[str, dict]:
    """What a checkpoint holds (the names are its file stems): ``save_checkpoint`` / ``load_checkpoint`` arguments."""
    return {"models": {"model": unet}, "optimizers": {"optimizer": optimizer},
            "schedulers": {"lr_scheduler": lr_scheduler}, "emas": {"ema": ema} if ema is not None else {}}


# ----------------------------------------------------------------------------------------------------------------------
# Training


def main(args: argparse.Namespace) -> Path:
    start_time = time.monotonic()
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        # On a machine without CUDA, cpu=True is what makes `torchrun --nproc_per_node N train.py` join N gloo ranks
        # (without it each process is an independent "rank 0 of 1"); GPU launches are unchanged.
        cpu=not torch.cuda.is_available(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    launch_problem = launch_mismatch(accelerator.num_processes)
    if launch_problem is not None and requested_world_size() is not None:
        raise SystemExit(f"train.py: error: {launch_problem}")  # N independent copies would race on output_dir
    if launch_problem is not None:
        logger.warning(f"WARNING: {launch_problem}")
    set_seed(args.seed)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # ---- data (checked before anything heavy is built)
    with input_checks():  # the user's inputs, before any work: one-line errors
        preset = resolve_preset(args)
        resolution = tuple(args.resolution) if args.resolution else tuple(preset.resolution)
        preset = dataclasses.replace(preset, resolution=resolution)  # stored with the pipeline: what it generates at
        train_rows, layout = load_split(args, preset, args.train_split, args.max_train_samples)
        try:
            val_source = load_split(args, preset, args.validation_split, args.num_validation_maps)
        except (FileNotFoundError, ValueError, KeyError) as err:
            logger.warning(f"no validation split {args.validation_split!r} ({err}); using training rows for validation")
            val_source = (train_rows.select(range(min(args.num_validation_maps, len(train_rows)))), layout)
        if args.validate_data:
            check_data(accelerator, train_rows, layout, preset, extra=[val_source])
            logger.info(f"checked {len(train_rows)} training label maps: ok")
    kind = layout.train_transform if args.train_transform == "auto" else args.train_transform
    train_transform = SemanticExampleTransform(build_transform(kind, resolution, args.random_flip), resolution,
                                               layout.remap_labels, args.seed)
    train_rows.set_transform(train_transform)
    sampler = EpochShuffleSampler(len(train_rows), seed=args.seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_rows, batch_size=args.train_batch_size, sampler=sampler, num_workers=args.dataloader_num_workers,
        drop_last=True, generator=torch.Generator().manual_seed(args.seed), persistent_workers=False,
    )
    with input_checks():  # the user's inputs, before any work: one-line errors
        if len(train_dataloader) == 0:
            raise ValueError(f"{len(train_rows)} training rows make no full batch of {args.train_batch_size}")

    # ---- model, objective, optimizer
    with input_checks():
        unet = load_unet(args, preset, resolution)
    # Only now, with the inputs checked, is anything written: an earlier run in output_dir is continued or deleted
    # only when asked.
    run_files = train_run_files(args)
    with input_checks():
        check_output_dir(output_dir, args.resume_from_checkpoint, args.overwrite_output_dir,
                         is_main_process=accelerator.is_main_process, run_files=run_files)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    scheduler = default_scheduler(**scheduler_overrides(args))  # the sampler stored with the pipeline
    noise_schedule = build_noise_schedule(args)
    objective = SemanticDiffusionObjective(
        diffusion=GaussianDiffusion.from_scheduler(official_ddpm_scheduler(**scheduler_overrides(args))),
        encoder=SemanticEncoder.from_preset(preset),
        noise_schedule=noise_schedule, cfg_drop_probability=args.cfg_drop_prob, vlb_weight=args.vlb_weight,
    )
    ema = None
    if args.use_ema:
        ema = build_ema(unet.parameters(), args.ema_decay, args.ema_schedule, args.ema_inv_gamma, args.ema_power,
                        model_cls=SemanticUNet2DModel, model_config=unet.config)
    optimizer = build_optimizer(unet.parameters(), args)

    steps_per_epoch = math.ceil(len(train_dataloader) / max(1, accelerator.num_processes)
                                / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps
    if max_train_steps is None and args.num_epochs is not None:
        max_train_steps = args.num_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=(max_train_steps or 0) * accelerator.num_processes,
    )
    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader,
                                                                          lr_scheduler)
    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)  # now per process
    if args.max_train_steps is None and args.num_epochs is not None:
        max_train_steps = args.num_epochs * steps_per_epoch
    if ema is not None:
        ema.to(accelerator.device)
    state = checkpoint_contents(unet, optimizer, lr_scheduler, ema)
    validation = ValidationMaps(args, preset, resolution, val_source) if accelerator.is_main_process else None
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=tracker_config(args))

    # ---- resume
    global_step = 0
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if checkpoint is not None:
        logger.info(f"resuming from {checkpoint}")
        load_checkpoint(accelerator, checkpoint, **state)
        global_step = checkpoint_step(checkpoint)
        if accelerator.is_main_process:
            truncate_log(output_dir / TRAIN_LOG, global_step)
    elif args.resume_from_checkpoint is not None:
        logger.info("no checkpoint to resume from: starting a new run")
    first_epoch, resume_batches = divmod(global_step, steps_per_epoch)
    resume_batches *= args.gradient_accumulation_steps

    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(f"***** training: {len(train_rows)} rows, {steps_per_epoch} steps/epoch, batch {total_batch} "
                f"(per device {args.train_batch_size}, {accelerator.num_processes} processes, accumulation "
                f"{args.gradient_accumulation_steps}), max steps {max_train_steps}, budget {args.max_train_minutes} "
                f"min, resolution {resolution[0]}x{resolution[1]}, noisy maps {noise_schedule.describe()}")

    # ---- loop
    log_path = output_dir / TRAIN_LOG
    unwrapped = accelerator.unwrap_model(unet)
    last_saved = global_step if checkpoint is not None else None
    running: list[torch.Tensor] = []
    psnrs: list[Optional[float]] = []
    done = max_train_steps is not None and global_step >= max_train_steps
    epoch = first_epoch
    while not done:
        unet.train()
        train_dataloader.set_epoch(epoch)
        train_transform.epoch = epoch  # augmentations of this epoch (workers are re-created per epoch)
        skip = resume_batches if epoch == first_epoch else 0
        loader = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        for batch_index, batch in enumerate(loader, start=skip):
            micro = batch_index % args.gradient_accumulation_steps
            generator = seeded_generator(args.seed, NOISE_STREAM, accelerator.process_index, global_step, micro)
            with accelerator.accumulate(unet):
                out = objective(unet, batch["pixel_values"], batch["label"], batch.get("instance"), generator)
                accelerator.backward(out["loss"])
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running.append(torch.stack([out["loss"].detach(), out["mse"].detach().mean(), out["vb"].detach().mean()]))
            psnrs.append(out["psnr"])
            if not accelerator.sync_gradients:
                continue

            # ---- one optimizer step done
            if ema is not None:
                ema.step(unet.parameters())
            global_step += 1
            loss, mse, vb = accelerator.reduce(torch.stack(running).mean(0), reduction="mean").tolist()
            record = {"step": global_step, "epoch": epoch, "loss": loss, "mse": mse, "vb": vb, "psnr": psnrs,
                      "lr": lr_scheduler.get_last_lr()[0], "elapsed_s": round(time.monotonic() - start_time, 3)}
            running, psnrs = [], []
            if accelerator.is_main_process:
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            accelerator.log({k: record[k] for k in ("loss", "mse", "vb", "lr")}, step=global_step)

            if global_step % args.checkpointing_steps == 0:
                path = save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, **state)
                last_saved = global_step
                logger.info(f"saved state to {path}")
            if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                with ema_weights(ema, unet):
                    logger.info(f"validation images: {validation.render(accelerator, unwrapped, global_step)}")

            done = max_train_steps is not None and global_step >= max_train_steps
            if args.max_train_minutes is not None and not done:
                over = torch.tensor([int(time.monotonic() - start_time >= 60 * args.max_train_minutes)],
                                    device=accelerator.device)
                done = bool(broadcast(over).item())  # the main process's clock decides for everyone
                if done:
                    logger.info(f"time budget of {args.max_train_minutes} min reached at step {global_step}")
            if done:
                break
        epoch += 1

    # ---- final state and pipeline
    if last_saved != global_step:
        path = save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, **state)
        logger.info(f"saved state to {path}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with ema_weights(ema, unet):
            pipeline = GescoPipeline(unet=unwrapped, scheduler=scheduler,
                                     semantic_config=semantic_config(args, preset, noise_schedule))
            pipeline.save_pretrained(str(output_dir))
            if global_step % args.validation_steps != 0:
                validation.render(accelerator, unwrapped, global_step)
        logger.info(f"saved the pipeline (EMA weights) to {output_dir} after {global_step} steps, "
                    f"{time.monotonic() - start_time:.1f} s")
    accelerator.end_training()
    return output_dir


@contextlib.contextmanager
def ema_weights(ema, model: torch.nn.Module):
    """Inside the block the model holds the EMA weights; its training weights are restored afterwards."""
    params = list(model.parameters())
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


if __name__ == "__main__":
    sys.exit(run_script("train.py", parse_args, main))
