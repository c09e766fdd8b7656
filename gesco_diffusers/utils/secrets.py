"""Keep credentials out of everything this package writes: model cards, configs, tracker hyper-parameters, logs.

Training arguments are copied into several places (the tensorboard/wandb run config, the model card's training table,
the judge's ``training_log.json``). A run launched with ``--hub_token`` or ``--wandb_api_key`` must not publish it:
:func:`redact_secrets` is the one filter all of them apply.

A key is secret when one of the words of its name (split at ``_``, ``-``, ``.``, spaces and camelCase) is a token,
key, secret, password, auth or credential word, or when its lower-cased name contains ``token``, ``secret``,
``password``, ``passwd``, ``credential`` or ``apikey`` (``hftoken``, ``HFToken``); ``key`` and ``auth`` count as
whole words only, so ``keep_checkpoint`` or ``author`` stay. A string value that looks like a Hugging Face token
(``hf_`` and 30+ letters/digits) is redacted whatever its key.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["REDACTED", "is_secret_key", "redact_secrets"]

REDACTED = "[redacted]"  # plain text in Markdown tables (an HTML-like "<redacted>" would render as nothing)
_SECRET_WORDS = {"token", "tokens", "key", "keys", "apikey", "secret", "secrets", "password", "passwords", "passwd",
                 "pwd", "passphrase", "auth", "authorization", "credential", "credentials"}
_SECRET_SUBSTRINGS = ("token", "secret", "password", "passwd", "credential", "apikey")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


def is_secret_key(name: Any) -> bool:
    """Whether a mapping key names a credential (see the module docstring)."""
    if not isinstance(name, str):
        return False
    words = {word.lower() for word in _WORDS.findall(name)}
    return bool(words & _SECRET_WORDS) or any(part in name.lower() for part in _SECRET_SUBSTRINGS)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) and v is not None else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact(v) for v in value)
    if isinstance(value, str) and _HF_TOKEN.search(value):
        return _HF_TOKEN.sub(REDACTED, value)
    return value


def redact_secrets(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``mapping`` (nested mappings and lists included) with every secret value replaced by
    :data:`REDACTED`; ``None`` values stay ``None`` (no secret was given)."""
    return _redact(dict(mapping))
