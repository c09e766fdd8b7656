#!/usr/bin/env python
"""Train one of the paper's comparison systems on a semantic dataset (CamVid by default), small enough for a CPU.

* ``deepjscc``: DeepJSCC (Fig. 10), :class:`gesco_diffusers.baselines.DeepJSCC`; pixel MSE of the photo rebuilt after
  the channel, the channel PSNR drawn per image from ``--psnrs``.
* ``denoiser``: the learned receiver denoiser of Table IX, :class:`gesco_diffusers.receiver.MapDenoiser`;
  cross-entropy of the clean labels given the one-hot map received over AWGN (Eq. 15) at a PSNR drawn per map from
  ``--psnrs``, or the clean map with ``--clean_probability``: the noisy-map mix the diffusion model trains with.

Both read the photos/label maps at the generation resolution through the package's data pipeline (the CamVid preset's
``resize`` to 64x80, random horizontal flips), draw every random number from one generator seeded by ``--seed``,
checkpoint into ``<output_dir>/checkpoint-<step>`` (safetensors + JSON, committed by a rename;
``--resume_from_checkpoint latest`` continues the latest), and save the model with ``save_pretrained`` plus
``training_log.json`` when done. A folder that holds another run is refused unless ``--resume_from_checkpoint`` or ``--overwrite_output_dir``.

Examples::

    python training/train_baseline.py deepjscc --data_dir path/to/camvid --bandwidth_ratio 0.25 \\
        --output_dir runs/deepjscc-camvid-r1_4
    python training/train_baseline.py denoiser --data_dir path/to/camvid --output_dir runs/map-denoiser-camvid
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import gesco_diffusers  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesco_diffusers.channel import build_channel  # noqa: E402
from gesco_diffusers.data.semantic_datasets import (  # noqa: E402
    SemanticExampleTransform,
    build_transform,
    load_semantic_dataset,
)
from gesco_diffusers.presets import check_image_size, get_dataset_preset  # noqa: E402
from gesco_diffusers.sender.encoding import SemanticEncoder  # noqa: E402
from gesco_diffusers.training.checkpoints import (  # noqa: E402
    CHECKPOINT_PREFIX,
    check_output_dir,
    resolve_checkpoint,
    read_state,
    rotate_checkpoints,
    write_state,
)
from gesco_diffusers.training.config import OneLineArgumentParser, check_range  # noqa: E402
from gesco_diffusers.utils.files import atomic_write_text, staged_directory  # noqa: E402
from gesco_diffusers.utils.secrets import redact_secrets  # noqa: E402

#: The noisy-map mix of the CamVid training config (training/configs/camvid-small.yaml: noise_psnrs).
DEFAULT_PSNRS = (30.0, 25.0, 20.0, 15.0, 10.0, 1.0)
RUN_FILES = ("checkpoint-*", ".checkpoint-*", "config.json", "*.safetensors", "training_log.json", "README.md")


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineArgumentParser(prog="train_baseline.py", description=__doc__.split("\n")[0])
    p.add_argument("baseline", choices=("deepjscc", "denoiser"))
    p.add_argument("--dataset", default="camvid", help="dataset preset / file layout")
    p.add_argument("--data_dir", required=True, help="root folder of --dataset's files")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="default: the preset's generation resolution")
    p.add_argument("--bandwidth_ratio", type=float, default=0.25, help="deepjscc: k/n, complex channel uses per real "
                   "source symbol (m/48); 0.25 = 0.75 uses per pixel")
    p.add_argument("--channel", default="awgn", choices=("awgn", "rayleigh"), help="deepjscc: the training channel")
    p.add_argument("--psnrs", type=float, nargs="+", default=list(DEFAULT_PSNRS), help="training PSNRs (dB, Eq. 15)")
    p.add_argument("--clean_probability", type=float, default=None,
                   help="share of noiseless examples (default: 0.3 for the denoiser, as the diffusion model; 0 for "
                        "deepjscc)")
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--max_train_steps", type=int, default=3000)
    p.add_argument("--max_train_minutes", type=float, default=None, help="stop (and save) after this much wall time")
    p.add_argument("--checkpointing_steps", type=int, default=250)
    p.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep the newest N checkpoints")
    p.add_argument("--resume_from_checkpoint", default=None,
                   help="'latest' (the newest checkpoint in --output_dir) or a checkpoint folder")
    p.add_argument("--overwrite_output_dir", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log_every", type=int, default=50)
    args = p.parse_args(argv)
    if args.clean_probability is None:
        args.clean_probability = 0.3 if args.baseline == "denoiser" else 0.0
    if not 0 <= args.clean_probability <= 1:
        p.error(f"--clean_probability must be in [0, 1], got {args.clean_probability}")
    if any(not math.isfinite(v) for v in args.psnrs):
        p.error("--psnrs must be finite dB values (noiseless examples come from --clean_probability)")
    for name in ("train_batch_size", "max_train_steps", "checkpointing_steps", "checkpoints_total_limit", "num_threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    try:  # numbers that mean nothing (NaN, inf, a 100000-pixel side) fail now, naming the flag
        for name in ("learning_rate", "bandwidth_ratio", "max_train_minutes"):
            check_range(args, name, 0, low_open=True)
        check_range(args, "log_every", 1)
        check_range(args, "seed", 0, 2**63 - 1)
        if args.resolution is not None:
            check_image_size(args.resolution, "--resolution")
    except ValueError as err:
        p.error(str(err))
    return args


def load_tensors(args: argparse.Namespace, split: str, resolution, random_flip: bool = False):
    """Every photo (``(N, 3, H, W)`` in [0, 1]) and label map (``(N, H, W)`` preset ids) of a split, transformed by the
    package's data pipeline (flips are drawn per step instead, from the run's generator)."""
    rows, layout = load_semantic_dataset(args.dataset, args.data_dir, split)
    transform = SemanticExampleTransform(build_transform("resize", resolution, random_flip), resolution,
                                         layout.remap_labels, args.seed)
    examples = [transform.example(row) for row in rows]
    images = torch.stack([e["pixel_values"] for e in examples]) * 0.5 + 0.5
    labels = torch.stack([e["label"] for e in examples])
    return images, labels


class DeepJSCCTask:
    """DeepJSCC: MSE between the photo and its reconstruction after the channel."""

    def __init__(self, args, preset, resolution) -> None:
        from gesco_diffusers.baselines import DeepJSCC

        self.args = args
        self.model = DeepJSCC(resolution=list(resolution), bandwidth_ratio=args.bandwidth_ratio, dataset=preset.name)

    def loss(self, images, labels, psnrs, generator) -> torch.Tensor:
        symbols = self.model.encode(images)
        received = torch.cat([
            symbols[i : i + 1] if psnr is None else build_channel(self.args.channel, psnr_db=psnr)(
                symbols[i : i + 1], generator=generator)
            for i, psnr in enumerate(psnrs)
        ])
        return F.mse_loss(self.model.decode(received), images)

    def summary(self) -> dict:
        return {"channel_uses_per_pixel": self.model.channel_uses_per_pixel,
                "latent_channels": self.model.latent_channels}


class DenoiserTask:
    """Learned map denoiser: cross-entropy of the clean labels given the received one-hot map."""

    def __init__(self, args, preset, resolution) -> None:
        from gesco_diffusers.receiver import MapDenoiser

        if preset.use_instance_edges:
            raise ValueError(f"the learned denoiser cleans class planes only; preset {preset.name!r} has an "
                             "instance-edge channel")
        self.encoder = SemanticEncoder.from_preset(preset)
        self.model = MapDenoiser(num_classes=preset.num_classes, dataset=preset.name)

    def loss(self, images, labels, psnrs, generator) -> torch.Tensor:
        sent = self.encoder.encode(labels)
        received = torch.cat([
            sent.one_hot[i : i + 1] if psnr is None else build_channel("awgn", psnr_db=psnr)(
                sent.one_hot[i : i + 1], sent.transmitted[i : i + 1], generator=generator)
            for i, psnr in enumerate(psnrs)
        ])
        return F.cross_entropy(self.model.logits(received, sent.transmitted), labels)

    def summary(self) -> dict:
        return {}


TASKS = {"deepjscc": DeepJSCCTask, "denoiser": DenoiserTask}


def draw_batch(images, labels, args, generator):
    """A random batch (with replacement), flipped per example, and its channel PSNRs (``None`` = noiseless)."""
    index = torch.randint(0, len(images), (args.train_batch_size,), generator=generator)
    flip = torch.rand(args.train_batch_size, generator=generator) < 0.5
    x, y = images[index].clone(), labels[index].clone()
    x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
    clean = torch.rand(args.train_batch_size, generator=generator) < args.clean_probability
    which = torch.randint(0, len(args.psnrs), (args.train_batch_size,), generator=generator)
    psnrs = [None if c else float(args.psnrs[w]) for c, w in zip(clean.tolist(), which.tolist())]
    return x, y, psnrs


CARD = """---
library_name: diffusers
tags: [gesco-diffusers, {tag}, camvid, semantic-communication]
datasets: [{dataset}]
---

# {title}

{what}

* Class: `{cls}` (`{module}`), a diffusers `ModelMixin`: `{cls}.from_pretrained(folder)`.
* Configuration: {config}.
* Parameters: {num_parameters:,}; weights in fp32 safetensors.
* Trained on the {dataset} train split at {height}x{width}, {steps} steps of batch {batch} (Adam, lr {lr:g}, cosine
  decay), channel PSNRs drawn per example from {psnrs} dB{clean}; {minutes:.1f} min on one CPU thread (torch
  {torch}); mean loss of the last 100 steps {loss:.5f}.
* Command: `{command}`
* Evaluated with `bash benchmarks/paper_baselines.sh {bench}` (figures: the repository README, "The paper's
  baselines").
"""
CARD_TEXT = {
    "deepjscc": dict(
        tag="deepjscc", cls="DeepJSCC", module="gesco_diffusers.baselines.deepjscc", bench="fig10",
        title="DeepJSCC baseline (paper Fig. 10), k/n = {ratio}",
        what="The convolutional DeepJSCC of Bourtsoulatze, Kurka and Gunduz (2019), the JSCC baseline GESCO is compared "
             "with in the paper's Fig. 10: the photo is encoded to {planes} real latent planes at 1/4 resolution "
             "({cpp:g} complex channel uses per pixel, bandwidth ratio k/n = {ratio}), power-normalised (unit power per "
             "real element, the peak power of a one-hot map, so a PSNR gives it the same noise as GESCO's map, Eq. 15), "
             "sent over the channel and decoded.",
    ),
    "denoiser": dict(
        tag="map-denoiser", cls="MapDenoiser", module="gesco_diffusers.receiver.learned_denoiser", bench="table9",
        title="Learned map denoiser (paper Table IX)",
        what="A small U-Net that cleans received one-hot maps, the trained counterpart of the paper's FDS block (Eq. "
             "1) in Table IX: it predicts each pixel's class among the transmitted ones and returns the one-hot map, "
             "so the pipeline takes it as its `fds` module.",
    ),
}


def model_card(baseline: str, config: dict, log: dict) -> str:
    """The model card of a trained baseline: what it is, its configuration and how it was trained."""
    text, args = CARD_TEXT[baseline], log["args"]
    ratio = config.get("bandwidth_ratio")
    fields = {"ratio": f"1/{round(1 / ratio)}" if ratio else None, "planes": log.get("latent_channels"),
              "cpp": log.get("channel_uses_per_pixel")}
    height, width = config.get("resolution") or get_dataset_preset(args["dataset"]).resolution
    shown = {k: v for k, v in config.items() if not k.startswith("_")}
    return CARD.format(
        tag=text["tag"], dataset=args["dataset"], title=text["title"].format(**fields), what=text["what"].format(**fields),
        cls=text["cls"], module=text["module"], bench=text["bench"], config=", ".join(f"{k}={v}" for k, v in shown.items()),
        num_parameters=log["num_parameters"], height=height, width=width, steps=log["steps"],
        batch=args["train_batch_size"], lr=args["learning_rate"], psnrs=args["psnrs"],
        clean=f", noiseless with probability {args['clean_probability']:g}" if args["clean_probability"] else "",
        minutes=log["train_seconds"] / 60, torch=log["torch_version"], loss=log["final_loss_mean_last_100"],
        command=log["command"],
    )


def portable_command(argv) -> str:
    """The command line as it can ship: the data and output folders (paths of the training machine) as placeholders."""
    placeholders = {"--data_dir": "path/to/data", "--output_dir": "OUTPUT_DIR"}
    words, hide = [], None
    for word in argv:
        words.append(placeholders[hide] if hide else word)
        hide = word if word in placeholders else None
    return "python training/train_baseline.py " + " ".join(words)


def save_checkpoint(output_dir: Path, limit: int, task, optimizer, scheduler, generator, step, elapsed, losses) -> None:
    with staged_directory(output_dir / f"{CHECKPOINT_PREFIX}{step}") as tmp:
        write_state(tmp, "model", task.model.state_dict())
        write_state(tmp, "optimizer", optimizer.state_dict())
        write_state(tmp, "lr_scheduler", scheduler.state_dict())
        write_state(tmp, "training_state", {"generator": generator.get_state(), "step": step, "elapsed_s": elapsed,
                                            "losses": losses})
    rotate_checkpoints(output_dir, limit)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, args.resume_from_checkpoint, args.overwrite_output_dir, run_files=RUN_FILES)
    preset = get_dataset_preset(args.dataset)
    resolution = tuple(args.resolution or preset.resolution)
    torch.manual_seed(args.seed)  # the initial weights
    task = TASKS[args.baseline](args, preset, resolution)
    images, labels = load_tensors(args, "train", resolution)

    from diffusers.optimization import get_scheduler

    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(task.model.parameters(), lr=args.learning_rate)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=min(100, args.max_train_steps // 10),
                              num_training_steps=args.max_train_steps)
    step, elapsed_before, losses = 0, 0.0, []
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if checkpoint is not None:
        task.model.load_state_dict(read_state(checkpoint, "model"))
        optimizer.load_state_dict(read_state(checkpoint, "optimizer"))
        scheduler.load_state_dict(read_state(checkpoint, "lr_scheduler"))
        state = read_state(checkpoint, "training_state")
        generator.set_state(state["generator"])
        step, elapsed_before, losses = state["step"], state["elapsed_s"], state["losses"]
        print(f"resumed from {checkpoint} at step {step}", flush=True)

    num_params = sum(p.numel() for p in task.model.parameters())
    print(f"{args.baseline}: {num_params:,} parameters, {len(images)} training examples at {resolution}", flush=True)
    start, stop_reason = time.time(), "max_train_steps"
    task.model.train()
    while step < args.max_train_steps:
        elapsed = elapsed_before + time.time() - start
        if args.max_train_minutes is not None and elapsed > args.max_train_minutes * 60:
            stop_reason = "max_train_minutes"
            break
        loss = task.loss(*draw_batch(images, labels, args, generator), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(round(loss.item(), 6))
        if step % args.log_every == 0 or step == 1:
            recent = losses[-args.log_every:]
            print(f"step {step:5d}  loss {sum(recent) / len(recent):.5f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                  f"{elapsed:7.1f}s", flush=True)
        if step % args.checkpointing_steps == 0:
            save_checkpoint(output_dir, args.checkpoints_total_limit, task, optimizer, scheduler, generator, step, elapsed_before + time.time() - start,
                            losses)

    train_seconds = elapsed_before + time.time() - start
    log = {
        "command": portable_command(sys.argv[1:] if argv is None else argv),
        "args": redact_secrets({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                                if k not in ("data_dir", "output_dir")}),
        "steps": step,
        "stop_reason": stop_reason,
        "train_seconds": round(train_seconds, 1),
        "num_parameters": num_params,
        "final_loss_mean_last_100": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 6),
        "losses_tail": losses[-20:],
        "torch_threads": args.num_threads,
        "torch_version": torch.__version__,
        **task.summary(),
    }
    task.model.eval()
    with staged_directory(output_dir.with_name(output_dir.name + ".final")) as tmp:
        task.model.save_pretrained(tmp)
        atomic_write_text(tmp / "training_log.json", json.dumps(log, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", model_card(args.baseline, dict(task.model.config), log))
    # Move the finished model files into the run folder (its checkpoints stay until the next run overwrites them).
    final = output_dir.with_name(output_dir.name + ".final")
    for path in final.iterdir():
        path.replace(output_dir / path.name)
    final.rmdir()
    print(f"saved {args.baseline} to {output_dir} after {step} steps ({train_seconds / 60:.1f} min, {stop_reason})",
          flush=True)
    return log


if __name__ == "__main__":
    try:
        main()
    except (FileExistsError, FileNotFoundError, ValueError, TypeError) as err:  # bad input: one line, no traceback
        sys.exit(f"train_baseline.py: error: {err}")
