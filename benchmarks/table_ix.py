#!/usr/bin/env python
"""Table IX: the receiver's map cleaning at PSNR 10 dB: no FDS, the paper's FDS (Eq. 1), our adaptive FDS and a
learned map denoiser (:class:`gesco_diffusers.receiver.MapDenoiser`, the counterpart of the paper's SUNet row).

    python benchmarks/table_ix.py --data-dir path/to/camvid              # shipped demo model and denoiser
    python benchmarks/table_ix.py --data-dir path/to/camvid --limit 16 --out outputs/table_ix
    python benchmarks/table_ix.py --quick                               # smoke test: random tiny networks

Columns, all measured in this run on the same maps and channel draws:

* parameters, and the storage of the weights (the paper's "Memory": what a checkpoint adds);
* FLOPs per map counted by ``torch.utils.flop_counter`` (convolutions and matrix products; the pooling of FDS and
  the element-wise arithmetic of the adaptive FDS are not counted there, so their CPU time is the fairer cost), the
  CPU time per map, and the peak memory of the tensors the receiver allocates for one map;
* map mIoU: the cleaned map's arg-max against the sent map (Eq. 16 on maps, ``gesco map-level``'s figure) over the
  val maps at the generation resolution;
* judge mIoU and judge FD of the images the pipeline generates from each cleaned map (``gesco evaluate`` with the
  receiver as its FDS arm).

Results go to ``<out>/table_ix.json`` and ``<out>/table_ix.md``; the generated images stay in ``<out>/evaluate``
(reruns resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gesco_diffusers.channel import build_channel  # noqa: E402
from gesco_diffusers.experiments.map_level import (  # noqa: E402
    FDS_ARMS,
    encode_label_maps,
    load_label_maps,
    score_channel,
)
from gesco_diffusers.presets import get_dataset_preset  # noqa: E402
from gesco_diffusers.receiver import LEARNED_RECEIVER, MapDenoiser, build_fds  # noqa: E402
from gesco_diffusers.utils.files import atomic_write_text  # noqa: E402

#: Table rows: (label, receiver method name).
ROWS = (("No FDS", "none"), ("FDS (paper, Eq. 1)", "paper"), ("Adaptive FDS (ours)", "adaptive"),
        ("Learned denoiser", LEARNED_RECEIVER))


class PeakTensorMemory(TorchDispatchMode):
    """The peak of the bytes held by tensors created inside the mode (freed ones are subtracted when collected)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in self._seen:  # views share their base's storage: count it once
                    self._seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._release, key, storage.nbytes())
        return out


def receiver_modules(denoiser: MapDenoiser, num_classes: int) -> dict[str, torch.nn.Module | None]:
    return {method: denoiser if method == LEARNED_RECEIVER else build_fds(method, num_classes=num_classes)
            for _, method in ROWS}


def cost(module, received: torch.Tensor, transmitted: torch.Tensor, repeats: int) -> dict:
    """Parameters, weight bytes, FLOPs, CPU seconds and peak tensor memory of one receiver on one map."""
    if module is None:
        return {"params": 0, "weight_bytes": 0, "flops": 0, "ms_per_map": 0.0, "peak_bytes": 0}
    params = sum(p.numel() for p in module.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad():
        module(received, transmitted)  # warm-up
        with FlopCounterMode(display=False) as flops:
            module(received, transmitted)
        with PeakTensorMemory() as memory:
            module(received, transmitted)
        start = time.perf_counter()
        for _ in range(repeats):
            module(received, transmitted)
        seconds = (time.perf_counter() - start) / repeats
    return {"params": params, "weight_bytes": weight_bytes, "flops": flops.get_total_flops(),
            "ms_per_map": 1000 * seconds, "peak_bytes": memory.peak}


def generated_kpis(args, model: str, denoiser: str) -> dict[str, dict]:
    """Judge mIoU and judge FD of the images generated after each receiver (``gesco evaluate``, one condition)."""
    from gesco_diffusers.evaluation import evaluate
    from gesco_diffusers.evaluation.protocol import ChannelCondition
    from gesco_diffusers.evaluation.scoring import ScoringNetworks

    networks = ScoringNetworks(judge=args.judge or "default", lpips=None, fid=None)
    report = evaluate(model, conditions=[ChannelCondition("awgn", args.psnr)], fds=[m for _, m in ROWS],
                      denoiser=denoiser, data_dir=args.data_dir, limit=args.limit, out_dir=Path(args.out) / "evaluate",
                      image_codec=None, rate_distortion=False, num_inference_steps=args.steps, sampler=args.sampler,
                      seed=args.seed,
                      batch_size=args.batch_size, device="cpu", networks=networks, table_psnr=args.psnr)
    return {r.fds: {"judge_miou": r.value("miou"), "judge_fd": r.value("judge_fd"), "num_images": r.num_images}
            for r in report.records}


def markdown(rows: list[dict], psnr: float, notes: list[str]) -> str:
    lines = [f"**Table IX.** Receivers at PSNR = {psnr:g} dB (AWGN, Eq. 15).", "",
             "| Method | Params | Weights | FLOPs/map | CPU ms/map | Peak memory | map mIoU ↑ | judge mIoU ↑ | judge FD ↓ |",
             "|---|---|---|---|---|---|---|---|---|"]

    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    for r in rows:
        lines.append(
            f"| {r['label']} | {r['params']:,} | {r['weight_bytes'] / 1e6:.2f} MB | {r['flops'] / 1e6:.1f} M | "
            f"{r['ms_per_map']:.2f} | {r['peak_bytes'] / 1e6:.2f} MB | {fmt(r['map_miou'], '.3f')} | "
            f"{fmt(r.get('judge_miou'), '.3f')} | {fmt(r.get('judge_fd'), '.2f')} |")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="the CamVid folder ({split}/images, {split}/labels)")
    p.add_argument("--model", default="demo", help="pipeline for the generated-image columns (default: shipped demo)")
    p.add_argument("--denoiser", default="map-denoiser", help="MapDenoiser folder or shipped name")
    p.add_argument("--judge", default=None, help="segmentation judge folder (default: the shipped CamVid judge)")
    p.add_argument("--psnr", type=float, default=10.0)
    p.add_argument("--limit", type=int, default=None, help="first N val maps (default: all)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--sampler", default=None, help="a sampler name of gesco_diffusers.diffusion.SAMPLERS (default: "
                                                   "the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=20, help="timed receiver calls per row")
    p.add_argument("--out", default="outputs/table_ix")
    p.add_argument("--no-generation", action="store_true", help="skip the generated-image columns")
    p.add_argument("--quick", action="store_true", help="smoke test on random tiny networks (no data, no model)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    preset = get_dataset_preset("camvid")
    size = tuple(preset.resolution)
    if args.quick:
        torch.manual_seed(args.seed)
        denoiser_model = MapDenoiser(num_classes=preset.num_classes, block_out_channels=(8, 16))
        labels = torch.randint(0, preset.num_classes, (2, *size), generator=torch.Generator().manual_seed(0))
        maps = [(labels[i], None) for i in range(2)]
        args.no_generation, args.repeats = True, 2
    else:
        if args.data_dir is None:
            p.error("--data-dir is required (the CamVid folder); --quick runs without data")
        from gesco_diffusers.shipped import resolve_baseline

        denoiser_model = MapDenoiser.from_pretrained(resolve_baseline(args.denoiser)).eval()
        maps = load_label_maps("camvid", Path(args.data_dir).parent, "val", args.limit, size)
    batches = encode_label_maps(maps, preset)
    modules = receiver_modules(denoiser_model, preset.num_classes)
    scores = score_channel(build_channel("awgn", psnr_db=args.psnr), batches, preset, args.seed,
                           receivers={LEARNED_RECEIVER: denoiser_model})
    arm_of = {method: arm for arm, method in FDS_ARMS.items()} | {LEARNED_RECEIVER: LEARNED_RECEIVER}
    map_miou = {method: scores[f"miou_{arm_of[method]}"] for _, method in ROWS}
    _, one_hot, transmitted = batches[0]
    received = build_channel("awgn", psnr_db=args.psnr)(one_hot[:1].float(), transmitted[:1],
                                                        torch.Generator().manual_seed(args.seed))
    generated = {} if args.no_generation else generated_kpis(args, args.model, args.denoiser)
    rows = [{"label": label, "method": method, **cost(modules[method], received, transmitted[:1], args.repeats),
             "map_miou": map_miou[method], **generated.get(method, {})} for label, method in ROWS]
    notes = [f"{len(maps)} CamVid val maps at {size[0]}x{size[1]}; the same channel draw (seed {args.seed}) for every "
             "receiver; FLOPs count convolutions and matrix products only; peak memory: tensors the receiver allocates "
             "for one map; one CPU thread."]
    result = {"psnr_db": args.psnr, "num_maps": len(maps), "rows": rows, "notes": notes, "quick": args.quick}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table_ix.json", json.dumps(result, indent=2) + "\n")
    text = markdown(rows, args.psnr, notes)
    atomic_write_text(out / "table_ix.md", text)
    print(text)
    return result


if __name__ == "__main__":
    main()
