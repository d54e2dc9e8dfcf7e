"""`SQLiteSpanExporter`: an OpenTelemetry SpanExporter that keeps CoreVital runs in SQLite.

    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry_instrumentation_corevital.store import SQLiteSpanExporter

    tracer_provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter("corevital.db")))

Only CoreVital spans (from this instrumentation) are kept; other spans are skipped. Each
batch is written in one transaction, so a run is either stored whole or not at all; several
processes may export into the same file at once. A failure (locked or corrupt file) is
logged once per cause and reported to the SDK as FAILURE; it never reaches the application.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .runs import RunStore
from .schema import BUSY_TIMEOUT_S, DEFAULT_DB_PATH, StoreError

_logger = logging.getLogger(__name__)

#: environment variable naming the store file when no path is passed
DB_PATH_ENV = "OTEL_EXPORTER_COREVITAL_SQLITE_PATH"


class SQLiteSpanExporter(SpanExporter):
    """`path`: the SQLite file (default: $OTEL_EXPORTER_COREVITAL_SQLITE_PATH, else ./corevital.db);
    `timeout_s`: how long one export waits for another writer before it fails."""

    def __init__(self, path: str | os.PathLike | None = None, timeout_s: float = BUSY_TIMEOUT_S):
        self._store = RunStore(Path(path or os.environ.get(DB_PATH_ENV) or DEFAULT_DB_PATH), timeout_s)
        self._logged: set[str] = set()
        self._shut_down = False

    @property
    def path(self) -> Path:
        return self._store.path

    def export(self, spans: Sequence) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        try:
            self._store.add_spans(spans)
        except StoreError as exc:
            self._log_once(str(exc))
            return SpanExportResult.FAILURE
        except Exception as exc:  # a span we cannot read must not break the SDK's worker
            self._log_once(f"cannot store spans: {type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shut_down = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is committed before it returns

    def _log_once(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            _logger.warning("corevital SQLite exporter: %s", message)
