"""Console logging for the CLI: bad input reads as one line, not a traceback.

Prefect logs a failing run's traceback to the console and to the API. For known bad-input
errors the CLI prints one line naming the problem, so the console copy is dropped; the
Prefect UI still shows the full traceback for whoever wants it.
"""

from __future__ import annotations

import logging

from pipeline.errors import DataError, EmptyStageError

KNOWN_ERRORS = (DataError, EmptyStageError)


class HideKnownTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (*KNOWN_ERRORS, KeyboardInterrupt)):
            return False
        # Ctrl-C: the CLI says "interrupted" in one line; Prefect's "Crash detected!" would not
        return "KeyboardInterrupt" not in record.getMessage()


def quiet_known_tracebacks() -> None:
    """Attach the filter to Prefect's console handlers (call after importing prefect)."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, HideKnownTracebacks) for f in handler.filters
        ):
            handler.addFilter(HideKnownTracebacks())
