"""`--set key=value` overrides, parsed one way for every command: `llmforge` (pipeline/config.py)
and `python -m model.train_cli`. Imports nothing of the project but its errors, so the model's
command line can use it without importing the pipeline's configuration.
"""

from __future__ import annotations

import tomllib
from typing import Any

from pipeline.errors import ConfigError


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, booleans, lists, quoted strings), else a bare string.

    `none`/`null` give None (TOML has no null), which switches a threshold off.
    """
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"config error: --set {assignment!r}: expected key=value")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(raw.strip())
