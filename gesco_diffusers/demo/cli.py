"""``gesco demo``: serve the Gradio app (:mod:`gesco_diffusers.demo.app`) on a local address.

Light to import: gradio and torch load only when the command runs, so ``gesco demo --help`` stays fast and works
without the ``[demo]`` extra.
"""

from __future__ import annotations

import argparse
import os

from ..shipped import DEFAULT_MODEL, SHIPPED_MODELS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (needs the Internet; off by default)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model selected at start: a shipped one {sorted(SHIPPED_MODELS)} or a GescoPipeline "
                             f"folder (added to the choices); default: {DEFAULT_MODEL}")
    parser.add_argument("--device", default=None, help="where the pipelines run (default: cuda when available)")
    parser.add_argument("--write-space", metavar="DIR", default=None,
                        help="instead of serving: write a Hugging Face Space (app.py, README.md with the Space "
                             "header, requirements.txt) into DIR, e.g. a clone of the Space's repository")
    parser.add_argument("--overwrite", action="store_true", help="--write-space: replace those files if present")


def check_arguments(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    from ..shipped import resolve_model

    resolve_model(args.model)  # a shipped model that is not installed: an error before the server starts
    if args.model not in SHIPPED_MODELS:  # a folder: checked now, not when the first visitor clicks
        if not os.path.isdir(args.model):
            raise FileNotFoundError(f"--model {args.model!r} is neither a shipped model {sorted(SHIPPED_MODELS)} nor a "
                                    "pipeline folder")
        if not os.path.isfile(os.path.join(args.model, "model_index.json")):
            raise FileNotFoundError(f"--model {args.model!r} has no model_index.json: not a GescoPipeline folder")
        from .core import model_preset

        model_preset(args.model)  # its configuration files must be readable and store a dataset


def run(args: argparse.Namespace) -> int:
    if args.write_space is not None:
        from .space import write_space

        for path in write_space(args.write_space, overwrite=args.overwrite):
            print(f"wrote {path}")
        return 0
    check_arguments(args)
    from .app import build_demo  # gradio and torch, only now

    demo = build_demo(model=args.model, device=args.device)
    print(f"gesco demo: serving on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                        quiet=True)
    return 0
