"""Local run store: CoreVital spans in SQLite, listed and compared without a backend.

The names below are imported on first use (PEP 562), so the command line can read the
store's constants (`DEFAULT_DB_PATH`, ...) without loading the report model or the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exporter import DB_PATH_ENV, SQLiteSpanExporter
    from .runs import ModelComparison, RunFilter, RunStore
    from .schema import DEFAULT_DB_PATH, SCHEMA_VERSION, StoreError, StoreLockedError, UnknownRunError

#: public name -> the module that defines it
_PUBLIC = {
    "DB_PATH_ENV": ".exporter",
    "SQLiteSpanExporter": ".exporter",
    "ModelComparison": ".runs",
    "RunFilter": ".runs",
    "RunStore": ".runs",
    "DEFAULT_DB_PATH": ".schema",
    "SCHEMA_VERSION": ".schema",
    "StoreError": ".schema",
    "StoreLockedError": ".schema",
    "UnknownRunError": ".schema",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
