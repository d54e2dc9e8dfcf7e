"""The OpenTelemetry SDK set-up of `corevital run`.

Spans always go to an in-memory exporter (the terminal report and the local store read them
from there). OTLP export is added when the standard variables ask for it: an
`OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT`, or `OTEL_TRACES_EXPORTER` /
`OTEL_METRICS_EXPORTER` naming `otlp`; `none` switches a signal off. The protocol follows
`OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL` (`http/protobuf` by default, or `grpc`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ..store.records import PROMPT_TEXT_HASH, SCOPE_NAME
from .errors import CliError

DEFAULT_SERVICE_NAME = "corevital-cli"
_OTLP_HINT = "pip install 'opentelemetry-instrumentation-corevital[otlp]'"


class RecordingExporter(SpanExporter):
    """Delegates to the OTLP exporter and remembers whether every export succeeded."""

    def __init__(self, exporter: SpanExporter):
        self.exporter = exporter
        self.exported = 0
        self.failed = False

    def export(self, spans):
        result = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed = True
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: InMemorySpanExporter
    otlp: RecordingExporter | None

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()  # flushes the OTLP batch before the process exits
        self.meter_provider.shutdown()

    def otlp_outcome(self) -> tuple[bool, str] | None:
        """(ok, one-line message) about the span export over OTLP; None when it was not asked for."""
        if self.otlp is None:
            return None
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "the default OTLP endpoint"
        )
        if self.otlp.failed or not self.otlp.exported:
            return False, f"OTLP export to {endpoint} failed (is a collector listening there?)"
        return True, f"Spans exported over OTLP to {endpoint}."


class PromptTextHashProcessor(SpanProcessor):
    """Tags CoreVital spans with the model-independent hash of the prompt text (for comparing models)."""

    def __init__(self, text_hash: str):
        self.text_hash = text_hash

    def on_start(self, span, parent_context=None) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name.startswith(SCOPE_NAME):
            span.set_attribute(PROMPT_TEXT_HASH, self.text_hash)


def set_up(prompt_text_hash: str) -> Telemetry:
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": DEFAULT_SERVICE_NAME}
    resource = Resource.create(attributes)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(PromptTextHashProcessor(prompt_text_hash))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    otlp = None
    if _wants_otlp("TRACES"):
        otlp = RecordingExporter(_exporter("trace", _protocol("TRACES")))
        tracer_provider.add_span_processor(BatchSpanProcessor(otlp))
    readers = [PeriodicExportingMetricReader(_exporter("metric", _protocol("METRICS")))] if _wants_otlp("METRICS") else []
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(tracer_provider, meter_provider, spans, otlp)


def _wants_otlp(signal: str) -> bool:
    chosen = os.environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if chosen:
        return "otlp" in [name.strip() for name in chosen.split(",")]
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def _protocol(signal: str) -> str:
    value = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    value = (value or "http/protobuf").strip().lower()
    if value not in ("http/protobuf", "grpc"):
        raise CliError(f"OTEL_EXPORTER_OTLP_PROTOCOL={value}: this CLI supports http/protobuf or grpc")
    return value


def _exporter(kind: str, protocol: str):
    transport = "grpc" if protocol == "grpc" else "http"
    module = f"opentelemetry.exporter.otlp.proto.{transport}.{kind}_exporter"
    class_name = "OTLPSpanExporter" if kind == "trace" else "OTLPMetricExporter"
    try:
        exporter_class = getattr(__import__(module, fromlist=[class_name]), class_name)
    except ImportError:
        package = f"opentelemetry-exporter-otlp-proto-{transport}"
        raise CliError(f"OTLP export over {protocol} is asked for but {package} is not installed: {_OTLP_HINT}") from None
    return exporter_class()
