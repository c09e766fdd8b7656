"""Library side of ``training/train.py``: the noisy-map schedule, CFG dropout, the training objective, EMA,
atomic checkpoints, config files and validation grids."""

from .checkpoints import (
    CHECKPOINT_PREFIX,
    RUN_FILES,
    check_output_dir,
    checkpoint_step,
    commit_directory,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_state,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    temporary_checkpoint_dir,
    write_state,
)
from .config import (
    OneLineArgumentParser,
    check_range,
    config_to_argv,
    input_checks,
    load_config_file,
    parse_args_with_config,
    run_script,
)
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
    "RUN_FILES",
    "ConstantDecayEMAModel",
    "NoisyMapSchedule",
    "OneLineArgumentParser",
    "SemanticDiffusionObjective",
    "build_ema",
    "check_range",
    "check_output_dir",
    "checkpoint_step",
    "colorize_labels",
    "commit_directory",
    "config_to_argv",
    "drop_conditioning",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config_file",
    "parse_args_with_config",
    "read_state",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "input_checks",
    "run_script",
    "save_checkpoint",
    "temporary_checkpoint_dir",
    "validation_grid",
    "write_state",
]
