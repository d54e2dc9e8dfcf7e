"""`CoreVitalInstrumentor`: wraps transformers' `generate` so each call becomes a CoreVital span.

Imports transformers (through the capture engine) when this module loads: the package's
`__init__` reaches it lazily, so tools that never run a model do not pay for it.
"""

from __future__ import annotations

from typing import Collection

from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from opentelemetry.semconv.schemas import Schemas
from wrapt import wrap_function_wrapper

from .capture import decoding_loop
from .config import Settings
from .handler import GenerationHandler
from .package import _instruments
from .telemetry.metrics import Instruments
from .tokenizer_source import install_pipeline_hook, uninstall_pipeline_hook
from .version import __version__

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
        logger_provider = kwargs.pop("logger_provider", None)  # for the log-based GenAI events
        tokenizer = kwargs.pop("tokenizer", None)  # decodes content when the call itself has none
        on_step = kwargs.pop("on_step", None)
        if on_step is not None and not callable(on_step):
            raise TypeError(f"on_step must be a callable taking a StepSummary, got {type(on_step).__name__}")
        settings = Settings.resolve(kwargs)
        if tokenizer is not None and not callable(getattr(tokenizer, "decode", None)):
            raise TypeError(f"tokenizer must be a transformers tokenizer (with decode), got {type(tokenizer).__name__}")
        # the GenAI conventions this package follows: semconv v1.41.1 (evaluation events,
        # gen_ai.provider.name, gen_ai.response.time_to_first_chunk)
        schema_url = Schemas.V1_41_1.value
        tracer = trace.get_tracer(__package__, __version__, tracer_provider, schema_url=schema_url)
        meter = metrics.get_meter(__package__, __version__, meter_provider, schema_url=schema_url)
        event_logger = _logs.get_logger(__package__, __version__, logger_provider, schema_url=schema_url)
        handler = GenerationHandler(
            tracer, Instruments.create(meter), settings, on_step=on_step, event_logger=event_logger, tokenizer=tokenizer
        )
        from transformers.generation.utils import GenerationMixin  # noqa: F401  (import before wrapping)

        wrap_function_wrapper(_GENERATE_MODULE, _GENERATE_NAME, _generate_wrapper(handler))
        install_pipeline_hook()
        decoding_loop.install()

    def _uninstrument(self, **kwargs):
        from transformers.generation.utils import GenerationMixin

        unwrap(GenerationMixin, "generate")
        uninstall_pipeline_hook()
        decoding_loop.uninstall()
