#!/usr/bin/env python
"""Few-step GESCO: the distilled student against its 40-step teacher and the authors' protocol, side by side.

    python benchmarks/few_step.py                       # shipped teacher + student, 64 CamVid val maps, CPU
    python benchmarks/few_step.py --student runs/gesco-camvid-fast --num-maps 101
    python benchmarks/few_step.py --quick               # smoke test: tiny random pipelines, 2 maps

Rows, on the same maps, channel draws and seeds (map ``i`` of the split seeded with ``seed + i``):

* the student (consistency-distilled, ``training/distill.py``) at 1, 2 and 4 U-Net calls, one map per call;
* the teacher at its default sampler and step count (SDE-DPM-Solver++ 40 steps, guidance 1.5: 80 map evaluations);
* the teacher's weights run exactly as the student is (its sampler, schedule, steps and guidance): what the
  distillation itself adds;
* for a trajectory-distilled student, the teacher's own guided DDIM run whose states the student learned (what it
  imitates: the gap to it is the distillation's error, the gap from it to the default sampler the DDIM teacher's);
* the trivial baseline "teacher's x0 prediction from pure noise in one call" (guided, ``t = T - 1``): the student must
  beat it, or the figures do not measure what we think;
* the authors' protocol (1000 ancestral DDPM steps, CFG as two forwards): wall time on ``--authors-timing-maps``
  maps; judge mIoU only where its 1000-step images are cached by ``benchmarks/sampler_quality.py`` for all maps
  (same maps, seeds and cache) or with ``--authors-quality`` (88 s per map on this CPU).

Conditions: clean maps, and AWGN at 10 dB and 1 dB (Eq. 15, present classes) followed by the paper's FDS (Eq. 1).
Figures: judge mIoU (Eq. 16, shipped CamVid SegFormer against the labels) with the paired bootstrap 95 % interval of
its difference to the teacher; judge FD, the Frechet distance of the judge's pooled encoder features between the
generated images and the real photos of the same maps (a realism figure a blurry layout cannot game; **not**
comparable to FID); seconds per image at batch 1, measured in this run for every row, and the wall-time ratio to the
authors' protocol. Teacher images are cached in ``--cache`` (keyed by weights, sampler, map, seed, condition).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.sampler_quality import (  # noqa: E402
    DEFAULT_CACHE as SAMPLER_QUALITY_CACHE,
    bootstrap_difference,
    cached_references,
    per_map_confusion,
    pooled_miou,
    reference_key,
    weights_digest,
)
from benchmarks.sampling_cost import authors_protocol  # noqa: E402
from gesco_diffusers.channel import AWGNChannel  # noqa: E402
from gesco_diffusers.diffusion import DEFAULT_SAMPLING_STEPS, build_scheduler  # noqa: E402
from gesco_diffusers.evaluation.data import EvaluationData  # noqa: E402
from gesco_diffusers.evaluation.metrics import FIDMetric, JudgeFeatureExtractor, SegmentationJudge  # noqa: E402
from gesco_diffusers.evaluation.metrics.segmentation_judge import default_camvid_judge_path  # noqa: E402
from gesco_diffusers.pipelines import GescoPipeline  # noqa: E402

ASSETS = REPO_ROOT / "gesco_diffusers" / "assets" / "demo"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "few_step"
#: (name, PSNR in dB or None for the clean map): the channel conditions of the issue, FDS (Eq. 1) on noisy maps.
CONDITIONS = (("clean", None), ("awgn 10 dB + FDS", 10.0), ("awgn 1 dB + FDS", 1.0))


def load(path: str, device: str) -> GescoPipeline:
    pipe = GescoPipeline.from_pretrained(path, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def tiny_pipelines(device: str) -> tuple[GescoPipeline, GescoPipeline]:
    """``--quick``: a random learned-variance teacher and a student sharing its weights, stored as a trajectory
    student is (x0-predicting, DDIM), so every row runs."""
    from gesco_diffusers.models import semantic_unet_config
    from gesco_diffusers.training.trajectory_distillation import student_sampler

    config = semantic_unet_config("tiny", sample_size=[32, 40])
    teacher = GescoPipeline.from_unet_config(config, dataset="camvid", seed=0)
    torch.nn.init.normal_(teacher.unet.conv_out.weight, std=0.05)
    student = GescoPipeline(unet=teacher.unet, scheduler=student_sampler(teacher.scheduler.config, "sample"),
                            semantic_config={**teacher.config.semantic_config, "guidance_scale": 1.0,
                                             "num_inference_steps": 4, "prediction_type": "sample",
                                             "distillation": {"method": "trajectory distillation",
                                                              "solver_substeps": 2, "teacher_guidance_scale": 1.5}})
    for pipe in (teacher, student):
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
    return teacher, student


def students_sampler_for_the_teacher(teacher: GescoPipeline, student: GescoPipeline):
    """The student's scheduler, reading the teacher's parametrisation (an x0 student's DDIM reads epsilon here)."""
    return type(student.scheduler).from_config(student.scheduler.config, prediction_type=teacher.model_prediction)


def one_call_baseline(teacher: GescoPipeline, student: GescoPipeline) -> GescoPipeline:
    """The teacher sampled by the student's sampler for one step: its guided x0 prediction at ``t = T - 1`` from pure
    noise (LCM: ``c_skip`` is 2.5e-9 there; SDE-DPM-Solver++: a first-order step to ``t = 0``; DDIM: its x0)."""
    pipe = GescoPipeline(unet=teacher.unet, scheduler=students_sampler_for_the_teacher(teacher, student),
                         semantic_config=dict(teacher.config.semantic_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def undistilled(teacher: GescoPipeline, student: GescoPipeline) -> GescoPipeline:
    """The teacher's weights run exactly as the student is (its sampler, stored steps, schedule and guidance): what
    the distillation adds is the difference to this row."""
    pipe = GescoPipeline(unet=teacher.unet, scheduler=students_sampler_for_the_teacher(teacher, student),
                         semantic_config={**teacher.config.semantic_config,
                                          **{key: student.config.semantic_config[key]
                                             for key in ("guidance_scale", "num_inference_steps", "timesteps")
                                             if key in student.config.semantic_config}})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def imitated_teacher(teacher: GescoPipeline, student: GescoPipeline) -> Optional[GescoPipeline]:
    """For a trajectory-distilled student (``training/distill.py --method trajectory``): the teacher with the sampler
    whose states the student learned (guided DDIM, x0 clipped, ``S * substeps`` trailing steps); else ``None``."""
    from gesco_diffusers.training.trajectory_distillation import teacher_sampler

    recipe = (student.config.semantic_config or {}).get("distillation") or {}
    if not str(recipe.get("method", "")).startswith("trajectory"):
        return None
    steps = student.default_num_inference_steps * int(recipe["solver_substeps"])
    pipe = GescoPipeline(unet=teacher.unet, scheduler=teacher_sampler(teacher.scheduler.config),
                         semantic_config={**teacher.config.semantic_config, "num_inference_steps": steps,
                                          "guidance_scale": recipe.get("teacher_guidance_scale",
                                                                       teacher.default_guidance_scale)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: GescoPipeline, cond: torch.Tensor, seeds: list[int], batch_size: int, **kwargs) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` in [0, 1] of the received (already FDS-cleaned) maps ``cond``, map ``i`` seeded with
    ``seeds[i]``."""
    images = []
    for first in range(0, cond.shape[0], batch_size):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[first:first + batch_size]]
        images.append(pipe(cond[first:first + batch_size], fds=False, generator=generators, output_type="pt",
                           **kwargs).images.float().cpu())
    return torch.cat(images)


@torch.no_grad()  # the authors' protocol calls the U-Net directly: no autograd graph over its 2000 evaluations
def seconds_per_image(run: Callable[[torch.Tensor, torch.Generator], object], cond: torch.Tensor,
                      seeds: list[int]) -> float:
    """Median wall time of ``run`` on single maps (batch 1, after one warm-up call)."""
    run(cond[:1], torch.Generator().manual_seed(seeds[0]))
    times = []
    for i, seed in enumerate(seeds):
        start = time.perf_counter()
        run(cond[i:i + 1], torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=str(ASSETS / "camvid"), help="the 40-step pipeline folder")
    parser.add_argument("--student", default=str(ASSETS / "camvid-fast"), help="the distilled pipeline folder")
    parser.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="CamVid folder with val/{images,labels}")
    parser.add_argument("--num-maps", type=int, default=64, help="N val maps spread evenly over the split")
    parser.add_argument("--timing-maps", type=int, default=3, help="maps timed one by one per row (median)")
    parser.add_argument("--authors-timing-maps", type=int, default=1, help="maps timed with the authors' protocol")
    parser.add_argument("--authors-steps", type=int, default=1000)
    parser.add_argument("--authors-quality", action="store_true",
                        help="generate the authors' 1000-step images of the clean maps that are not cached")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the maps (0: none)")
    parser.add_argument("--cache", default=None,
                        help=f"teacher image cache (default {DEFAULT_CACHE.relative_to(REPO_ROOT)}; none with --quick; "
                             "'' to recompute)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny random pipelines, 2 maps")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--kpis", default=None,
                        help="also write the student's card KPIs (its default steps against the teacher, per "
                             "condition) to this JSON file, for training/export_pipeline.py --kpis")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_maps, args.timing_maps, args.authors_steps, args.bootstrap = 3, 1, 4, 20
        args.student_steps = [1, 2, 4]
    if args.cache is None:
        args.cache = "" if args.quick else str(DEFAULT_CACHE)
    torch.set_num_threads(args.threads)

    if args.quick:
        teacher, student = tiny_pipelines(args.device)
    else:
        for name in ("teacher", "student"):
            if not (Path(getattr(args, name)) / "model_index.json").is_file():
                parser.error(f"--{name} {getattr(args, name)} is not a pipeline folder (no model_index.json)")
        teacher, student = load(args.teacher, args.device), load(args.student, args.device)
    baseline = one_call_baseline(teacher, student)
    guidance = teacher.default_guidance_scale
    teacher_steps = teacher.config.semantic_config.get("num_inference_steps") or DEFAULT_SAMPLING_STEPS
    size = tuple(teacher.unet.config.sample_size)
    data = EvaluationData("camvid", "val", size, data_dir=args.data_dir)
    if not 2 <= args.num_maps <= len(data):
        parser.error(f"--num-maps must be between 2 and {len(data)}")
    indices = torch.linspace(0, len(data) - 1, args.num_maps).round().long().unique().tolist()
    items = [data.item(i) for i in indices]
    labels = torch.stack([item.labels for item in items])
    photos = torch.stack([item.photo for item in items]).float() / 255.0
    seeds = [args.seed + i for i in indices]
    judge = SegmentationJudge.from_pretrained(default_camvid_judge_path(), device=args.device)
    judge_fd = FIDMetric(JudgeFeatureExtractor(judge), device=args.device)
    judge_fd.update(photos, real=True)

    def judge_fd_of(images: torch.Tensor) -> float:
        judge_fd.generated = type(judge_fd.generated)()
        judge_fd.update(images, real=False)
        return judge_fd.compute()

    # ---- the methods: name -> (calls per image, generate(cond, seeds), time one map)
    methods: dict[str, tuple[int, Callable, Callable]] = {}
    for steps in args.student_steps:
        # At its stored step count the student runs its stored defaults (schedule included), as users call it.
        options = {} if steps == student.default_num_inference_steps else {"num_inference_steps": steps}
        methods[f"student, {steps} call{'s' if steps > 1 else ''}"] = (
            steps,
            lambda cond, s, options=options: generate(student, cond, s, args.batch_size, **options),
            lambda cond, g, options=options: student(cond, fds=False, generator=g, **options),
        )
    plain = undistilled(teacher, student)
    methods["teacher weights run as the student (no distillation)"] = (
        plain.default_num_inference_steps if plain.config.semantic_config.get("timesteps") is None
        else len(plain.config.semantic_config["timesteps"]),
        lambda cond, s: generate(plain, cond, s, args.batch_size),
        lambda cond, g: plain(cond, fds=False, generator=g),
    )
    imitated = imitated_teacher(teacher, student)
    if imitated is not None:  # a trajectory student: the teacher's own DDIM run it learned to jump along
        steps = imitated.default_num_inference_steps
        methods[f"teacher, guided DDIM {steps} steps (what the student imitates)"] = (
            2 * steps if guidance > 1 else steps,
            lambda cond, s: generate(imitated, cond, s, args.batch_size),
            lambda cond, g: imitated(cond, fds=False, generator=g),
        )
    methods["teacher's x0 from noise, 1 call (baseline)"] = (
        2 if guidance > 1 else 1,
        lambda cond, s: generate(baseline, cond, s, args.batch_size, num_inference_steps=1),
        lambda cond, g: baseline(cond, fds=False, num_inference_steps=1, generator=g),
    )
    weights = weights_digest(teacher)

    def teacher_images(cond: torch.Tensor, condition: str) -> torch.Tensor:
        keys = [reference_key(weights, teacher.scheduler, item.stem, seed, size, guidance, teacher_steps, args.device,
                              extra={"condition": condition}) for item, seed in zip(items, seeds)]
        images, _, _ = cached_references(
            args.cache, keys, lambda missing: (generate(teacher, cond[missing], [seeds[i] for i in missing],
                                                        args.batch_size), 0.0))
        return images

    methods[f"teacher, {teacher_steps} steps (default sampler)"] = (
        2 * teacher_steps if guidance > 1 else teacher_steps, None,
        lambda cond, g: teacher(cond, fds=False, generator=g),
    )
    teacher_name = f"teacher, {teacher_steps} steps (default sampler)"

    # ---- wall time at batch 1, every row measured in this run
    clean_cond = teacher.prepare_semantic_map(labels, fds=False, device=args.device).conditioning
    timing_seeds = seeds[:args.timing_maps]
    seconds = {name: seconds_per_image(run, clean_cond, timing_seeds) for name, (_, _, run) in methods.items()}
    authors_seconds = seconds_per_image(
        lambda cond, g: authors_protocol(teacher, cond, args.authors_steps, guidance, g), clean_cond,
        seeds[:args.authors_timing_maps])
    print(f"timing (batch 1): authors {authors_seconds:.1f} s/image, "
          + ", ".join(f"{name} {value:.3f} s" for name, value in seconds.items()), flush=True)

    # ---- quality per condition
    rows = []
    for condition, psnr in CONDITIONS:
        channel = AWGNChannel(psnr_db=psnr) if psnr is not None else None
        generators = [torch.Generator().manual_seed(10_000 + seed) for seed in seeds]  # the channel draw of map i
        cond = teacher.prepare_semantic_map(labels, channel=channel, fds="paper" if channel else False,
                                            generator=generators, device=args.device).conditioning
        reference_images = teacher_images(cond, condition)
        reference_matrices = per_map_confusion(judge, reference_images, labels)
        for name, (calls, make, _) in methods.items():
            images = reference_images if make is None else make(cond, seeds)
            matrices = reference_matrices if make is None else per_map_confusion(judge, images, labels)
            row = {"condition": condition, "method": name, "unet_calls_per_image": calls,
                   "judge_miou": pooled_miou(matrices, list(range(len(matrices)))), "judge_fd": judge_fd_of(images),
                   "seconds_per_image": seconds[name], "wall_time_ratio_to_authors": authors_seconds / seconds[name]}
            if make is not None and args.bootstrap:
                row["difference_to_teacher_ci95"] = bootstrap_difference(matrices, reference_matrices, args.bootstrap,
                                                                         args.seed)
            rows.append(row)
            print(f"  {condition} | {name}: judge mIoU {row['judge_miou']:.3f}, judge FD {row['judge_fd']:.2f}",
                  flush=True)
        if psnr is None:
            rows.append(authors_row(args, teacher, clean_cond, items, seeds, size, guidance, weights, judge, labels,
                                    judge_fd_of, authors_seconds, reference_matrices))

    print_table(rows, teacher_name)
    print(f"\n{len(items)} CamVid val maps (spread over the {len(data)}) at {size[0]}x{size[1]}; teacher guidance "
          f"{guidance}; seeds {args.seed} + map index; {args.device}, {args.threads} threads; wall time at batch 1 "
          f"(median of {args.timing_maps} maps; authors' protocol {args.authors_timing_maps} map(s))")
    summary = {"device": args.device, "threads": args.threads, "num_maps": len(items), "rows": rows,
               "authors_seconds_per_image": authors_seconds}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.kpis:
        Path(args.kpis).write_text(json.dumps(card_kpis(rows, student, teacher_name, teacher_steps), indent=2))
    return summary


def authors_row(args, teacher, clean_cond, items, seeds, size, guidance, weights, judge, labels, judge_fd_of,
                authors_seconds, teacher_matrices) -> dict:
    """The authors' protocol on clean maps: quality where its images are cached (sampler_quality's cache) or asked
    for, wall time always."""
    row = {"condition": "clean", "method": f"authors: DDPM {args.authors_steps} steps, CFG as two forwards",
           "unet_calls_per_image": 2 * args.authors_steps, "seconds_per_image": authors_seconds,
           "wall_time_ratio_to_authors": 1.0}
    scheduler = build_scheduler("ddpm", teacher.scheduler.config)
    keys = [reference_key(weights, scheduler, item.stem, seed, size, guidance, args.authors_steps, args.device)
            for item, seed in zip(items, seeds)]
    cache = "" if args.quick else str(SAMPLER_QUALITY_CACHE)
    cached = cache and all((Path(cache) / f"{key}.safetensors").is_file() for key in keys)
    if not (cached or args.authors_quality):
        row["note"] = "quality not measured: run sampler_quality.py with the same maps, or pass --authors-quality"
        return row
    from benchmarks.sampler_quality import generate as generate_with

    images, _, _ = cached_references(cache, keys, lambda missing: generate_with(
        teacher, clean_cond[missing], scheduler, args.authors_steps, guidance, [seeds[i] for i in missing],
        args.batch_size))
    matrices = per_map_confusion(judge, images, labels)
    row.update(judge_miou=pooled_miou(matrices, list(range(len(matrices)))), judge_fd=judge_fd_of(images))
    if args.bootstrap:
        row["difference_to_teacher_ci95"] = bootstrap_difference(matrices, teacher_matrices, args.bootstrap,
                                                                 args.seed)
    return row


#: Condition names of the model card.
CARD_CONDITIONS = {"clean": "clean maps", "awgn 10 dB + FDS": "AWGN 10 dB + FDS (paper)",
                   "awgn 1 dB + FDS": "AWGN 1 dB + FDS (paper)"}


def card_kpis(rows: list[dict], student: GescoPipeline, teacher_name: str, teacher_steps: int) -> dict:
    """``{condition: {KPI: value}}`` of the student at its default step count, beside the teacher's."""
    steps = student.default_num_inference_steps
    name = f"student, {steps} call{'s' if steps > 1 else ''}"
    kpis = {}
    for condition, label in CARD_CONDITIONS.items():
        ours = next(row for row in rows if row["condition"] == condition and row["method"] == name)
        teacher = next(row for row in rows if row["condition"] == condition and row["method"] == teacher_name)
        kpis[label] = {
            "judge mIoU": round(ours["judge_miou"], 4),
            f"teacher ({teacher_steps} steps) judge mIoU": round(teacher["judge_miou"], 4),
            "judge FD (not FID)": round(ours["judge_fd"], 2), "teacher judge FD": round(teacher["judge_fd"], 2),
            "s / image": round(ours["seconds_per_image"], 3),
            "less wall time than the authors": round(ours["wall_time_ratio_to_authors"]),
        }
    return kpis


def print_table(rows: list[dict], teacher_name: str) -> None:
    teacher = {row["condition"]: row for row in rows if row["method"] == teacher_name}
    print("\n| condition | method | U-Net calls / image | judge mIoU | vs teacher (points) [95 % CI] | judge FD "
          "(not FID) | s / image | less wall time than the authors |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "judge_miou" in row:
            delta = 100 * (row["judge_miou"] - teacher[row["condition"]]["judge_miou"])
            ci = row.get("difference_to_teacher_ci95")
            versus = f"{delta:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")
            quality = f"{row['judge_miou']:.3f} | {versus} | {row['judge_fd']:.2f}"
        else:
            quality = f"n/a | {row['note']} | n/a"
        print(f"| {row['condition']} | {row['method']} | {row['unet_calls_per_image']} | {quality} | "
              f"{row['seconds_per_image']:.3f} | {row['wall_time_ratio_to_authors']:.0f}x |")


if __name__ == "__main__":
    main()
