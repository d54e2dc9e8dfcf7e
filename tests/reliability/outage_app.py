"""A host application for the exit test: instrumented generate, OTLP/HTTP export through the
SDK's BatchSpanProcessor and PeriodicExportingMetricReader, configured by the standard
OTEL_EXPORTER_OTLP_* variables (and, when OUTAGE_APP_HEALTHY_TRACES_ENDPOINT is set, a second
span processor exporting there). It prints one line when its work is done and then simply
returns, leaving shutdown to the SDK's exit handlers, as a real application does."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor  # noqa: E402
from tests.conftest import build_gpt2, prompt_ids  # noqa: E402

HEALTHY_TRACES_ENDPOINT = "OUTAGE_APP_HEALTHY_TRACES_ENDPOINT"


def main() -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if os.environ.get(HEALTHY_TRACES_ENDPOINT):
        healthy = OTLPSpanExporter(endpoint=os.environ[HEALTHY_TRACES_ENDPOINT])
        tracer_provider.add_span_processor(BatchSpanProcessor(healthy))
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
    CoreVitalInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    model = build_gpt2()
    calls = int(os.environ.get("OUTAGE_APP_CALLS", "3"))
    started = time.perf_counter()
    for _ in range(calls):
        model.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    print(f"generated {calls} in {time.perf_counter() - started:.3f}s", flush=True)


if __name__ == "__main__":
    main()
