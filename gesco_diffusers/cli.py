"""The ``gesco`` command line (also ``python -m gesco_diffusers``).

Subcommands: ``transmit`` (the whole chain on one map), ``convert`` (the authors' checkpoints), ``publish`` (a
pipeline folder to the Hub), ``map-level`` (the FDS/channel experiment that needs no model), ``evaluate`` (the
paper's KPIs over channel conditions), ``generate`` (images for a folder of label maps), ``demo`` (the Gradio app).
Errors are reported in one line with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from typing import Callable, Optional, Sequence


#: One line per subcommand, for ``gesco --help``.
HELP = {
    "transmit": "send a label map over a channel and regenerate the image",
    "convert": "convert an official GESCO/SDM checkpoint to a GescoPipeline folder",
    "publish": "upload a GescoPipeline folder with its model card to the Hub",
    "map-level": "map mIoU with and without FDS over channels (no model needed)",
    "evaluate": "generate and score images over channel conditions (Tables I-VIII)",
    "generate": "regenerate images for a folder of label maps (resumable, shards under torchrun/accelerate)",
    "demo": "serve the Gradio demo app (transmit a map, sweep PSNR) on the shipped models; needs the [demo] extra",
}


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


#: Each subcommand's module (relative to this package) and the names of its argument builder and runner. The module is
#: imported only for the command being run, so ``gesco --help`` loads no torch. A runner returns the exit status, or
#: a result (``map-level``'s rows), which means success.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "transmit": (".transmit", "add_arguments", "run"),
    "convert": (".convert.cli", "build_parser", "run"),
    "publish": (".hub", "build_parser", "run"),
    # (its own arguments on the subparser: an argparse.REMAINDER positional never saw leading options)
    "map-level": (".experiments.map_level", "build_parser", "run"),
    "evaluate": (".evaluation.cli", "build_parser", "run"),
    "generate": (".generate", "add_arguments", "run"),
    "demo": (".demo.cli", "add_arguments", "run"),  # light: gradio and torch load when the command runs
}


def _add_subcommand(sub, name: str) -> Callable:
    """Give ``name``'s subparser its arguments; return its runner."""
    module_name, add_arguments, run = SUBCOMMANDS[name]
    module = importlib.import_module(module_name, __package__)
    getattr(module, add_arguments)(sub.add_parser(name, help=HELP[name]))
    return getattr(module, run)


def build_parser(command: Optional[str] = None) -> tuple[argparse.ArgumentParser, dict]:
    """The ``gesco`` parser. Only ``command``'s subparser gets its arguments (which imports its implementation, and
    so torch); the others are listed by name and help, so ``gesco --help`` imports nothing heavy."""
    parser = _OneLineParser(prog="gesco", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    runners = {}
    for name in SUBCOMMANDS:
        if name == command:
            runners[name] = _add_subcommand(sub, name)
        else:
            sub.add_parser(name, help=HELP[name], add_help=False)
    return parser, runners


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """Our warnings (a photo given as a label map, a tiny map upscaled) as one line each, like the errors."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"gesco {command}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one ``gesco`` command; return its exit status: 0, 1 (an error, reported in one line on stderr), 2 (a usage
    error) or 130 (interrupted, e.g. Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser, runners = build_parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (one line, see _OneLineParser) and --help
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    try:
        with _one_line_warnings(args.command):
            status = runners[args.command](args)
            return status if isinstance(status, int) else 0
    except KeyboardInterrupt:
        print(f"gesco {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError, OSError, RuntimeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"gesco {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
