"""Config files for training scripts: a YAML/JSON mapping whose keys are the script's flag names.

``--config preset.yaml`` supplies defaults; flags given on the command line override them. The file is turned into
command-line tokens placed *before* the user's arguments and everything goes through the same ``argparse`` parser,
so config values get exactly the flags' types, ``choices`` and ``nargs`` checks (a typo in a key or a value is an
error naming it, not a silently ignored setting).

The scripts' parsers report usage errors in one line (:class:`OneLineArgumentParser`), their numeric flags are
range-checked while parsing (:func:`check_range`: NaN, inf, 0 or -1 where they mean nothing), and :func:`run_script`
turns an argument error into one line ``<script>: error: <message>`` without a traceback, as the ``gesco`` commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from typing import Any, Callable, Optional, Sequence, Union

from ..utils.files import existing_file

__all__ = [
    "OneLineArgumentParser",
    "check_range",
    "config_to_argv",
    "input_checks",
    "load_config_file",
    "parse_args_with_config",
    "run_script",
]


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse`` with its usage errors in one line, ``<prog>: error: <message>`` (exit status 2), as ``gesco``."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def check_range(args: argparse.Namespace, name: str, low: Optional[float] = None, high: Optional[float] = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """``--name`` (when given; a list: each of its values) must be a finite number (an int flag: an integer) within
    ``low``/``high`` (inclusive unless ``low_open``/``high_open``); else a one-line ``ValueError`` naming the flag."""
    value = getattr(args, name)
    if value is None:
        return
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if not (math.isfinite(v) and (low is None or (v > low if low_open else v >= low))
                and (high is None or (v < high if high_open else v <= high))):
            show = lambda x: str(x) if isinstance(x, int) else f"{x:g}"  # noqa: E731
            bounds = [f"{'>' if low_open else '>='} {show(low)}"] if low is not None else []
            bounds += [f"{'<' if high_open else '<='} {show(high)}"] if high is not None else []
            kind = "an integer" if isinstance(v, int) else "a finite number"
            raise ValueError(f"--{name} must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, got {value}")


INPUT_ERRORS = (ValueError, TypeError, OSError)


@contextlib.contextmanager
def input_checks():
    """Inside, a ``ValueError``/``TypeError``/``OSError`` is a problem with the user's inputs (a teacher folder that is
    not one, an output folder holding another run, data that make no batch) found by ``main`` before any work:
    :func:`run_script` reports it in one line, like an argument error. The exception itself is unchanged."""
    try:
        yield
    except INPUT_ERRORS as err:
        err.gesco_input_error = True
        raise


def _one_line(prog: str, err: BaseException) -> int:
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def run_script(prog: str, parse_args: Callable[[Optional[Sequence[str]]], Any], main: Callable[[Any], Any],
               argv: Optional[Sequence[str]] = None) -> int:
    """A training script's entry point: ``main(parse_args(argv))``; returns the exit status.

    An argument error is one line on stderr, ``<prog>: error: <message>``, without a traceback: argparse's own
    (status 2, see :class:`OneLineArgumentParser`), those ``parse_args`` raises while checking the values, files
    and folders, and those ``main`` raises inside :func:`input_checks` (``ValueError``, ``TypeError``, ``OSError``:
    status 1). Errors of the run itself keep their traceback.
    """
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # argparse: a usage error (already printed in one line) or --help
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except INPUT_ERRORS as err:
        return _one_line(prog, err)
    try:
        main(args)
    except INPUT_ERRORS as err:
        if not getattr(err, "gesco_input_error", False):
            raise
        return _one_line(prog, err)
    return 0


def load_config_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a ``.yaml``/``.yml`` or ``.json`` file holding one mapping of flag names to values."""
    path = existing_file(path, "config file", "the .yaml or .json file")
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"config file must be .yaml, .yml or .json, got {path.name}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not a text file ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:  # truncated or not JSON: name the file
            raise ValueError(f"config file {path} is not valid JSON ({err})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config must be a mapping of flag names to values, got {type(data).__name__}")
    return data


def _actions_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def config_to_argv(parser: argparse.ArgumentParser, config: dict[str, Any], source: str = "config") -> list[str]:
    """Command-line tokens equivalent to ``config`` for ``parser`` (``None`` values are skipped)."""
    actions = _actions_by_dest(parser)
    unknown = sorted(k for k in config if k.replace("-", "_") not in actions)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys are the flag names: {sorted(actions)}")
    argv: list[str] = []
    for key, value in config.items():
        action = actions[key.replace("-", "_")]
        if value is None:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {key} must be true or false, got {value!r}")
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {key} must be true or false, got {value!r}")
            if value == isinstance(action, argparse._StoreTrueAction):
                argv.append(flag)
        elif isinstance(value, (list, tuple)):
            if action.nargs in (None, "?"):
                raise ValueError(f"{source}: {key} takes one value, got the list {value!r}")
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def parse_args_with_config(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None, config_flag: str = "--config"
) -> argparse.Namespace:
    """Parse ``argv``, first expanding the file given by ``config_flag`` (if any) into defaults that ``argv`` overrides.

    ``parser`` must define ``config_flag``; the parsed namespace keeps the config path.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(config_flag, default=None)
    known, _ = pre.parse_known_args(argv)
    path = getattr(known, config_flag.lstrip("-").replace("-", "_"))
    if path is None:
        return parser.parse_args(argv)
    prefix = config_to_argv(parser, load_config_file(path), source=str(path))
    return parser.parse_args(prefix + list(sys.argv[1:] if argv is None else argv))
