"""What every quality filter shares: the measure-then-decide interface and text helpers.

A filter never counts, writes or orders anything (that lives once in `shard.py`). It may
rewrite a document (`transform`, e.g. C4's line removal), then measures it (`signals`: named
values, stored per document as attributes) and decides from those measurements alone
(`decide`: a prefixed reason such as `gopher_short_doc`, or None to keep). Because `decide`
sees nothing but the signals, thresholds can be re-tuned from stored attributes without
measuring again. Most decisions are a table of `Rule`s checked in order; the first rule that
trips wins, as in datatrove, so each removed document carries exactly one reason.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

Document = dict[str, Any]  # one row of DOCUMENT_SCHEMA
Signals = dict[str, float | str]  # floats, except a filter's declared `label_signals`

# Words and sentences are counted as datatrove counts them: see `words.py`.


def text_of(doc: Document) -> str:
    """The document's text; a null `text` column reads as empty, never a crash."""
    return doc.get("text") or ""


def find_duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, their total characters): Gopher's measure.

    Every item but each distinct one's first occurrence repeats, so both are totals minus
    the distinct items' (set and sum work in C, no per-item Python loop).
    """
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


class StepConfig(BaseModel):
    """Base of every filter's config: one switch plus thresholds (each None disables it).

    `signal_fields` names the fields that change what `transform`/`signals` compute; all other
    fields only change `decide`, so stored signals stay valid when they change.
    """

    model_config = ConfigDict(extra="forbid")
    signal_fields: ClassVar[tuple[str, ...]] = ()

    enabled: bool = True

    def signals_key(self) -> dict[str, Any]:
        """The settings that determine this filter's signals (JSON-serialisable)."""
        return {name: getattr(self, name) for name in self.signal_fields}


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Rule:
    """Drop the document with `reason` when `signals[signal] <op> config.<threshold>`.

    A rule does not apply when its threshold is None (disabled) or its signal is missing (not
    measurable on this text, e.g. mean word length of an empty document).
    """

    signal: str
    op: Literal["<", "<=", ">", ">="]
    threshold: str  # name of the config field holding the threshold
    reason: str

    def check(self, signals: Signals, config: BaseModel) -> str | None:
        limit = getattr(config, self.threshold)
        value = signals.get(self.signal)
        if limit is None or value is None:
            return None
        return self.reason if _OPS[self.op](float(value), limit) else None


class DocumentFilter:
    """One filter: `transform` (optional), then `signals`, then `decide`; `finish` on kept ones."""

    name: ClassVar[str]  # the FilterConfig field this filter is configured by
    signal_names: ClassVar[tuple[str, ...]]  # every key `signals` may return (attribute columns)
    label_signals: ClassVar[frozenset[str]] = frozenset()  # signals that are strings, not floats
    counted: ClassVar[tuple[str, ...]] = ()  # signals summed over kept documents into the counts
    can_drop: ClassVar[bool] = True  # False for a pure rewrite (PII)
    rules: ClassVar[tuple[Rule, ...]] = ()

    def __init__(self, config: StepConfig):
        self.config = config

    def transform(self, doc: Document) -> Document:
        """Rewrite the document before it is measured; most filters leave it unchanged."""
        return doc

    def signals(self, doc: Document) -> Signals:
        raise NotImplementedError

    def finish(self, doc: Document) -> Document:
        """Rewrite a document that every filter kept, on its way out (PII redaction)."""
        return doc

    def decide(self, signals: Signals) -> str | None:
        for rule in self.rules:
            reason = rule.check(signals, self.config)
            if reason is not None:
                return reason
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
