"""Config files for training scripts: a YAML/JSON mapping whose keys are the script's flag names.

``--config preset.yaml`` supplies defaults; flags given on the command line override them. The file is turned into
command-line tokens placed *before* the user's arguments and everything goes through the same ``argparse`` parser,
so config values get exactly the flags' types, ``choices`` and ``nargs`` checks (a typo in a key or a value is an
error naming it, not a silently ignored setting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

__all__ = ["config_to_argv", "load_config_file", "parse_args_with_config"]


def load_config_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a ``.yaml``/``.yml`` or ``.json`` file holding one mapping of flag names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file must be .yaml, .yml or .json, got {path.name}")
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
