"""The ``gesco`` command line (also ``python -m gesco_diffusers``).

Subcommands: ``transmit`` (the whole chain on one map), ``convert`` (the authors' checkpoints), ``publish`` (a
pipeline folder to the Hub), ``map-level`` (the FDS/channel experiment that needs no model), ``evaluate`` (the
paper's KPIs over channel conditions), ``generate`` (images for a folder of label maps), ``demo`` (the Gradio app).
Errors are reported in one line with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _transmit(sub) -> Callable:
    from . import transmit

    parser = sub.add_parser("transmit", help=HELP["transmit"])
    transmit.add_arguments(parser)
    return transmit.run


def _convert(sub) -> Callable:
    from .convert import cli

    parser = sub.add_parser("convert", help=HELP["convert"])
    cli.build_parser(parser)
    return cli.run


def _publish(sub) -> Callable:
    from . import hub

    parser = sub.add_parser("publish", help=HELP["publish"])
    hub.build_parser(parser)
    return hub.run


def _map_level(sub) -> Callable:
    from .experiments import map_level

    # The experiment's own arguments on the subparser (an argparse.REMAINDER positional never saw leading options:
    # `gesco map-level --dataset camvid` was rejected).
    parser = sub.add_parser("map-level", help=HELP["map-level"])
    map_level.build_parser(parser)

    def run(args):
        map_level.run(args)
        return 0

    return run


def _evaluate(sub) -> Callable:
    # (the package exports the function `evaluate`, which hides the module of the same name: import from the module)
    from .evaluation.cli import build_parser, run

    parser = sub.add_parser("evaluate", help=HELP["evaluate"])
    build_parser(parser)
    return run


def _generate(sub) -> Callable:
    from . import generate

    parser = sub.add_parser("generate", help=HELP["generate"])
    generate.add_arguments(parser)
    return generate.run


def _demo(sub) -> Callable:
    from .demo import cli  # light: gradio and torch load when the command runs

    parser = sub.add_parser("demo", help=HELP["demo"])
    cli.add_arguments(parser)
    return cli.run


SUBCOMMANDS = {"transmit": _transmit, "convert": _convert, "publish": _publish, "map-level": _map_level,
               "evaluate": _evaluate, "generate": _generate, "demo": _demo}


def build_parser(command: Optional[str] = None) -> tuple[argparse.ArgumentParser, dict]:
    """The ``gesco`` parser. Only ``command``'s subparser gets its arguments (which imports its implementation, and
    so torch); the others are listed by name and help, so ``gesco --help`` imports nothing heavy."""
    parser = _OneLineParser(prog="gesco", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    runners = {}
    for name, make in SUBCOMMANDS.items():
        if name == command:
            runners[name] = make(sub)
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
            return int(runners[args.command](args) or 0)
    except KeyboardInterrupt:
        print(f"gesco {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError, OSError, RuntimeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"gesco {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
