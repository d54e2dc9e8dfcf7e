"""OpenTelemetry instrumentation for Hugging Face transformers generation, with CoreVital health.

Usage::

    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    CoreVitalInstrumentor().instrument(capture_mode="summary")

or, with no code change, ``opentelemetry-instrument python app.py``.
"""

from __future__ import annotations

from typing import Collection

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from opentelemetry.semconv.schemas import Schemas
from wrapt import wrap_function_wrapper

from .capture import decoding_loop
from .config import Settings
from .handler import GenerationHandler
from .live import CoreVitalStoppingCriteria, StepSummary, observe, stream_health
from .package import _instruments
from .rag import RagContext
from .telemetry.metrics import Instruments
from .version import __version__

__all__ = [
    "CoreVitalInstrumentor",
    "CoreVitalStoppingCriteria",
    "RagContext",
    "StepSummary",
    "__version__",
    "observe",
    "stream_health",
]

_GENERATE_MODULE = "transformers.generation.utils"
_GENERATE_NAME = "GenerationMixin.generate"


def _generate_wrapper(handler: GenerationHandler):
    def wrapper(wrapped, instance, args, kwargs):
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        return handler.generate(wrapped, instance, args, kwargs)

    return wrapper


class CoreVitalInstrumentor(BaseInstrumentor):
    """Traces every `generate` call of a transformers model and records its internal health."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs):
        tracer_provider = kwargs.pop("tracer_provider", None)
        meter_provider = kwargs.pop("meter_provider", None)
        on_step = kwargs.pop("on_step", None)
        if on_step is not None and not callable(on_step):
            raise TypeError(f"on_step must be a callable taking a StepSummary, got {type(on_step).__name__}")
        settings = Settings.resolve(kwargs)
        schema_url = Schemas.V1_37_0.value
        tracer = trace.get_tracer(__name__, __version__, tracer_provider, schema_url=schema_url)
        meter = metrics.get_meter(__name__, __version__, meter_provider, schema_url=schema_url)
        handler = GenerationHandler(tracer, Instruments.create(meter), settings, on_step=on_step)
        from transformers.generation.utils import GenerationMixin  # noqa: F401  (import before wrapping)

        wrap_function_wrapper(_GENERATE_MODULE, _GENERATE_NAME, _generate_wrapper(handler))
        decoding_loop.install()

    def _uninstrument(self, **kwargs):
        from transformers.generation.utils import GenerationMixin

        unwrap(GenerationMixin, "generate")
        decoding_loop.uninstall()
