"""``gesco evaluate``: the paper's evaluation (Sec. IV) of a pipeline over a grid of channel conditions, from the
command line (:func:`~gesco_diffusers.evaluation.evaluator.evaluate` does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["build_parser", "main", "run"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``gesco evaluate`` arguments (on ``parser`` if given)."""
    from ..channel import CHANNEL_REGISTRY
    from ..diffusion import SAMPLERS
    from .protocol import DEFAULT_IMAGE_QUALITIES, FDS_MODES, PAPER_PSNRS
    from .reports import PAPER_FDS_MODES

    parser = parser or argparse.ArgumentParser(
        prog="gesco evaluate", description="Generate and score images over channel conditions (paper Sec. IV).")
    parser.add_argument("--model", help="GescoPipeline folder, Hub id, or a shipped model: demo or fast "
                                        "(default: the shipped CamVid demo model)")
    parser.add_argument("--dataset", help="dataset preset/layout (default: the model's)")
    parser.add_argument("--data-dir", help="dataset folder, e.g. .../camvid with {split}/images and {split}/labels "
                                           "(default: the 4 CamVid val samples shipped with the package)")
    parser.add_argument("--dataset-name", help="instead of --data-dir: a Hub id or a save_to_disk folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="evaluate the first N maps only")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="generation size (default: model's)")
    parser.add_argument("--channels", nargs="+", default=["awgn"], choices=sorted(CHANNEL_REGISTRY))
    parser.add_argument("--psnrs", type=float, nargs="+", default=list(PAPER_PSNRS), help="PSNRs in dB (Eq. 15)")
    parser.add_argument("--ebn0s", type=float, nargs="+", default=[], help="Eb/N0 values in dB for --channels digital")
    parser.add_argument("--fds", nargs="+", default=list(PAPER_FDS_MODES), choices=FDS_MODES,
                        help="receiver arms: paper (Eq. 1), none, adaptive, learned (the trained map denoiser of "
                             "Table IX, see --denoiser) (default: paper none)")
    parser.add_argument("--denoiser", help="MapDenoiser folder of --fds learned (default: the shipped CamVid one)")
    parser.add_argument("--baselines", nargs="+", default=[], choices=("deepjscc",),
                        help="comparison systems run at every analog condition: deepjscc (Fig. 10)")
    parser.add_argument("--deepjscc-models", nargs="+", default=None,
                        help="DeepJSCC folders or shipped names for --baselines deepjscc (default: the shipped "
                             "deepjscc-r1_48, deepjscc-r1_4 and deepjscc-r1_2)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own)")
    parser.add_argument("--sampler", default="default", choices=("default",) + tuple(SAMPLERS))
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale s (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="item i is sampled with seed + i")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--out", default="outputs/evaluate", help="output folder (reruns resume)")
    parser.add_argument("--judge", help="segmentation judge folder (default: the shipped CamVid judge)")
    parser.add_argument("--lpips-weights", help="torchvision weights of the LPIPS backbone (default: torch hub cache)")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"))
    parser.add_argument("--fid-weights", help="FID Inception weights file (default: torch hub cache; else no FID)")
    parser.add_argument("--detector", help="DETR folder for the detection mAP of Table V")
    parser.add_argument("--depth-model", help="DPT folder for the depth RMSE of Table V")
    parser.add_argument("--ablation-model", help="the same model trained without noisy maps (Table VIII)")
    parser.add_argument("--table-psnr", type=float, default=10.0, help="PSNR of Tables V, VI, VIII")
    parser.add_argument("--psnr-convention", choices=("paper", "official_table"), default=None,
                        help="PSNR -> noise level of the model's runs: paper (Eq. 15) or official_table (the authors' "
                             "table, AWGN only); default: the one stored with the model (converted: official_table)")
    parser.add_argument("--image-codec", default="hevc", help="lossy codec of the full-image baseline ('none': off)")
    parser.add_argument("--image-quality", type=int, default=None, help="its quality (default: the codec's)")
    parser.add_argument("--image-qualities", type=int, nargs="+", default=list(DEFAULT_IMAGE_QUALITIES),
                        help="qualities of the full-image curve of Fig. 7")
    parser.add_argument("--map-codec", default="hevc-lossless", help="lossless map codec of Fig. 7")
    parser.add_argument("--no-rate-distortion", action="store_true", help="skip the noiseless runs of Fig. 7")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def run(args: argparse.Namespace) -> int:
    """``gesco evaluate``: evaluate, write the report, print the tables and where everything went."""
    from accelerate import PartialState

    from ..receiver import LEARNED_RECEIVER
    from ..shipped import DEFAULT_DEEPJSCC, DEFAULT_DENOISER, required_model
    from .evaluator import EvaluationSettings, evaluate
    from .protocol import channel_grid
    from .reports import tables_markdown
    from .scoring import ScoringNetworks

    model = required_model(args.model)
    if args.deepjscc_models is not None and "deepjscc" not in args.baselines:
        raise ValueError("--deepjscc-models is for --baselines deepjscc")
    deepjscc = (args.deepjscc_models or list(DEFAULT_DEEPJSCC)) if "deepjscc" in args.baselines else []
    if args.denoiser is not None and LEARNED_RECEIVER not in args.fds:
        raise ValueError(f"--denoiser is the receiver of --fds {LEARNED_RECEIVER}: add it to --fds")
    denoiser = (args.denoiser or DEFAULT_DENOISER) if LEARNED_RECEIVER in args.fds else None
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    settings = EvaluationSettings(
        dataset=args.dataset, split=args.split, conditions=channel_grid(args.channels, args.psnrs, args.ebn0s),
        data_dir=args.data_dir, dataset_name=args.dataset_name, fds=args.fds, out_dir=args.out, limit=args.limit,
        size=args.size, num_inference_steps=args.steps, guidance_scale=args.guidance,
        sampler=None if args.sampler == "default" else args.sampler, seed=args.seed, batch_size=args.batch_size,
        device=args.device, table_psnr=args.table_psnr,
        image_codec=None if args.image_codec == "none" else args.image_codec, image_quality=args.image_quality,
        image_qualities=args.image_qualities, map_codec=args.map_codec, rate_distortion=not args.no_rate_distortion,
        psnr_convention=args.psnr_convention, deepjscc=deepjscc, denoiser=denoiser,
    )
    networks = ScoringNetworks(
        judge=args.judge or "default", lpips=args.lpips_weights or "default", lpips_net=args.lpips_net,
        fid=args.fid_weights or "default", detector=args.detector, depth_model=args.depth_model,
    )
    report = evaluate(model, settings, networks=networks, ablation_pipeline=args.ablation_model, log=log)
    if not PartialState().is_main_process:  # (evaluate built the state) one process prints
        return 0
    print(tables_markdown(report))
    print(f"results: {Path(args.out) / 'results.json'}, tables: {Path(args.out) / 'tables.md'}, "
          f"plots: {Path(args.out) / 'plots'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    return run(build_parser().parse_args(argv))
