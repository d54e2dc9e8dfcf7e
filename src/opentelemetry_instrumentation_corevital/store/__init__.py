"""Local run store: CoreVital spans in SQLite, listed and compared without a backend."""

from .exporter import DB_PATH_ENV, SQLiteSpanExporter
from .runs import ModelComparison, RunFilter, RunStore
from .schema import DEFAULT_DB_PATH, SCHEMA_VERSION, StoreError, StoreLockedError, UnknownRunError

__all__ = [
    "DB_PATH_ENV",
    "DEFAULT_DB_PATH",
    "ModelComparison",
    "RunFilter",
    "RunStore",
    "SCHEMA_VERSION",
    "SQLiteSpanExporter",
    "StoreError",
    "StoreLockedError",
    "UnknownRunError",
]
