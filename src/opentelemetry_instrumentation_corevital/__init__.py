"""OpenTelemetry instrumentation for Hugging Face transformers generation, with CoreVital health.

Usage::

    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    CoreVitalInstrumentor().instrument(capture_mode="summary")

or, with no code change, ``opentelemetry-instrument python app.py``.

The public names are imported on first use (PEP 562): importing the package, or a torch-free
part of it such as the store or the command line's `runs` and `report`, does not import
torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:
    from .instrumentor import CoreVitalInstrumentor
    from .live import CoreVitalStoppingCriteria, StepSummary, observe, stream_health
    from .rag import RagContext

#: public name -> the module that defines it
_PUBLIC = {
    "CoreVitalInstrumentor": ".instrumentor",
    "CoreVitalStoppingCriteria": ".live",
    "RagContext": ".rag",
    "StepSummary": ".live",
    "observe": ".live",
    "stream_health": ".live",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
