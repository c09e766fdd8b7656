"""Library side of ``training/train.py``: the noisy-map schedule, CFG dropout, the training objective, EMA,
atomic checkpoints, config files and validation grids."""

from .checkpoints import (
    CHECKPOINT_PREFIX,
    checkpoint_step,
    commit_directory,
    latest_checkpoint,
    list_checkpoints,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    temporary_checkpoint_dir,
)
from .config import config_to_argv, load_config_file, parse_args_with_config
from .ema import EMA_SCHEDULES, ConstantDecayEMAModel, build_ema
from .noise_schedule import (
    OFFICIAL_CLEAN_PROBABILITY,
    OFFICIAL_TRAINING_PSNRS,
    PAPER_CLEAN_PROBABILITY,
    PAPER_TRAINING_PSNRS,
    NoisyMapSchedule,
)
from .objective import SemanticDiffusionObjective, drop_conditioning
from .validation import colorize_labels, validation_grid

__all__ = [
    "CHECKPOINT_PREFIX",
    "EMA_SCHEDULES",
    "OFFICIAL_CLEAN_PROBABILITY",
    "OFFICIAL_TRAINING_PSNRS",
    "PAPER_CLEAN_PROBABILITY",
    "PAPER_TRAINING_PSNRS",
    "ConstantDecayEMAModel",
    "NoisyMapSchedule",
    "SemanticDiffusionObjective",
    "build_ema",
    "checkpoint_step",
    "colorize_labels",
    "commit_directory",
    "config_to_argv",
    "drop_conditioning",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config_file",
    "parse_args_with_config",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
    "temporary_checkpoint_dir",
    "validation_grid",
]
