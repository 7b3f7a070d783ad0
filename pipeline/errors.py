"""The project's errors: each says in one line what is wrong and names the culprit.

This module imports nothing else of the project, so every layer (stages, store, model,
flows) can raise and catch the same types without importing each other.
"""

from __future__ import annotations


class DataError(Exception):
    """Bad input (missing, unreadable or corrupt file, bad value): one line naming the culprit."""


class ConfigError(DataError):
    """A bad configuration value or key."""


class EmptyStageError(Exception):
    """A stage kept no documents: the flow fails naming the stage and why documents went."""

    def __init__(self, stage: str, drops: dict[str, int]):
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1]))
        super().__init__(f"stage '{stage}' kept 0 documents (drops: {reasons or 'none'})")
        self.stage = stage
        self.drops = drops
