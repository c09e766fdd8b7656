"""Fault injection (issue #14): every ``gesco`` command, and the training scripts' argument parsing, given hostile
inputs.

The faults: a missing file, an empty file, a truncated one (a PNG, a checkpoint, a JSON file cut in half), the wrong
type (a text file named .png/.pt/.safetensors, a folder where a file is expected and a file where a folder is),
NaN/inf/0/-1/huge numbers, huge sizes, an unwritable output folder and an output equal to (or holding) the input.

Each case must end with exit status 1 (2: a usage error found by argparse) and exactly one line on stderr,
``gesco <command>: error: ...`` (``<script>: error: ...`` for the training scripts), without a traceback, naming the
file or the option. Nothing may be touched: every file and folder of the inputs keeps its bytes, mode and mtime, and no
output folder or partial file appears. And the error must come before the expensive work: tripwires stand where a
model (or a checkpoint, or the map-level data) loads, where images are generated or scored, where the demo server
starts, where the Hub is called and where training or an export runs. Only the cases marked ``late`` (the fault is
found by loading: a model path, more steps than the model's schedule) may load the model; none may generate.

Inputs are tiny and made once (a 448 kB untrained pipeline, 32x40 maps); the whole module runs in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

# Everything heavy is imported now, at collection: what an import prints cannot count as an error line of a case.
import gesco_diffusers.chain as chain
import gesco_diffusers.convert.checkpoint as convert_checkpoint
import gesco_diffusers.demo.core  # noqa: F401
import gesco_diffusers.evaluation.evaluator  # noqa: F401
import gesco_diffusers.experiments.map_level as map_level
import gesco_diffusers.hub as hub
from gesco_diffusers.cli import SUBCOMMANDS, main
from gesco_diffusers.evaluation.scoring import ScoringNetworks
from gesco_diffusers.pipelines import GescoPipeline
from gesco_diffusers.training import run_script

from _scripts import REPO, load_script
from fixture_data import CAMVID

SCRIPTS = {"train.py": "train", "distill.py": "distill", "train_baseline.py": "train_baseline",
           "export_pipeline.py": "export_pipeline"}

#: The arguments every case of a command starts from (valid: see test_the_base_arguments_reach_the_expensive_work);
#: a case's own arguments come after them (argparse: the last value of an option wins). {W}: the folder of test
#: files (``world``), {OUT}: an output path that must still be absent afterwards.
BASE = {
    "transmit": ["--model", "{W}/pipe", "--map", "{W}/map.png", "--output", "{OUT}", "--size", "32", "40",
                 "--steps", "1", "--device", "cpu"],
    "generate": ["--model", "{W}/pipe", "--steps", "1", "--device", "cpu", "--quiet"],
    "evaluate": ["--model", "{W}/pipe", "--data-dir", "{W}/camvid", "--out", "{OUT}", "--limit", "1", "--psnrs", "10",
                 "--steps", "1", "--device", "cpu", "--quiet", "--image-codec", "none", "--no-rate-distortion"],
    "convert": [],
    "publish": [],
    "map-level": ["--data-root", "{W}/mldata", "--out", "{OUT}", "--quick", "--channels", "awgn", "--psnrs", "10"],
    "demo": [],
    "train.py": ["--dataset", "camvid", "--data_dir", "{W}/camvid", "--max_train_steps", "1", "--output_dir", "{OUT}"],
    "distill.py": ["--teacher", "{W}/pipe", "--data_dir", "{W}/camvid", "--max_train_steps", "1",
                   "--output_dir", "{OUT}"],
    "train_baseline.py": ["denoiser", "--data_dir", "{W}/camvid", "--output_dir", "{OUT}"],
    "export_pipeline.py": [],
}
#: Positional arguments of the commands whose BASE has none (a case names its own).
GOOD = {
    "generate": ["{W}/maps", "{OUT}"],
    "convert": ["{W}/ck.safetensors", "{OUT}"],
    "publish": ["{W}/pipe", "org/name", "--dry-run"],
    "export_pipeline.py": ["{W}/pipe", "{OUT}"],
}


@dataclass(frozen=True)
class Case:
    command: str  # a gesco subcommand or a training script (SCRIPTS)
    args: tuple[str, ...]
    message: str  # in the error line: the file or the option, and what is wrong ({W}: the world folder)
    status: int = 1  # 2: a usage error (argparse)
    late: bool = False  # found by loading the model (or the checkpoint, or the map-level data): it may load, not more
    readonly: bool = False  # needs a folder this process cannot write to


def case(command: str, name: str, args: list[str], message: str, **kwargs) -> pytest.param:
    return pytest.param(Case(command, tuple(args), message, **kwargs), id=f"{command}-{name}")


CASES = [
    # ---- gesco transmit: one map through the chain
    case("transmit", "map-missing", ["--map", "{W}/nope.png"], "--map not found: {W}/nope.png"),
    case("transmit", "map-empty", ["--map", "{W}/empty.png"], "{W}/empty.png is not a readable image file"),
    case("transmit", "map-truncated", ["--map", "{W}/trunc.png"], "{W}/trunc.png cannot be decoded (truncated"),
    case("transmit", "map-text-named-png", ["--map", "{W}/text.png"], "{W}/text.png is not a readable image file"),
    case("transmit", "map-is-a-folder", ["--map", "{W}/folder.png"], "--map {W}/folder.png is a folder; give one label map PNG"),
    case("transmit", "map-is-rgb", ["--map", "{W}/rgb.png"], "{W}/rgb.png: a label map must be a single-channel PNG"),
    case("transmit", "map-foreign-ids", ["--map", "{W}/ids200.png"], "ids [200] are not camvid classes", late=True),
    case("transmit", "photo-missing", ["--photo", "{W}/nope.png"], "--photo not found: {W}/nope.png"),
    case("transmit", "photo-truncated", ["--photo", "{W}/trunc.png"], "--photo {W}/trunc.png cannot be decoded"),
    case("transmit", "photo-is-a-folder", ["--photo", "{W}/folder.png"], "--photo {W}/folder.png is a folder; give the photo's image file"),
    case("transmit", "model-missing", ["--model", "{W}/nope"], "{W}/nope", late=True),
    case("transmit", "model-is-a-file", ["--model", "{W}/map.png"], "--model '{W}/map.png' is not a pipeline folder",
         late=True),
    case("transmit", "model-empty-folder", ["--model", "{W}/empty_maps"], "has no model_index.json", late=True),
    case("transmit", "model-index-truncated", ["--model", "{W}/bad_index_pipe"], "{W}/bad_index_pipe", late=True),
    case("transmit", "output-is-a-file", ["--output", "{W}/file"], "--output folder '{W}/file' exists and is not a"),
    case("transmit", "output-under-a-file", ["--output", "{W}/file/sub"], "'{W}/file' is a file"),
    case("transmit", "output-is-the-map", ["--output", "{W}/map.png"], "'{W}/map.png' exists and is not a folder"),
    case("transmit", "output-unwritable", ["--output", "{W}/ro/out"], "'{W}/ro/out' is not writable", readonly=True),
    case("transmit", "psnr-nan", ["--psnr", "nan"], "--psnr must be a number of dB (inf: noiseless), got nan"),
    case("transmit", "psnr-minus-inf", ["--psnr=-inf"], "--psnr must be a number of dB (inf: noiseless), got -inf"),
    case("transmit", "ebn0-nan", ["--channel", "digital", "--ebn0", "nan"], "--ebn0 must be a number of dB"),
    case("transmit", "rician-k-nan", ["--channel", "digital", "--rician-k", "nan"], "--rician-k must be >= 0"),
    case("transmit", "guidance-inf", ["--guidance", "inf"], "--guidance must be a finite number >= 0"),
    case("transmit", "guidance-nan", ["--guidance", "nan"], "--guidance must be a finite number >= 0"),
    case("transmit", "guidance-negative", ["--guidance", "-1"], "--guidance must be a finite number >= 0"),
    case("transmit", "steps-0", ["--steps", "0"], "--steps must be a positive integer, got 0"),
    case("transmit", "steps-minus-1", ["--steps", "-1"], "--steps must be a positive integer, got -1"),
    case("transmit", "steps-huge", ["--steps", "10000000"], "num_inference_steps=10000000 exceeds the scheduler's 1000",
         late=True),
    case("transmit", "steps-not-a-number", ["--steps", "many"], "argument --steps: invalid int value: 'many'",
         status=2),
    case("transmit", "size-huge", ["--size", "100000", "100000"], "--size must be between 1 and 4096 pixels per side"),
    case("transmit", "size-0", ["--size", "0", "40"], "--size must be between 1 and 4096 pixels per side"),
    case("transmit", "size-indivisible", ["--size", "31", "40"],
         "not divisible by the network's downsampling", late=True),
    case("transmit", "seed-negative", ["--seed", "-1"], "--seed must be an integer in 0..2**63-1, got -1"),
    # ---- gesco generate: a folder of maps in, a folder of images out
    case("generate", "maps-missing", ["{W}/nope", "{OUT}"], "map folder not found: {W}/nope"),
    case("generate", "maps-is-a-file", ["{W}/map.png", "{OUT}"], "map folder {W}/map.png is a file"),
    case("generate", "maps-empty-folder", ["{W}/empty_maps", "{OUT}"], "{W}/empty_maps holds no .png label maps"),
    case("generate", "map-truncated", ["{W}/trunc_maps", "{OUT}"], "{W}/trunc_maps/a.png cannot be decoded (truncated"),
    case("generate", "map-text-named-png", ["{W}/text_maps", "{OUT}"], "{W}/text_maps/a.png is not a readable image"),
    case("generate", "map-is-a-folder", ["{W}/dir_maps", "{OUT}"], "label map {W}/dir_maps/a.png is a folder"),
    case("generate", "map-foreign-ids", ["{W}/ids_maps", "{OUT}"],
         "a.png: ids [200] are not camvid classes", late=True),
    case("generate", "out-is-a-file", ["{W}/maps", "{W}/file"], "output folder '{W}/file' exists and is not a folder"),
    case("generate", "out-is-the-map-folder", ["{W}/maps", "{W}/maps"], "the output folder {W}/maps is the map folder"),
    case("generate", "out-unwritable", ["{W}/maps", "{W}/ro/out"], "'{W}/ro/out' is not writable", readonly=True),
    case("generate", "psnr-nan", [*GOOD["generate"], "--psnr", "nan"],
         "channel 'awgn' must be a number of dB, got nan"),
    case("generate", "guidance-inf", [*GOOD["generate"], "--guidance", "inf"],
         "guidance_scale must be a finite number"),
    case("generate", "steps-0", [*GOOD["generate"], "--steps", "0"], "num_inference_steps must be an integer >= 1"),
    case("generate", "steps-huge", [*GOOD["generate"], "--steps", "10000000"], "num_inference_steps=10000000 exceeds",
         late=True),
    case("generate", "batch-size-0", [*GOOD["generate"], "--batch-size", "0"], "batch_size must be an integer >= 1"),
    case("generate", "seed-negative", [*GOOD["generate"], "--seed", "-1"], "seed must be an integer >= 0, got -1"),
    case("generate", "model-missing", [*GOOD["generate"], "--model", "{W}/nope"], "{W}/nope", late=True),
    # ---- gesco evaluate: generate and score over channel conditions
    case("evaluate", "data-dir-missing", ["--data-dir", "{W}/nope"], "dataset folder not found: {W}/nope", late=True),
    case("evaluate", "data-dir-is-a-file", ["--data-dir", "{W}/map.png"], "dataset folder not found: {W}/map.png",
         late=True),
    case("evaluate", "out-is-a-file", ["--out", "{W}/file"], "output folder '{W}/file' exists and is not a folder"),
    case("evaluate", "out-is-the-data", ["--out", "{W}/camvid"], "is inside the dataset folder '{W}/camvid'"),
    case("evaluate", "out-inside-the-data", ["--out", "{W}/camvid/val"], "is inside the dataset folder '{W}/camvid'"),
    case("evaluate", "out-unwritable", ["--out", "{W}/ro/out"], "'{W}/ro/out' is not writable", readonly=True),
    case("evaluate", "psnrs-nan", ["--psnrs", "nan"], "channel 'awgn' must be a number of dB, got nan"),
    case("evaluate", "table-psnr-nan", ["--table-psnr", "nan"], "must be a number of dB, got nan", late=True),
    case("evaluate", "guidance-inf", ["--guidance", "inf"], "guidance_scale must be a finite number >= 0", late=True),
    case("evaluate", "steps-0", ["--steps", "0"], "num_inference_steps must be an integer >= 1, got 0"),
    case("evaluate", "steps-huge", ["--steps", "10000000"], "num_inference_steps=10000000 exceeds", late=True),
    case("evaluate", "size-huge", ["--size", "100000", "100000"], "size must be between 1 and 4096 pixels per side"),
    case("evaluate", "limit-0", ["--limit", "0"], "limit must be a positive integer, got 0", late=True),
    case("evaluate", "batch-size-0", ["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    case("evaluate", "model-missing", ["--model", "{W}/nope"], "{W}/nope", late=True),
    # ---- gesco convert: an official checkpoint to a pipeline folder
    case("convert", "checkpoint-missing", ["{W}/nope.pt", "{OUT}"], "checkpoint not found: {W}/nope.pt",
         late=True),
    case("convert", "checkpoint-empty", ["{W}/empty.pt", "{OUT}"], "checkpoint 'empty.pt' is not a readable .pt",
         late=True),
    case("convert", "pt-truncated", ["{W}/trunc.pt", "{OUT}"], "checkpoint 'trunc.pt' is not a readable .pt",
         late=True),
    case("convert", "safetensors-truncated", ["{W}/trunc.safetensors", "{OUT}"],
         "checkpoint 'trunc.safetensors' is not a readable .safetensors", late=True),
    case("convert", "text-named-pt", ["{W}/text.pt", "{OUT}"], "checkpoint 'text.pt' is not a readable", late=True),
    case("convert", "text-named-safetensors", ["{W}/text.safetensors", "{OUT}"],
         "checkpoint 'text.safetensors' is not a readable .safetensors", late=True),
    case("convert", "checkpoint-is-a-folder", ["{W}/folder.pt", "{OUT}"], "checkpoint {W}/folder.pt is a folder; give the checkpoint file",
         late=True),
    case("convert", "checkpoint-is-a-png", ["{W}/map.png", "{OUT}"], "checkpoint 'map.png': expected one of",
         late=True),
    case("convert", "output-is-a-file", ["{W}/ck.pt", "{W}/file"], "output '{W}/file' exists and is not a folder"),
    case("convert", "output-under-a-file", ["{W}/ck.pt", "{W}/file/sub"], "'{W}/file' exists and is not a folder"),
    case("convert", "output-is-the-checkpoint", ["{W}/ck.pt", "{W}/ck.pt"],
         "output folder '{W}/ck.pt' contains the input checkpoint"),
    case("convert", "output-holds-the-checkpoint", ["{W}/ck.pt", "{W}", "--overwrite"],
         "output folder '{W}' contains the input checkpoint '{W}/ck.pt'"),
    case("convert", "output-unwritable", ["{W}/ck.pt", "{W}/ro/out"], "is not writable", readonly=True),
    case("convert", "guidance-nan", [*GOOD["convert"], "--guidance-scale", "nan"],
         "guidance_scale / --guidance-scale must be a finite number > 0, got nan"),
    case("convert", "guidance-inf", [*GOOD["convert"], "--guidance-scale", "inf"],
         "guidance_scale / --guidance-scale must be a finite number > 0, got inf"),
    case("convert", "sample-size-huge", [*GOOD["convert"], "--sample-size", "100000", "100000"],
         "sample_size / --sample-size must be between 1 and 4096 pixels per side"),
    case("convert", "sample-size-negative", [*GOOD["convert"], "--sample-size", "-8", "0"],
         "sample_size / --sample-size must be between 1 and 4096 pixels per side"),
    case("convert", "head-channels-0", [*GOOD["convert"], "--num-head-channels", "0"],
         "num_head_channels / --num-head-channels must be a positive integer, got 0"),
    case("convert", "classes-missing", [*GOOD["convert"], "--classes", "{W}/nope.json"],
         "classes file not found: {W}/nope.json"),
    case("convert", "classes-truncated", [*GOOD["convert"], "--classes", "{W}/trunc.json"],
         "{W}/trunc.json: not valid JSON"),
    case("convert", "classes-empty", [*GOOD["convert"], "--classes", "{W}/empty.json"],
         "{W}/empty.json: not valid JSON"),
    case("convert", "classes-is-a-folder", [*GOOD["convert"], "--classes", "{W}/folder.json"],
         "classes file {W}/folder.json is a folder"),
    # ---- gesco publish: a pipeline folder and its card to the Hub
    case("publish", "folder-missing", ["{W}/nope", "org/name"], "'{W}/nope' is not a pipeline folder"),
    case("publish", "folder-is-a-file", ["{W}/map.png", "org/name"], "'{W}/map.png' is not a pipeline folder"),
    case("publish", "index-truncated", ["{W}/bad_index_pipe", "org/name", "--card-kind", "camvid", "--dry-run"],
         "pipeline file {W}/bad_index_pipe/model_index.json is not valid JSON"),
    case("publish", "no-card", ["{W}/pipe", "org/name"], "'{W}/pipe' has no model card (README.md)"),
    case("publish", "kpis-missing", [*GOOD["publish"], "--kpis", "{W}/nope.json"], "--kpis not found: {W}/nope.json"),
    case("publish", "kpis-truncated", [*GOOD["publish"], "--kpis", "{W}/trunc.json"],
         "--kpis {W}/trunc.json is not valid JSON"),
    case("publish", "kpis-empty", [*GOOD["publish"], "--kpis", "{W}/empty.json"],
         "--kpis {W}/empty.json is not valid JSON"),
    case("publish", "kpis-binary", [*GOOD["publish"], "--kpis", "{W}/map.png"], "--kpis {W}/map.png is not valid JSON"),
    case("publish", "kpis-is-a-folder", [*GOOD["publish"], "--kpis", "{W}/maps"], "--kpis {W}/maps is a folder; give a JSON file"),
    case("publish", "kpis-nan", [*GOOD["publish"], "--kpis", "{W}/nan_kpis.json"],
         "--kpis {W}/nan_kpis.json is not valid JSON (NaN is not a JSON number)"),
    case("publish", "training-args-truncated", [*GOOD["publish"], "--training-args", "{W}/trunc.json"],
         "--training-args {W}/trunc.json is not valid JSON"),
    case("publish", "training-args-nan", [*GOOD["publish"], "--training-args", "{W}/nan_kpis.json"],
         "--training-args {W}/nan_kpis.json is not valid JSON (NaN is not a JSON number)"),
    case("publish", "repo-id-invalid", ["{W}/pipe", "not a repo", "--card-kind", "camvid"], "Repo id must"),
    case("publish", "card-into-unwritable", ["{W}/ro_pipe", "org/name", "--card-kind", "camvid"],
         "the pipeline folder '{W}/ro_pipe' is not writable", readonly=True),
    # ---- gesco map-level: the channel experiment on maps, no model
    case("map-level", "data-root-missing", ["--data-root", "{W}/nope"], "no label maps found under {W}/nope/camvid",
         late=True),
    case("map-level", "data-root-is-a-file", ["--data-root", "{W}/map.png"], "--data-root '{W}/map.png' is a file"),
    case("map-level", "data-root-empty", ["--data-root", "{W}/empty_maps"], "no label maps found under", late=True),
    case("map-level", "map-truncated", ["--data-root", "{W}/bad_mldata"],
         "{W}/bad_mldata/camvid/val/labels/a.png cannot be decoded (truncated", late=True),
    case("map-level", "out-is-a-file", ["--out", "{W}/file"], "'{W}/file/camvid' cannot be created: '{W}/file' is a"),
    case("map-level", "out-is-the-data-root", ["--out", "{W}/mldata"],
         "output folder '{W}/mldata/camvid' is inside the dataset folder '{W}/mldata/camvid'"),
    case("map-level", "out-unwritable", ["--out", "{W}/ro/out"], "'{W}/ro/out/camvid' is not writable", readonly=True),
    case("map-level", "psnrs-nan", ["--psnrs", "nan"], "psnr_db must be a finite number of dB or +inf"),
    case("map-level", "psnrs-minus-inf", ["--psnrs", "-inf"], "argument --psnrs: expected at least one", status=2),
    case("map-level", "ebn0s-nan", ["--channels", "digital-awgn", "--ebn0s", "nan"], "ebn0_db must not contain NaN"),
    case("map-level", "limit-0", ["--limit", "0"], "limit must be a positive number of maps, got 0"),
    case("map-level", "batch-size-0", ["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    case("map-level", "seed-negative", ["--seed", "-1"], "seed must be an integer in 0..2**63-1, got -1"),
    # ---- gesco demo: the Gradio app (must never start here)
    case("demo", "port-0", ["--port", "0"], "--port must be in 1..65535, got 0"),
    case("demo", "port-huge", ["--port", "70000"], "--port must be in 1..65535, got 70000"),
    case("demo", "port-not-a-number", ["--port", "http"], "argument --port: invalid int value: 'http'", status=2),
    case("demo", "model-missing", ["--model", "{W}/nope"], "--model '{W}/nope' is neither a shipped model"),
    case("demo", "model-is-a-file", ["--model", "{W}/map.png"], "--model '{W}/map.png' is neither a shipped model"),
    case("demo", "model-empty-folder", ["--model", "{W}/empty_maps"], "--model '{W}/empty_maps' has no model_index"),
    case("demo", "model-index-truncated", ["--model", "{W}/bad_index_pipe"], "{W}/bad_index_pipe"),
    case("demo", "space-into-a-file", ["--write-space", "{W}/map.png"], "--write-space folder '{W}/map.png' exists and "
         "is not a folder"),
    case("demo", "space-unwritable", ["--write-space", "{W}/ro/space"], "'{W}/ro/space' is not writable", readonly=True),
    # ---- training/train.py
    case("train.py", "lr-nan", ["--learning_rate", "nan"], "--learning_rate must be a finite number > 0, got nan"),
    case("train.py", "lr-negative", ["--learning_rate=-0.0001"], "--learning_rate must be a finite number > 0"),
    case("train.py", "cfg-drop-2", ["--cfg_drop_prob", "2"], "--cfg_drop_prob must be a finite number >= 0 and <= 1"),
    case("train.py", "ema-decay-nan", ["--ema_decay", "nan"], "--ema_decay must be a finite number >= 0 and <= 1"),
    case("train.py", "guidance-inf", ["--guidance_scale", "inf"], "--guidance_scale must be a finite number >= 0"),
    case("train.py", "noise-psnrs-nan", ["--noise_psnrs", "10", "nan"], "--noise_psnrs must be a finite number"),
    case("train.py", "validation-psnr-inf", ["--validation_psnr", "inf"], "--validation_psnr must be a finite number"),
    case("train.py", "steps-0", ["--max_train_steps", "0"], "--max_train_steps must be an integer >= 1, got 0"),
    case("train.py", "steps-minus-1", ["--max_train_steps", "-1"], "--max_train_steps must be an integer >= 1, got -1"),
    case("train.py", "minutes-nan", ["--max_train_minutes", "nan"], "--max_train_minutes must be a finite number > 0"),
    case("train.py", "validation-steps-huge", ["--validation_inference_steps", "10000000"],
         "--validation_inference_steps 10000000 exceeds the --num_train_timesteps 1000"),
    case("train.py", "batch-0", ["--train_batch_size", "0"], "--train_batch_size must be >= 1, got 0"),
    case("train.py", "resolution-huge", ["--resolution", "100000", "100000"], "--resolution must be between 1 and"),
    case("train.py", "resolution-0", ["--resolution", "0", "8"], "--resolution must be between 1 and 4096"),
    case("train.py", "seed-negative", ["--seed", "-1"], "--seed must be an integer >= 0 and <= 4294967295, got -1"),
    case("train.py", "steps-not-a-number", ["--max_train_steps", "all"], "argument --max_train_steps: invalid int",
         status=2),
    case("train.py", "config-missing", ["--config", "{W}/nope.yaml"], "config file not found: {W}/nope.yaml"),
    case("train.py", "config-truncated", ["--config", "{W}/trunc.json"],
         "config file {W}/trunc.json is not valid JSON"),
    case("train.py", "config-empty-json", ["--config", "{W}/empty.json"],
         "config file {W}/empty.json is not valid JSON"),
    case("train.py", "config-binary", ["--config", "{W}/binary.yaml"],
         "config file {W}/binary.yaml is not a text file"),
    case("train.py", "config-is-a-folder", ["--config", "{W}/folder.json"], "config file {W}/folder.json is a folder"),
    # ---- training/distill.py
    case("distill.py", "lr-nan", ["--learning_rate", "nan"], "--learning_rate must be a finite number > 0, got nan"),
    case("distill.py", "huber-c-inf", ["--huber_c", "inf"], "--huber_c must be a finite number > 0, got inf"),
    case("distill.py", "guidance-nan", ["--guidance_scale", "nan"], "--guidance_scale must be a finite number >= 0"),
    case("distill.py", "substeps-0", ["--solver_substeps", "0"], "--solver_substeps must be an integer >= 1, got 0"),
    case("distill.py", "minutes-inf", ["--max_train_minutes", "inf"], "--max_train_minutes must be a finite number"),
    case("distill.py", "steps-huge", ["--num_inference_steps", "10000000"],
         "--num_inference_steps 10000000 exceeds the grid of --num_grid_steps 50"),
    case("distill.py", "ema-decay-2", ["--target_ema_decay", "2"], "--target_ema_decay must lie in [0, 1), got 2.0"),
    case("distill.py", "config-truncated", ["--config", "{W}/trunc.json"], "config file {W}/trunc.json is not valid"),
    # ---- training/train_baseline.py
    case("train_baseline.py", "lr-nan", ["--learning_rate", "nan"], "--learning_rate must be a finite number > 0",
         status=2),
    case("train_baseline.py", "bandwidth-nan", ["--bandwidth_ratio", "nan"], "--bandwidth_ratio must be a finite",
         status=2),
    case("train_baseline.py", "psnrs-nan", ["--psnrs", "nan"], "--psnrs must be finite dB values", status=2),
    case("train_baseline.py", "clean-probability-nan", ["--clean_probability", "nan"],
         "--clean_probability must be in [0, 1], got nan", status=2),
    case("train_baseline.py", "steps-0", ["--max_train_steps", "0"], "--max_train_steps must be >= 1", status=2),
    case("train_baseline.py", "resolution-huge", ["--resolution", "100000", "100000"],
         "--resolution must be between 1 and 4096 pixels per side", status=2),
    case("train_baseline.py", "resolution-0", ["--resolution", "0", "0"], "--resolution must be between 1 and 4096",
         status=2),
    case("train_baseline.py", "seed-negative", ["--seed", "-1"], "--seed must be an integer >= 0", status=2),
    # ---- training/export_pipeline.py
    case("export_pipeline.py", "source-missing", ["{W}/nope", "{OUT}"], "{W}/nope is not a pipeline folder"),
    case("export_pipeline.py", "source-is-a-file", ["{W}/map.png", "{OUT}"], "{W}/map.png is not a pipeline folder"),
    case("export_pipeline.py", "source-empty-folder", ["{W}/empty_maps", "{OUT}"], "{W}/empty_maps is not a pipeline"),
    case("export_pipeline.py", "destination-is-the-source", ["{W}/pipe", "{W}/pipe"],
         "destination {W}/pipe holds the source {W}/pipe"),
    case("export_pipeline.py", "destination-holds-the-source", ["{W}/pipe", "{W}"],
         "destination {W} holds the source {W}/pipe"),
    case("export_pipeline.py", "destination-is-a-file", ["{W}/pipe", "{W}/file"],
         "destination {W}/file exists and is not a folder"),
    case("export_pipeline.py", "destination-under-a-file", ["{W}/pipe", "{W}/file/sub"],
         "parent folder '{W}/file' exists and is not a folder"),
    case("export_pipeline.py", "destination-unwritable", ["{W}/pipe", "{W}/ro/out"], "'{W}/ro' is not writable",
         readonly=True),
    case("export_pipeline.py", "kpis-truncated", [*GOOD["export_pipeline.py"], "--kpis", "{W}/trunc.json"],
         "--kpis {W}/trunc.json is not valid JSON"),
    case("export_pipeline.py", "kpis-nan", [*GOOD["export_pipeline.py"], "--kpis", "{W}/nan_kpis.json"],
         "--kpis {W}/nan_kpis.json is not valid JSON (NaN is not a JSON number)"),
    case("export_pipeline.py", "training-args-folder", [*GOOD["export_pipeline.py"], "--training-args", "{W}/maps"],
         "--training-args {W}/maps is a folder; give a JSON file"),
    case("export_pipeline.py", "description-missing", [*GOOD["export_pipeline.py"], "--description", "{W}/nope.md"],
         "--description {W}/nope.md: not found"),
    case("export_pipeline.py", "description-binary", [*GOOD["export_pipeline.py"], "--description", "{W}/map.png"],
         "--description {W}/map.png is not a text file"),
]


# ---------------------------------------------------------------------------------------------------------------------
# The test files, made once


#: A 32x40 CamVid map of 8x8 blocks whose neighbouring ids are unrelated (a label map, not a photo's ramps).
BLOCKS = np.array([[0, 3, 7, 1, 9], [5, 10, 2, 8, 0], [4, 6, 1, 3, 7], [9, 2, 5, 0, 10]])


def _png(path: Path, ids: np.ndarray, mode: str = "L") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(ids.astype(np.uint8), mode=mode).save(path)
    return path.read_bytes()


def _half(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    labels = np.kron(BLOCKS, np.ones((8, 8), dtype=np.int64))
    png = _png(w / "map.png", labels)
    _half(w / "trunc.png", png)
    (w / "empty.png").write_bytes(b"")
    (w / "text.png").write_text("not a picture\n")
    _png(w / "rgb.png", np.stack([labels] * 3, axis=-1), mode="RGB")
    _png(w / "ids200.png", np.full((32, 40), 200))
    for folder in ("folder.png", "folder.pt", "folder.json", "empty_maps", "dir_maps/a.png"):
        (w / folder).mkdir(parents=True)
    _png(w / "maps" / "a.png", labels)
    _half(w / "trunc_maps" / "a.png", png)
    (w / "text_maps").mkdir()
    (w / "text_maps" / "a.png").write_text("not a picture\n")
    _png(w / "ids_maps" / "a.png", np.full((32, 40), 200))
    _png(w / "mldata" / "camvid" / "val" / "labels" / "a.png", labels)
    _half(w / "bad_mldata" / "camvid" / "val" / "labels" / "a.png", png)
    for split in ("train", "val"):  # one CamVid pair per split, in the dataset's layout
        for kind in ("images", "labels"):
            source = sorted((CAMVID / split / kind).glob("*.png"))[0]
            (w / "camvid" / split / kind).mkdir(parents=True)
            shutil.copy(source, w / "camvid" / split / kind / source.name)
    GescoPipeline.from_unet_config("tiny", dataset="camvid", seed=0).save_pretrained(w / "pipe")
    shutil.copytree(w / "pipe", w / "bad_index_pipe")
    _half(w / "bad_index_pipe" / "model_index.json", (w / "pipe" / "model_index.json").read_bytes())
    state = {"input_blocks.0.0.weight": torch.zeros(4, 3, 3, 3)}  # not an official checkpoint: fine, never read
    save_file(state, str(w / "ck.safetensors"))
    torch.save(state, w / "ck.pt")
    for suffix in ("pt", "safetensors"):
        _half(w / f"trunc.{suffix}", (w / f"ck.{suffix}").read_bytes())
        (w / f"text.{suffix}").write_text("not a checkpoint\n")
    (w / "empty.pt").write_bytes(b"")
    _half(w / "trunc.json", b'{"name": "my-streets", "classes": [{"id": 0, "name": "road", "color": [1, 2, 3]}]}')
    (w / "empty.json").write_text("")
    (w / "nan_kpis.json").write_text('{"10 dB": {"mIoU": NaN}}')
    (w / "binary.yaml").write_bytes(png)
    (w / "file").write_text("a file where a folder is expected\n")
    (w / "ro").mkdir()
    shutil.copytree(w / "pipe", w / "ro_pipe")
    for folder in ("ro", "ro_pipe"):
        os.chmod(w / folder, 0o500)
    yield w
    for folder in ("ro", "ro_pipe"):
        os.chmod(w / folder, 0o700)


@pytest.fixture(scope="module")
def scripts():
    return {prog: load_script(f"fault_injection_{name}", REPO / "training" / f"{name}.py")
            for prog, name in SCRIPTS.items()}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: folders with their mode and mtime (an entry made and removed changes it), files
    with their mode, mtime and bytes."""
    state = {}
    for folder, _, files in os.walk(root):
        info = os.stat(folder)
        state[folder] = (info.st_mode, info.st_mtime_ns)
        for name in files:
            path = os.path.join(folder, name)
            info = os.stat(path)
            state[path] = (info.st_mode, info.st_mtime_ns, hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return state


class Tripwire(BaseException):
    """Raised where the expensive work starts (a BaseException: no ``except Exception`` of the code can take it)."""


def _wire(what: str):
    def tripped(*args, **kwargs):
        raise Tripwire(what)

    return tripped


@pytest.fixture
def tripwires(monkeypatch):
    """The expensive work of every command, made to fail the test if reached; returns a function that also wires the
    loading of models, checkpoints and map-level data."""
    monkeypatch.setattr(GescoPipeline, "__call__", _wire("images were generated"))
    monkeypatch.setattr(ScoringNetworks, "load", _wire("the scoring networks were loaded"))
    monkeypatch.setattr(map_level, "_evaluate_setting", _wire("the map-level experiment ran"))
    monkeypatch.setattr(hub, "HfApi", _wire("the Hub was contacted"))
    app = types.ModuleType("gesco_diffusers.demo.app")
    app.build_demo = _wire("the demo server was built")
    monkeypatch.setitem(sys.modules, "gesco_diffusers.demo.app", app)

    def loading() -> None:
        monkeypatch.setattr(chain, "load_pipeline", _wire("a model was loaded"))
        monkeypatch.setattr(convert_checkpoint, "load_official_checkpoint", _wire("the checkpoint was read"))
        monkeypatch.setattr(map_level, "load_label_maps", _wire("the map-level data were read"))

    return loading


def run(command: str, args: list[str], scripts) -> tuple[int, str]:
    """Run ``command`` in this process; its exit status and the prefix of its error line."""
    if command in SUBCOMMANDS:
        return main([command, *args]), f"gesco {command}: error: "
    return run_script(command, scripts[command].parse_args, _wire(f"{command} ran past its arguments"),
                      args), f"{command}: error: "


@pytest.mark.parametrize("fault", CASES)
def test_a_hostile_input_is_one_early_line_and_touches_nothing(fault: Case, world, scripts, tripwires, tmp_path,
                                                                capsys):
    if fault.readonly and os.access(world / "ro", os.W_OK):
        pytest.skip("chmod 0o500 does not stop this process from writing (root with CAP_DAC_OVERRIDE)")
    if not fault.late:
        tripwires()
    out = tmp_path / "out"
    fill = lambda text: text.replace("{W}", str(world)).replace("{OUT}", str(out))  # noqa: E731
    args = [fill(a) for a in [*BASE[fault.command], *fault.args]]
    before = snapshot(world)

    status, prefix = run(fault.command, args, scripts)

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert fill(fault.message) in lines[0], err
    assert status == fault.status, err
    assert snapshot(world) == before, "an input was touched"
    assert list(tmp_path.iterdir()) == [], "an output appeared"


@pytest.mark.parametrize("command", [*BASE])
def test_the_base_arguments_reach_the_expensive_work(command, world, scripts, tripwires, tmp_path, capsys):
    """Each case differs from valid arguments by its fault alone: the base arguments pass every check and reach the
    work (a tripwire), or, for publish's dry run, succeed."""
    out = tmp_path / "out"
    args = [a.replace("{W}", str(world)).replace("{OUT}", str(out)) for a in [*BASE[command], *GOOD.get(command, [])]]
    if command == "convert":
        tripwires()  # (its test checkpoint is not an official one: the conversion stops at the reading)
    if command == "publish":  # (a dry run: the card and the file list on stdout, nothing written)
        assert run(command, args, scripts)[0] == 0
        assert "--- files that would be uploaded ---" in capsys.readouterr().out
        return
    with pytest.raises(Tripwire):
        run(command, args, scripts)


def test_generate_reads_its_maps_with_the_chain_reader(world, tripwires, tmp_path, monkeypatch):
    """One label-map reader in the package (chain.read_label_map): gesco generate uses it, before the model loads."""
    read = []
    real = chain.read_label_map
    monkeypatch.setattr(chain, "read_label_map", lambda path, *a, **k: read.append(Path(path)) or real(path, *a, **k))
    tripwires()
    with pytest.raises(Tripwire, match="a model was loaded"):
        main(["generate", str(world / "maps"), str(tmp_path / "out"),
              *[a.replace("{W}", str(world)) for a in BASE["generate"]]])
    assert read == [world / "maps" / "a.png"]
