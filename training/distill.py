#!/usr/bin/env python
"""Distil a trained GESCO pipeline into a few-step, single-map student, with Accelerate.

    accelerate launch training/distill.py --config training/configs/camvid-fast.yaml --data_dir path/to/camvid

Shaped like diffusers' ``examples/consistency_distillation/train_lcm_distill_sd_wds.py``, in pixel space and
conditioned on semantic maps. The teacher is a ``GescoPipeline`` folder (default: the shipped CamVid demo model)
sampled with its stored classifier-free guidance scale; the student starts from the teacher's weights (or
``--student_init``'s) and needs one map per image, so each sampling step is one U-Net call. Three methods
(``--method``):

* ``consistency``: consistency distillation (LCM; :mod:`gesco_diffusers.training.consistency`): the student learns the
  guided teacher's probability-flow ODE endpoint and is sampled by diffusers' ``LCMScheduler`` on the grid;
* ``guidance``: guidance distillation (Meng et al. 2023, stage one;
  :mod:`gesco_diffusers.training.guidance_distillation`): the student regresses the guided teacher's output at the
  timesteps of a few-step stochastic sampler (SDE-DPM-Solver++ on a stored schedule), which then samples it;
* ``trajectory``: trajectory distillation (progressive distillation in one stage;
  :mod:`gesco_diffusers.training.trajectory_distillation`): the guided teacher's DDIM trajectories are recorded once
  (``--num_trajectories``, ``--solver_substeps`` teacher steps per student step, in ``<output_dir>/trajectories``,
  resumable) and the student learns each jump of its own few-step DDIM sampler.

Data, noisy-map schedule (the teacher's, read from its ``semantic_config``), seeding and checkpoints are those of
``training/train.py``. Outputs in ``--output_dir``: ``checkpoint-<step>/`` (committed atomically, no pickle; resume with
``--resume_from_checkpoint latest``), ``train_log.jsonl`` and, at the end, a ``GescoPipeline`` whose
``semantic_config`` stores ``num_inference_steps`` (default 4) and ``guidance_scale`` 1 (the guidance is in the
weights), so ``GescoPipeline.from_pretrained(output_dir)(map)`` makes at most 4 U-Net calls per image.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch

try:
    import gesco_diffusers  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast, set_seed
from diffusers import LCMScheduler
from diffusers.optimization import get_scheduler

import train as base  # noqa: E402  (shared data, preset and logging helpers of training/train.py)
from gesco_diffusers.data import (
    EpochShuffleSampler,
    SemanticExampleTransform,
    build_transform,
    seeded_generator,
)
from gesco_diffusers.diffusion import GaussianDiffusion, build_scheduler
from gesco_diffusers.evaluation.store import module_fingerprint
from gesco_diffusers.models import SemanticUNet2DModel
from gesco_diffusers.pipelines import GescoPipeline
from gesco_diffusers.presets import DatasetPreset
from gesco_diffusers.sender import SemanticEncoder
from gesco_diffusers.training import (
    NoisyMapSchedule,
    OneLineArgumentParser,
    check_output_dir,
    check_range,
    input_checks,
    load_checkpoint,
    parse_args_with_config,
    resolve_checkpoint,
    run_script,
    save_checkpoint,
)
from gesco_diffusers.training.consistency import (
    SIGMA_DATA,
    TIMESTEP_SCALING,
    ConsistencyDistillationObjective,
    SkippingStepSolver,
    update_target,
)
from gesco_diffusers.training.guidance_distillation import GuidanceDistillationObjective
from gesco_diffusers.training.objective import received_maps
from gesco_diffusers.training.trajectory_distillation import (
    PREDICTION_TYPES,
    TrajectoryCache,
    TrajectoryDataset,
    TrajectoryDistillationObjective,
    record_trajectories,
    student_sampler,
    student_timesteps,
)

logger = get_logger(__name__, log_level="INFO")

TRAIN_LOG = base.TRAIN_LOG
METHODS = ("consistency", "guidance", "trajectory")
NOISE_STREAM = 2  # seed domain of the per-step distillation noise (train.py uses 1)
TRAJECTORY_STREAM = 3  # seed domain of trajectory j's received map and initial noise
DEFAULT_TEACHER = Path(__file__).resolve().parents[1] / "gesco_diffusers" / "assets" / "demo" / "camvid"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(prog="distill.py", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawTextHelpFormatter)
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--config", default=None, help="YAML/JSON file of flag values (CLI flags override it)")

    g = p.add_argument_group("teacher and student")
    g.add_argument("--method", default="consistency", choices=METHODS, help="distillation method (module docstring)")
    g.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="a trained GescoPipeline folder (learned variance)")
    g.add_argument("--guidance_scale", type=float, default=None,
                   help="teacher's classifier-free guidance scale folded into the student (default: the teacher's)")
    g.add_argument("--num_grid_steps", type=int, default=50,
                   help="N of the skipping grid tau_i = (i+1) T/N - 1 (LCMScheduler's original_inference_steps)")
    g.add_argument("--solver_substeps", type=int, default=1,
                   help="teacher DDIM steps per skip (consistency) or per student step (trajectory)")
    g.add_argument("--student_init", default=None,
                   help="a GescoPipeline folder whose U-Net (the teacher's architecture) initialises the student, "
                        "e.g. a guidance-distilled student (default: the teacher's weights)")
    g.add_argument("--num_trajectories", type=int, default=2048,
                   help="trajectory: teacher trajectories recorded (each gives --num_inference_steps jumps)")
    g.add_argument("--trajectory_shard_size", type=int, default=16,
                   help="trajectory: trajectories per recorded shard (and per teacher batch)")
    g.add_argument("--student_prediction", default="epsilon", choices=PREDICTION_TYPES,
                   help="trajectory: what the student outputs (sample: x0, well-conditioned at t = 999; stored in "
                        "its scheduler's prediction_type)")
    g.add_argument("--trajectory_weighting", default="truncated_snr", choices=("truncated_snr", "balanced"),
                   help="trajectory: weight of each student step's x0 error (trajectory_distillation.py)")
    g.add_argument("--recording_precision", default="bf16", choices=("bf16", "fp16", "no"),
                   help="trajectory: autocast of the teacher while recording (bf16: 2.7x faster on this CPU, the "
                        "teacher's DDIM images as good; the student's own precision is --mixed_precision)")
    g.add_argument("--teacher_clip_x0", action=bool_flag, default=True,
                   help="clip the teacher's x0 to [-1, 1] in its ODE steps (as its own samplers do)")
    g.add_argument("--huber_c", type=float, default=0.001, help="c of the pseudo-Huber loss")
    g.add_argument("--target_ema_decay", type=float, default=0.95, help="EMA decay of the target network")
    g.add_argument("--num_inference_steps", type=int, default=4, help="sampling steps stored with the student")
    g.add_argument("--timesteps", type=int, nargs="+", default=None,
                   help="guidance: the student's sampling schedule, stored as its default (descending; default: the "
                        "sampler's trailing spacing at --num_inference_steps)")
    g.add_argument("--all_timesteps", action=bool_flag, default=False,
                   help="guidance: regress at every timestep, not only at the student sampler's")

    g = p.add_argument_group("data (as training/train.py; dataset and resolution: the teacher's by default)")
    base.add_data_arguments(g, resolution=False)
    g.add_argument("--train_fds", action=bool_flag, default=None,
                   help="apply FDS to the noisy training maps (default: as the teacher was trained)")

    base.add_optimisation_arguments(
        p.add_argument_group("optimisation"), train_batch_size=8, learning_rate=5e-5,
        lr_scheduler="constant_with_warmup", lr_warmup_steps=100, max_grad_norm=1.0, model_options=False,
        budget="this run's training loop (trajectory recording not counted)")

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--output_dir", default="gesco-fast")
    g.add_argument("--overwrite_output_dir", action="store_true",
                   help="start a new run in an --output_dir that holds another run (its files are replaced)")
    g.add_argument("--logging_dir", default="logs", help="inside --output_dir")
    g.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all or none")
    g.add_argument("--tracker_project_name", default="gesco-distill")
    g.add_argument("--checkpointing_steps", type=int, default=250)
    g.add_argument("--checkpoints_total_limit", type=int, default=2)
    g.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-<step> folder")
    return p


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    args = parse_args_with_config(build_parser(), argv)
    if args.dataset_name is None and args.data_dir is None:
        raise ValueError("give --data_dir (the dataset's root folder) or --dataset_name")
    for name in ("checkpointing_steps", "num_inference_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.timesteps is not None:
        if args.method != "guidance":
            raise ValueError("--timesteps is for --method guidance (LCMScheduler picks its own from the grid)")
        if len(args.timesteps) != args.num_inference_steps:
            raise ValueError(f"--timesteps lists {len(args.timesteps)} steps, --num_inference_steps is "
                             f"{args.num_inference_steps}")
        if any(a <= b for a, b in zip(args.timesteps, args.timesteps[1:])) or min(args.timesteps) < 0:
            raise ValueError(f"--timesteps must be non-negative and strictly descending, got {args.timesteps}")
    if args.method == "trajectory" and args.num_inference_steps * args.solver_substeps > 1000:
        raise ValueError(f"--num_inference_steps {args.num_inference_steps} x --solver_substeps {args.solver_substeps} "
                         "teacher steps exceed the 1000 training timesteps")
    if args.method == "consistency" and args.num_inference_steps > args.num_grid_steps:
        raise ValueError(f"--num_inference_steps {args.num_inference_steps} exceeds the grid of "
                         f"--num_grid_steps {args.num_grid_steps}")
    if not 0.0 <= args.target_ema_decay < 1.0:
        raise ValueError(f"--target_ema_decay must lie in [0, 1), got {args.target_ema_decay}")
    # Numbers that mean nothing (NaN, inf, 0 steps) fail now, naming the flag, not at step N.
    base.check_data_arguments(args)
    base.check_optimisation_arguments(args)
    check_range(args, "huber_c", 0, low_open=True)
    check_range(args, "guidance_scale", 0)
    for name in ("num_grid_steps", "solver_substeps", "checkpoints_total_limit", "num_trajectories",
                 "trajectory_shard_size"):
        check_range(args, name, 1)
    if args.report_to == "none":
        args.report_to = None
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Teacher, student, sampler


def load_teacher(path: str) -> GescoPipeline:
    """The teacher pipeline, checked: a learned-variance GESCO pipeline folder."""
    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"--teacher {path} is not a GescoPipeline folder (no model_index.json)")
    teacher = GescoPipeline.from_pretrained(str(folder), dtype=torch.float32)
    if not isinstance(teacher.unet, SemanticUNet2DModel) or not teacher.unet.learned_variance:
        raise ValueError(f"--teacher {path}: the U-Net must be a learned-variance SemanticUNet2DModel")
    if teacher.map_encoding != "one_hot":
        raise ValueError(f"--teacher {path}: only one-hot map models can be distilled, got {teacher.map_encoding}")
    return teacher


def teacher_noise_schedule(teacher: GescoPipeline, train_fds: Optional[bool]) -> NoisyMapSchedule:
    """The noisy-map schedule the teacher was trained with (its ``semantic_config``), or the paper's."""
    stored = (teacher.config.semantic_config or {}).get("training", {}).get("noisy_maps")
    if stored is None:
        return NoisyMapSchedule(fds=bool(train_fds))
    return NoisyMapSchedule(stored["psnrs"], stored["clean_probability"], stored["probabilities"], stored["channel"],
                            stored["psnr_convention"], fds=stored["fds"] if train_fds is None else train_fds,
                            channel_kwargs=stored.get("channel_kwargs"))


def student_scheduler(teacher: GescoPipeline, method: str, num_grid_steps: int, prediction_type: str = "epsilon"):
    """The student's sampler on the teacher's noise schedule: diffusers' multistep consistency sampler on the
    distillation grid (``consistency``), SDE-DPM-Solver++ with trailing timesteps (``guidance``: its first step
    starts from pure noise at ``T - 1``, which few steps need), or unclipped DDIM with trailing timesteps
    (``trajectory``: the sampler whose jumps the student learned)."""
    cfg = teacher.scheduler.config
    if method == "trajectory":
        return student_sampler(cfg, prediction_type)
    if method == "guidance":
        return build_scheduler("sde-dpmsolver++", cfg, timestep_spacing="trailing")
    return LCMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                        beta_end=cfg.beta_end, beta_schedule=cfg.beta_schedule, prediction_type="epsilon",
                        original_inference_steps=num_grid_steps, timestep_scaling=TIMESTEP_SCALING,
                        clip_sample=False, set_alpha_to_one=True)


def student_semantic_config(args, teacher: GescoPipeline, guidance_scale: float, noise_schedule,
                            timesteps, objective=None) -> dict:
    config = dict(teacher.config.semantic_config or {})
    if args.method == "consistency":
        method = {"method": "consistency distillation (LCM skipping-step DDIM solver, pseudo-Huber)",
                  "num_grid_steps": args.num_grid_steps, "solver_substeps": args.solver_substeps,
                  "teacher_clip_x0": args.teacher_clip_x0, "huber_c": args.huber_c,
                  "target_ema_decay": args.target_ema_decay, "sigma_data": SIGMA_DATA}
    elif args.method == "trajectory":
        method = {"method": "trajectory distillation (progressive distillation in one stage; weighted x0 error "
                            "against the guided teacher's DDIM states, x0 clipped)",
                  "teacher_sampler": f"DDIM trailing, {args.num_inference_steps * args.solver_substeps} steps",
                  "solver_substeps": args.solver_substeps, "num_trajectories": args.num_trajectories,
                  "student_prediction": args.student_prediction, "weighting": args.trajectory_weighting,
                  "step_weights": [round(w, 6) for w in objective.weights],
                  "timesteps": list(timesteps), "student_init": args.student_init}
    else:
        method = {"method": "guidance distillation (Meng et al. 2023, stage one; MSE to the guided teacher)",
                  "timesteps": None if timesteps is None else list(timesteps)}
    if args.method == "guidance" and args.timesteps:
        config["timesteps"] = list(args.timesteps)  # the default schedule of the student's sampler
    if args.method == "trajectory":
        config["prediction_type"] = args.student_prediction  # what its output channels are (the pipeline checks)
    config.update(
        guidance_scale=1.0,  # folded into the weights: one map per image
        num_inference_steps=args.num_inference_steps,
        distillation={**method, "teacher_guidance_scale": guidance_scale, "noisy_maps": noise_schedule.describe()},
    )
    return config


def build_objective(args, teacher_unet, guidance_scale: float, diffusion, encoder, noise_schedule, scheduler):
    """The method's objective, and the timesteps the guidance student is trained at (``None``: all)."""
    if args.method == "trajectory":
        timesteps = student_timesteps(scheduler.config, args.num_inference_steps)
        return TrajectoryDistillationObjective(diffusion, timesteps, args.student_prediction), timesteps
    if args.method == "consistency":
        solver = SkippingStepSolver(diffusion, args.num_grid_steps, args.solver_substeps, args.teacher_clip_x0)
        return ConsistencyDistillationObjective(teacher_unet, guidance_scale, solver, diffusion, encoder,
                                                noise_schedule, args.huber_c), None
    timesteps = None
    if not args.all_timesteps:  # the stored schedule, and the sampler's own spacing at 1 .. num_inference_steps steps
        timesteps = set(args.timesteps or ())
        for steps in range(1, args.num_inference_steps + 1):
            scheduler.set_timesteps(steps)
            timesteps.update(int(t) for t in scheduler.timesteps)
        timesteps = sorted(timesteps, reverse=True)
    return GuidanceDistillationObjective(teacher_unet, guidance_scale, diffusion, encoder, noise_schedule,
                                         timesteps), timesteps


def initial_student_weights(path: Optional[str], teacher_unet: SemanticUNet2DModel) -> dict:
    """The student's starting weights: the teacher's, or those of the U-Net in ``--student_init`` (same architecture)."""
    if path is None:
        return teacher_unet.state_dict()
    if not (Path(path) / "model_index.json").is_file():
        raise ValueError(f"--student_init {path} is not a GescoPipeline folder (no model_index.json)")
    unet = GescoPipeline.from_pretrained(path, dtype=torch.float32).unet
    mismatched = sorted(k for k in ("in_channels", "out_channels", "segmap_channels", "block_out_channels",
                                    "sample_size", "learn_sigma")
                        if unet.config.get(k) != teacher_unet.config.get(k))
    if mismatched or unet.state_dict().keys() != teacher_unet.state_dict().keys():
        raise ValueError(f"--student_init {path}: its U-Net is not the teacher's architecture "
                         f"({', '.join(mismatched) or 'other layers'} differ)")
    return unet.state_dict()


def recording_autocast(precision: str, device: torch.device):
    """The context (factory) the teacher records its trajectories under."""
    if precision == "no":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def trajectory_dataloader(args, accelerator, teacher, guidance_scale, train_rows, train_transform, encoder,
                          noise_schedule, output_dir: Path, objective: TrajectoryDistillationObjective):
    """Record the teacher's trajectories that ``output_dir/trajectories`` lacks (each process its share of the
    shards; resumable), then a loader over every (trajectory, student step) jump.

    Trajectory ``j`` is training row ``order_e[j mod R]`` (``R`` rows, ``e = j div R``: the epoch order and
    augmentation of ``train.py``), its channel condition, channel noise and initial noise drawn from a generator of
    ``(seed, j)`` alone."""
    cache = TrajectoryCache(
        output_dir / "trajectories",
        {"teacher": str(Path(args.teacher).resolve()), "teacher_weights": module_fingerprint(teacher.unet),
         "guidance_scale": guidance_scale, "num_inference_steps": args.num_inference_steps,
         "solver_substeps": args.solver_substeps, "seed": args.seed, "noisy_maps": noise_schedule.describe(),
         "resolution": list(args.resolution), "rows": len(train_rows), "recording_precision": args.recording_precision},
        args.num_trajectories, args.trajectory_shard_size)
    if accelerator.is_main_process:
        with input_checks():  # trajectories of other settings: refused before any work
            cache.open()
    accelerator.wait_for_everyone()
    rows = len(train_rows)
    orders: dict[int, list[int]] = {}

    def example_for(j: int):
        epoch, position = divmod(j, rows)
        if epoch not in orders:
            sampler = EpochShuffleSampler(rows, seed=args.seed)
            sampler.set_epoch(epoch)
            orders[epoch] = list(sampler)
        train_transform.epoch = epoch
        row = train_rows[orders[epoch][position]]
        instances = row["instance"][None] if "instance" in row else None
        generator = seeded_generator(args.seed, TRAJECTORY_STREAM, j)
        maps, _ = received_maps(encoder, noise_schedule, row["label"][None], instances, generator)
        noise = torch.randn((teacher.unet.config.in_channels, *args.resolution), generator=generator)
        return maps[0].to(accelerator.device), noise.to(accelerator.device)

    started = time.monotonic()
    shards = range(accelerator.process_index, cache.num_shards, accelerator.num_processes)
    record_trajectories(cache, teacher, example_for, args.num_inference_steps, args.solver_substeps, guidance_scale,
                        shards=shards, autocast=recording_autocast(args.recording_precision, accelerator.device),
                        log=lambda message: logger.info(f"{message}, {time.monotonic() - started:.0f} s"))
    accelerator.wait_for_everyone()
    recorded = cache.load()
    if args.trajectory_weighting == "balanced":
        weights = objective.balance(recorded["states"])
        logger.info(f"balanced weights of the student's steps: {[round(w, 3) for w in weights]}")
    dataset = TrajectoryDataset(recorded["maps"], recorded["states"])
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, sampler=EpochShuffleSampler(len(dataset), seed=args.seed),
        num_workers=0, drop_last=True, generator=torch.Generator().manual_seed(args.seed))


# ----------------------------------------------------------------------------------------------------------------------
# Distillation


def main(args: argparse.Namespace) -> Path:
    start_time = time.monotonic()
    output_dir = Path(args.output_dir)
    teacher_dir = Path(args.teacher).resolve()
    with input_checks():  # the user's inputs, before any work: one-line errors
        if output_dir.resolve() == teacher_dir or teacher_dir in output_dir.resolve().parents:
            raise ValueError(f"--output_dir {output_dir} is inside the teacher folder {args.teacher}: distillation "
                             "never writes there")
    with input_checks():  # (before the output folder: --overwrite_output_dir deletes only for a valid run)
        teacher = load_teacher(args.teacher)
        num_train_timesteps = teacher.scheduler.config.num_train_timesteps
        if args.timesteps and max(args.timesteps) >= num_train_timesteps:  # the student pipeline would refuse them
            raise ValueError(f"--timesteps must lie below the teacher's {num_train_timesteps} training timesteps, got "
                             f"{max(args.timesteps)}")
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)

    # ---- data: the teacher's dataset and resolution
    with input_checks():  # the user's inputs, before any work: one-line errors
        preset: DatasetPreset = teacher.dataset_preset
        if args.dataset is not None and args.dataset != preset.name:
            raise ValueError(f"--dataset {args.dataset} differs from the teacher's dataset {preset.name!r}")
        resolution = tuple(teacher.unet.config.sample_size)
        args.dataset, args.resolution = preset.name, list(resolution)
        train_rows, layout = base.load_split(args, preset, args.train_split, args.max_train_samples)
        if args.validate_data:
            base.check_data(accelerator, train_rows, layout, preset)
    kind = layout.train_transform if args.train_transform == "auto" else args.train_transform
    train_transform = SemanticExampleTransform(build_transform(kind, resolution, args.random_flip), resolution,
                                               layout.remap_labels, args.seed)
    train_rows.set_transform(train_transform)
    train_dataloader = torch.utils.data.DataLoader(
        train_rows, batch_size=args.train_batch_size, sampler=EpochShuffleSampler(len(train_rows), seed=args.seed),
        num_workers=args.dataloader_num_workers, drop_last=True, generator=torch.Generator().manual_seed(args.seed),
    )
    with input_checks():  # the user's inputs, before any work: one-line errors
        if len(train_dataloader) == 0:
            raise ValueError(f"{len(train_rows)} training rows make no full batch of {args.train_batch_size}")

    # ---- teacher, student, target (consistency only), objective
    guidance_scale = teacher.default_guidance_scale if args.guidance_scale is None else args.guidance_scale
    teacher_unet = teacher.unet.requires_grad_(False).eval().to(accelerator.device)
    student = SemanticUNet2DModel.from_config(teacher_unet.config)
    with input_checks():
        student.load_state_dict(initial_student_weights(args.student_init, teacher_unet))
    student.train()
    # Only now, with the inputs checked, is anything written: an earlier run in output_dir is continued or deleted
    # only when asked.
    with input_checks():
        check_output_dir(output_dir, args.resume_from_checkpoint, args.overwrite_output_dir,
                         is_main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    target = None
    if args.method == "consistency":
        target = copy.deepcopy(student).requires_grad_(False).eval().to(accelerator.device)
    diffusion = GaussianDiffusion.from_scheduler(teacher.scheduler)
    noise_schedule = teacher_noise_schedule(teacher, args.train_fds)
    scheduler = student_scheduler(teacher, args.method, args.num_grid_steps, args.student_prediction)
    encoder = SemanticEncoder.from_preset(preset)
    objective, timesteps = build_objective(args, teacher_unet, guidance_scale, diffusion, encoder, noise_schedule,
                                           scheduler)
    if args.method == "trajectory":  # the data are the teacher's recorded trajectories
        train_dataloader = trajectory_dataloader(args, accelerator, teacher, guidance_scale, train_rows,
                                                 train_transform, encoder, noise_schedule, output_dir, objective)
    optimizer = base.build_optimizer(student.parameters(), args)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=(args.max_train_steps or 0) * accelerator.num_processes)
    student, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(student, optimizer, train_dataloader,
                                                                             lr_scheduler)
    models = {"student": student, **({"target": target} if target is not None else {})}
    state = {"models": models, "optimizers": {"optimizer": optimizer},
             "schedulers": {"lr_scheduler": lr_scheduler}}
    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=base.tracker_config(args))

    # ---- resume
    global_step = 0
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if checkpoint is not None:
        logger.info(f"resuming from {checkpoint}")
        load_checkpoint(accelerator, checkpoint, **state)
        global_step = int(checkpoint.name.split("-")[-1])
        if accelerator.is_main_process:
            base.truncate_log(output_dir / TRAIN_LOG, global_step)
    first_epoch, resume_batches = divmod(global_step, steps_per_epoch)
    resume_batches *= args.gradient_accumulation_steps
    logger.info(f"***** {args.method} distillation: teacher {args.teacher} (guidance {guidance_scale}), "
                f"{len(train_rows)} rows, batch {args.train_batch_size} x {accelerator.num_processes} processes, "
                f"student sampler {type(scheduler).__name__} ({args.num_inference_steps} steps), timesteps "
                f"{timesteps or 'all'}, max steps {args.max_train_steps}, budget {args.max_train_minutes} min, "
                f"noisy maps {noise_schedule.describe()}")

    # ---- loop
    log_path = output_dir / TRAIN_LOG
    last_saved = global_step if checkpoint is not None else None
    done = args.max_train_steps is not None and global_step >= args.max_train_steps
    epoch = first_epoch
    losses: list[torch.Tensor] = []
    loop_start = time.monotonic()  # the time budget is the loop's (trajectory recording excluded)
    while not done:
        student.train()
        train_dataloader.set_epoch(epoch)
        train_transform.epoch = epoch  # (unused by recorded trajectories)
        skip = resume_batches if epoch == first_epoch else 0
        loader = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        for batch_index, batch in enumerate(loader, start=skip):
            micro = batch_index % args.gradient_accumulation_steps
            generator = seeded_generator(args.seed, NOISE_STREAM, accelerator.process_index, global_step, micro)
            with accelerator.accumulate(student):
                networks = (student, target) if target is not None else (student,)
                with accelerator.autocast():  # teacher and target too, not only the prepared student
                    if args.method == "trajectory":
                        out = objective(student, batch["maps"], batch["start"], batch["target"], batch["segment"])
                    else:
                        out = objective(*networks, batch["pixel_values"], batch["label"], batch.get("instance"),
                                        generator)
                accelerator.backward(out["loss"])
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(student.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(out["loss"].detach())
            if not accelerator.sync_gradients:
                continue

            if target is not None:
                update_target(target, accelerator.unwrap_model(student), args.target_ema_decay)
            global_step += 1
            loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
            losses = []
            record = {"step": global_step, "epoch": epoch, "loss": loss, "psnr": out.get("psnr"),
                      "lr": lr_scheduler.get_last_lr()[0], "elapsed_s": round(time.monotonic() - start_time, 3)}
            if accelerator.is_main_process:
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            accelerator.log({"loss": loss, "lr": record["lr"]}, step=global_step)

            if global_step % args.checkpointing_steps == 0:
                path = save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, **state)
                last_saved = global_step
                logger.info(f"saved state to {path}")
            done = args.max_train_steps is not None and global_step >= args.max_train_steps
            if args.max_train_minutes is not None and not done:
                over = torch.tensor([int(time.monotonic() - loop_start >= 60 * args.max_train_minutes)],
                                    device=accelerator.device)
                done = bool(broadcast(over).item())
                if done:
                    logger.info(f"time budget of {args.max_train_minutes} min reached at step {global_step}")
            if done:
                break
        epoch += 1

    # ---- final state and the student pipeline (consistency: the target network's weights)
    if last_saved != global_step:
        save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, **state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unet = target if target is not None else accelerator.unwrap_model(student)
        pipeline = GescoPipeline(unet=unet, scheduler=scheduler,
                                 semantic_config=student_semantic_config(args, teacher, guidance_scale,
                                                                         noise_schedule, timesteps, objective))
        pipeline.save_pretrained(str(output_dir))
        logger.info(f"saved the student pipeline to {output_dir} after {global_step} steps, "
                    f"{time.monotonic() - start_time:.1f} s")
    accelerator.end_training()
    return output_dir


if __name__ == "__main__":
    sys.exit(run_script("distill.py", parse_args, main))
