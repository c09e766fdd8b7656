#!/usr/bin/env python
"""Train the CamVid segmentation judge: a small, randomly initialised SegFormer (MiT-b0 encoder, 128-wide decoder).

The judge is the pretrained segmenter that the mIoU protocol of the paper (Eq. 16, Sec. IV-A: "we compute the mIoU
metric on the segmentation maps of the generated images obtained through a pretrained model") needs for CamVid. It
is trained from scratch on the 367 CamVid training photos (180x240, 11 classes, id 11 = unlabelled = ignored) so the
package can ship it (no download at evaluation time).

Recipe (all of it seeded by ``--seed``):

* augmentation: random horizontal flip; random rescale by ``s ~ U[scale_min, scale_max]`` (the default range reaches
  down to 0.35, i.e. the 64x80 generation resolution of the CamVid preset, so the judge also works on generated
  images); random crop to ``crop_size`` (padded with the ignore id where the rescaled image is smaller); small
  brightness/contrast jitter;
* loss: pixel cross-entropy, ignore id 11, class weights ``sqrt(median_freq / freq_c)`` (a damped version of SegNet's
  median-frequency balancing, so thin classes such as pole or sign still count);
* AdamW, linear warm-up then poly decay ``lr = lr_0 (1 - p)^0.9`` with progress ``p = max(step / max_steps,
  elapsed / max_minutes)`` (the machine is shared, so the step rate is unknown: the LR reaches ~0 at whichever budget
  ends training; when the time budget binds, the schedule, and so the exact weights, depend on the machine's speed);
  gradient-norm clipping at 1.

The run stops at ``--max_steps`` or when ``--max_minutes`` of wall-clock time are used, whichever comes first. The
trainer checkpoints every ``--checkpoint_every`` steps into ``<output_dir>/../<name>.checkpoint`` by writing a temporary
folder and swapping it in with ``os.replace``, so a checkpoint on disk is never half-written; ``--resume`` continues
from it. The checkpoint holds safetensors and JSON only, so resuming never unpickles (never runs code planted in the
folder). The final model is saved (``save_pretrained``, safetensors, fp16 by default) to ``--output_dir`` the same
way, together with ``preprocessor_config.json`` (normalisation), ``judge_config.json`` (ignore id, class names) and
``training_log.json``. ``--evaluate`` (run after training unless ``--skip_eval``; or alone with ``--eval_only``)
measures mIoU on the 101 CamVid validation photos at 180x240 and at the 64x80 generation resolution and writes the
model card ``README.md``.

Examples::

    python training/train_judge.py --smoke --output_dir /tmp/judge_smoke
    nohup python training/train_judge.py --max_minutes 70 --skip_eval > judge.log 2>&1 &
    python training/train_judge.py --eval_only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:
    import gesco_diffusers  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesco_diffusers.training.checkpoints import read_state, write_state  # noqa: E402
from gesco_diffusers.utils.files import atomic_write_text, staged_directory  # noqa: E402
from gesco_diffusers.utils.secrets import redact_secrets  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "gesco_diffusers" / "assets" / "judge" / "camvid-segformer"

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)
IGNORE_ID = 11
NUM_CLASSES = len(CAMVID_CLASSES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GENERATION_RESOLUTION = (64, 80)  # the CamVid preset's (H, W)


# ----------------------------------------------------------------------------------------------------------- data
def load_split(data_root: Path, split: str, limit: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N,3,H,W uint8) and label maps (N,H,W uint8) of one CamVid split, sorted by file name."""
    image_dir, label_dir = data_root / split / "images", data_root / split / "labels"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise FileNotFoundError(f"CamVid split '{split}' not found: expected {image_dir} and {label_dir}")
    names = sorted(p.name for p in image_dir.glob("*.png"))[:limit]
    if not names:
        raise FileNotFoundError(f"no .png images in {image_dir}")
    images, labels = [], []
    for name in names:
        label_path = label_dir / name
        if not label_path.is_file():
            raise FileNotFoundError(f"label map missing for {name}: {label_path}")
        images.append(torch.from_numpy(np.asarray(Image.open(image_dir / name).convert("RGB")).copy()))
        labels.append(torch.from_numpy(np.asarray(Image.open(label_path)).copy()))
    return torch.stack(images).permute(0, 3, 1, 2).contiguous(), torch.stack(labels)


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Damped median-frequency balancing: ``w_c = sqrt(median(f) / f_c)`` with ``f_c`` the pixel frequency of class c."""
    counts = torch.bincount(labels[labels != IGNORE_ID].flatten().long(), minlength=NUM_CLASSES).double()
    freq = counts / counts.sum()
    present = freq > 0
    weights = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    weights[present] = (freq[present].median() / freq[present]).sqrt()
    return weights.float()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of float images in [0, 1] (what ``preprocessor_config.json`` records)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    crop_size: tuple[int, int],
    scale_range: tuple[float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, rescale, crop/pad and jitter a batch; returns normalised float images and int64 labels of ``crop_size``."""
    ch, cw = crop_size
    out_images = torch.zeros(len(images), 3, ch, cw)  # zero = the mean colour after normalisation
    out_labels = torch.full((len(images), ch, cw), IGNORE_ID, dtype=torch.long)
    for i in range(len(images)):
        image = images[i : i + 1].float() / 255.0
        label = labels[i : i + 1, None].float()
        if torch.rand((), generator=generator) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        scale = scale_range[0] + (scale_range[1] - scale_range[0]) * torch.rand((), generator=generator).item()
        h, w = image.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        label = F.interpolate(label, size=size, mode="nearest")
        # Photometric jitter: contrast then brightness, both +-20 %, then back into [0, 1].
        contrast = 0.8 + 0.4 * torch.rand((), generator=generator)
        brightness = 0.2 * (torch.rand((), generator=generator) - 0.5) * 2
        image = ((image - image.mean()) * contrast + image.mean() + brightness).clamp(0, 1)
        # Random crop where the rescaled image is larger than the crop; random placement where it is smaller.
        sh, sw = size
        y0 = int(torch.randint(0, abs(sh - ch) + 1, (), generator=generator))
        x0 = int(torch.randint(0, abs(sw - cw) + 1, (), generator=generator))
        src_y, dst_y = (y0, 0) if sh >= ch else (0, y0)
        src_x, dst_x = (x0, 0) if sw >= cw else (0, x0)
        hh, ww = min(sh, ch), min(sw, cw)
        out_images[i, :, dst_y : dst_y + hh, dst_x : dst_x + ww] = normalize(image[:, :, src_y : src_y + hh, src_x : src_x + ww])[0]
        out_labels[i, dst_y : dst_y + hh, dst_x : dst_x + ww] = label[0, 0, src_y : src_y + hh, src_x : src_x + ww].long()
    return out_images, out_labels


# ---------------------------------------------------------------------------------------------------------- model
def build_model(decoder_hidden_size: int = 128):
    """MiT-b0 SegFormer (hidden sizes 32/64/160/256, two blocks per stage), randomly initialised, 11 outputs."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(
        num_labels=NUM_CLASSES,
        hidden_sizes=[32, 64, 160, 256],
        depths=[2, 2, 2, 2],
        num_attention_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1],
        decoder_hidden_size=decoder_hidden_size,
        semantic_loss_ignore_index=IGNORE_ID,
        id2label={i: n for i, n in enumerate(CAMVID_CLASSES)},
        label2id={n: i for i, n in enumerate(CAMVID_CLASSES)},
    )
    return SegformerForSemanticSegmentation(config)


def poly_lr(step: int, progress: float, base_lr: float, warmup: int, power: float = 0.9) -> float:
    """Linear warm-up over ``warmup`` steps, then ``base_lr * (1 - progress)^power``, ``progress`` in [0, 1]."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, 1.0 - progress) ** power


def save_judge(model, output_dir: Path, extra_files: dict[str, dict], fp16: bool) -> None:
    """``save_pretrained`` (safetensors) + JSON side files into a temporary sibling folder, then swap it in (with the
    umask's permissions: shipped assets are readable like any package file)."""
    from transformers import SegformerImageProcessor

    with staged_directory(output_dir) as tmp_dir:
        to_save = model
        if fp16:
            import copy

            to_save = copy.deepcopy(model).to(torch.float16)
        to_save.save_pretrained(tmp_dir, safe_serialization=True)
        # Inputs are used at their own resolution (no resize) and normalised with the ImageNet statistics.
        SegformerImageProcessor(
            do_resize=False, do_rescale=True, do_normalize=True, image_mean=list(IMAGENET_MEAN),
            image_std=list(IMAGENET_STD), do_reduce_labels=False,
        ).save_pretrained(tmp_dir)
        for name, content in extra_files.items():
            (tmp_dir / name).write_text(json.dumps(content, indent=2) + "\n")
        readme = output_dir / "README.md"
        if readme.is_file():  # keep the model card until the evaluation rewrites it
            shutil.copy2(readme, tmp_dir / "README.md")


def save_training_checkpoint(ckpt_dir: Path, model, optimizer, generator: torch.Generator, step: int,
                             elapsed_s: float, losses: list[float]) -> None:
    """The resumable state, in safetensors + JSON (no pickle), committed whole by a rename. The weights are stored as
    the module's own ``state_dict()`` (transformers' ``save_pretrained`` may rename keys on the way to the Hub
    format, and ``load_state_dict`` would not find them)."""
    with staged_directory(ckpt_dir) as tmp:
        write_state(tmp, "model", model.state_dict())
        write_state(tmp, "optimizer", optimizer.state_dict())
        write_state(tmp, "training_state", {"generator": generator.get_state(), "step": step, "elapsed_s": elapsed_s,
                                            "losses": losses})


def load_training_checkpoint(ckpt_dir: Path, model, optimizer,
                             generator: torch.Generator) -> Optional[tuple[int, float, list[float]]]:
    """Restore :func:`save_training_checkpoint`'s state; ``None`` without a checkpoint. Reads JSON and safetensors
    only: a ``training_state.pt`` (the former pickle format) is refused, never unpickled."""
    if not (ckpt_dir / "training_state.json").is_file():
        if (ckpt_dir / "training_state.pt").exists():
            raise ValueError(f"{ckpt_dir / 'training_state.pt'} is a pickle from an older version of this script and "
                             f"is not loaded (unpickling can run code); delete {ckpt_dir} to start over")
        return None
    model.load_state_dict(read_state(ckpt_dir, "model"))
    optimizer.load_state_dict(read_state(ckpt_dir, "optimizer"))
    state = read_state(ckpt_dir, "training_state")
    generator.set_state(state["generator"])
    return state["step"], state["elapsed_s"], state["losses"]


def judge_config() -> dict:
    """What :class:`gesco_diffusers.evaluation.SegmentationJudge` needs beyond the transformers config."""
    return {
        "dataset": "camvid",
        "ignore_index": IGNORE_ID,
        "num_label_ids": NUM_CLASSES + 1,
        "label_id_map": None,
        "class_names": list(CAMVID_CLASSES),
    }


# -------------------------------------------------------------------------------------------------------- training

def _portable(value):
    """A logged argument as it can ship: tuples as lists, paths relative to the working directory (an absolute path
    of the training machine would end up in the published folder)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (str, os.PathLike)) and os.path.isabs(value):
        relative = os.path.relpath(value)
        return relative if not relative.startswith(os.pardir + os.sep + os.pardir) else os.path.basename(value)
    return value

def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    ckpt_dir = output_dir.with_name(output_dir.name + ".checkpoint")

    images, labels = load_split(Path(args.data_root), "train", limit=args.limit_images)
    weights = class_weights(labels)
    model = build_model(args.decoder_hidden_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, elapsed_before, losses = 0, 0.0, []
    if args.resume:
        resumed = load_training_checkpoint(ckpt_dir, model, optimizer, generator)
        if resumed is not None:
            step, elapsed_before, losses = resumed
            print(f"resumed from {ckpt_dir} at step {step}", flush=True)

    num_params = sum(p.numel() for p in model.parameters())
    print(f"SegFormer judge: {num_params / 1e6:.3f} M parameters; {len(images)} training images", flush=True)
    model.train()
    start = time.time()
    stop_reason = "max_steps"

    def checkpoint() -> None:
        save_training_checkpoint(ckpt_dir, model, optimizer, generator, step, elapsed_before + time.time() - start,
                                 losses)

    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    while step < args.max_steps:
        if elapsed_before + time.time() - start > args.max_minutes * 60:
            stop_reason = "max_minutes"
            break
        index = torch.randint(0, len(images), (args.batch_size,), generator=generator)
        x, y = augment_batch(images[index], labels[index], tuple(args.crop_size), tuple(args.scale_range), generator)
        logits = model(pixel_values=x).logits
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, weight=weights, ignore_index=IGNORE_ID)
        # The CPU is shared, so the step rate is unknown in advance: the poly decay follows whichever budget
        # (steps or wall-clock minutes) is closer to exhaustion, so the LR always reaches ~0 when training stops.
        progress = max(step / args.max_steps, (elapsed_before + time.time() - start) / (args.max_minutes * 60))
        lr = poly_lr(step, progress, args.lr, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(round(loss.item(), 5))
        if step % args.log_every == 0 or step == 1:
            recent = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            print(f"step {step:5d}  loss {recent:.4f}  lr {lr:.2e}  {elapsed_before + time.time() - start:7.1f}s",
                  flush=True)
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            checkpoint()

    train_seconds = elapsed_before + time.time() - start
    log = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix() if sys.argv else "train_judge.py"] + sys.argv[1:]),
        "args": redact_secrets({k: _portable(v) for k, v in vars(args).items()}),
        "steps": step,
        "stop_reason": stop_reason,
        "train_seconds": round(train_seconds, 1),
        "num_parameters": num_params,
        "final_loss_mean_last_50": round(float(np.mean(losses[-50:])), 4) if losses else None,
        "class_weights": [round(w, 4) for w in weights.tolist()],
        "torch_threads": args.num_threads,
        "torch_version": torch.__version__,
    }
    model.eval()
    save_judge(model, output_dir, {"judge_config.json": judge_config(), "training_log.json": log}, fp16=args.fp16)
    if args.checkpoint_every and ckpt_dir.exists() and not args.keep_checkpoint:
        shutil.rmtree(ckpt_dir)
    print(f"saved judge to {output_dir} after {step} steps ({train_seconds / 60:.1f} min, {stop_reason})", flush=True)
    return log


# ------------------------------------------------------------------------------------------------------ evaluation
def evaluate(output_dir: Path, data_root: Path, limit: Optional[int] = None, batch_size: int = 8) -> dict:
    """mIoU of the saved judge on the CamVid val photos against their labels, at 180x240 and at 64x80."""
    if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
        sys.path.append(str(REPO_ROOT))
    from gesco_diffusers.evaluation import SegmentationJudge

    judge = SegmentationJudge.from_pretrained(output_dir)
    images, labels = load_split(data_root, "val", limit=limit)
    results = {}
    for name, size in (("native_180x240", None), ("generation_64x80", GENERATION_RESOLUTION)):
        matrix = judge.new_confusion_matrix()  # 11 classes, id 11 ignored
        start = time.time()
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].float() / 255.0
            y = labels[i : i + batch_size]
            if size is not None:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
                y = F.interpolate(y[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
            judge.update(matrix, x, reference_labels=y)
        result = matrix.compute()
        results[name] = {
            "miou": round(result.miou, 4),
            "pixel_accuracy": round(result.pixel_accuracy, 4),
            "per_class_iou": {
                CAMVID_CLASSES[c]: (None if math.isnan(v) else round(v, 4))
                for c, v in enumerate(result.per_class_iou.tolist())
            },
            "seconds": round(time.time() - start, 1),
        }
    results["num_val_images"] = len(images)
    return results


def write_model_card(output_dir: Path, evaluation: dict, eval_command: str) -> None:
    log = json.loads((output_dir / "training_log.json").read_text())
    weights = output_dir / "model.safetensors"
    size_mb = weights.stat().st_size / 1e6
    rows = "\n".join(
        f"| {name} | {_fmt(evaluation['native_180x240']['per_class_iou'][name])} "
        f"| {_fmt(evaluation['generation_64x80']['per_class_iou'][name])} |"
        for name in CAMVID_CLASSES
    )
    args = log["args"]
    card = f"""---
library_name: transformers
pipeline_tag: image-segmentation
tags: [segformer, camvid, gesco-diffusers, evaluation-judge]
---

# CamVid SegFormer judge (gesco-diffusers)

A small SegFormer (MiT-b0 encoder: hidden sizes 32/64/160/256, depths 2/2/2/2; all-MLP decoder of width
{args['decoder_hidden_size']}) trained **from scratch** (random initialisation, no ImageNet pretraining) on the 367
CamVid training photos (SegNet 11-class split, 180x240). It is the pretrained segmenter of the mIoU protocol
(paper Eq. 16) for the `camvid` preset of gesco-diffusers: it segments the images generated by the receiver and its
prediction is compared with the label map (or with its own prediction on the original photo).

* Outputs: 11 classes, ids 0..10 = {", ".join(CAMVID_CLASSES)}; CamVid id 11 (unlabelled) is never predicted and is
  ignored in mIoU.
* Inputs: RGB in [0, 1], normalised with the ImageNet mean/std (`preprocessor_config.json`), used at their own
  resolution (logits upsampled bilinearly to the input size).
* Parameters: {log['num_parameters']:,} ({log['num_parameters'] / 1e6:.2f} M); weights stored in
  {"fp16" if args['fp16'] else "fp32"} safetensors, {size_mb:.1f} MB.
* Load: `from gesco_diffusers.evaluation import SegmentationJudge, default_camvid_judge_path;
  judge = SegmentationJudge.from_pretrained(default_camvid_judge_path())`.

## Training

```
{log['command']}
```

{log['steps']} steps (stopped by `{log['stop_reason']}`), batch {args['batch_size']}, random crops
{args['crop_size'][0]}x{args['crop_size'][1]} after a random rescale in [{args['scale_range'][0]}, {args['scale_range'][1]}]
(a scale of 0.35 is the 64x80 generation resolution), horizontal flip, +-20 % brightness/contrast; cross-entropy
with ignore id 11
and damped median-frequency class weights sqrt(median f / f_c); AdamW (lr {args['lr']}, weight decay
{args['weight_decay']}), {args['warmup_steps']} warm-up steps then poly decay lr (1 - p)^0.9 with progress
p = max(step / {args['max_steps']}, elapsed / {args['max_minutes']:g} min) (the CPU was shared with other jobs, so the
decay follows whichever budget ends first; when the time budget binds, rerunning the command on another machine
gives a slightly different schedule); gradient clipping at 1; seed {args['seed']}. Wall-clock training time:
**{log['train_seconds'] / 60:.1f} min** on {log['torch_threads']} CPU thread(s) of a 2-core machine shared with other
work (torch {log['torch_version']}). Mean loss over the last 50 steps: {log['final_loss_mean_last_50']}.

## Evaluation (CamVid val, {evaluation['num_val_images']} photos, against the ground-truth labels)

```
{eval_command}
```

mIoU is the mean over the 11 classes of IoU = TP / (TP + FP + FN) accumulated over the whole split (one confusion
matrix), unlabelled pixels (id 11) excluded; pixel accuracy = correctly labelled / evaluated pixels.

| resolution | mIoU | pixel accuracy |
|---|---|---|
| 180x240 (native) | **{evaluation['native_180x240']['miou']:.4f}** | {evaluation['native_180x240']['pixel_accuracy']:.4f} |
| 64x80 (generation resolution; images antialiased-bilinear downsampled, labels nearest) | **{evaluation['generation_64x80']['miou']:.4f}** | {evaluation['generation_64x80']['pixel_accuracy']:.4f} |

| class | IoU 180x240 | IoU 64x80 |
|---|---|---|
{rows}

## Limitations

Trained from scratch on 367 photos on a CPU budget, this judge is far weaker than the DRN-D-105 / MaskFormer judges
the paper uses for Cityscapes / COCO-Stuff; absolute mIoU values are only comparable between methods evaluated with
this same judge. Thin and rare classes (pole, sign, fence, pedestrian, bicyclist) are the least reliable.
"""
    atomic_write_text(output_dir / "README.md", card)
    atomic_write_text(output_dir / "eval_results.json", json.dumps(evaluation, indent=2) + "\n")


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------------------------------------- cli
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--output_dir", default=str(DEFAULT_OUTPUT_DIR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_steps", type=int, default=6000)
    p.add_argument("--max_minutes", type=float, default=70.0, help="wall-clock budget; training stops when used")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--crop_size", type=int, nargs=2, default=(128, 160))
    p.add_argument("--scale_range", type=float, nargs=2, default=(0.35, 1.25))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup_steps", type=int, default=150)
    p.add_argument("--decoder_hidden_size", type=int, default=128)
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--checkpoint_every", type=int, default=200)
    p.add_argument("--log_every", type=int, default=25)
    p.add_argument("--limit_images", type=int, default=None, help="train on the first N images only")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True, help="store fp16 weights")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>.checkpoint if present")
    p.add_argument("--keep_checkpoint", action="store_true")
    p.add_argument("--skip_eval", action="store_true", help="train only; run --eval_only later")
    p.add_argument("--eval_only", action="store_true", help="evaluate the saved judge and write the model card")
    p.add_argument("--eval_limit", type=int, default=None, help="evaluate on the first N val photos only")
    p.add_argument("--smoke", action="store_true", help="a few steps on a few images (needs --output_dir)")
    args = p.parse_args(argv)
    if args.smoke:
        if Path(args.output_dir).resolve() == DEFAULT_OUTPUT_DIR.resolve():
            p.error("--smoke must not overwrite the shipped judge: pass --output_dir to a temporary folder")
        args.max_steps, args.batch_size, args.crop_size = 3, 2, (64, 80)
        args.limit_images, args.eval_limit, args.warmup_steps = 4, 2, 1
        args.checkpoint_every, args.log_every = 2, 1
    if args.max_steps < 1 or args.batch_size < 1 or args.max_minutes <= 0:
        p.error("--max_steps, --batch_size and --max_minutes must be positive")
    if not 0 < args.scale_range[0] <= args.scale_range[1]:
        p.error("--scale_range must be 0 < min <= max")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    result: dict = {}
    if not args.eval_only:
        result["training"] = train(args)
    if not args.skip_eval:
        evaluation = evaluate(Path(args.output_dir), Path(args.data_root), limit=args.eval_limit)
        eval_cmd = f"python training/train_judge.py --eval_only --output_dir {args.output_dir}" + (
            f" --eval_limit {args.eval_limit}" if args.eval_limit else ""
        )
        if Path(args.output_dir).resolve() == DEFAULT_OUTPUT_DIR.resolve():
            eval_cmd = "python training/train_judge.py --eval_only"
        write_model_card(Path(args.output_dir), evaluation, eval_cmd)
        result["evaluation"] = evaluation
        print(json.dumps(evaluation, indent=2), flush=True)
    return result


if __name__ == "__main__":
    main()
