"""OTLP end to end over a real wire on 127.0.0.1, into real receivers, read back as OTLP protobuf.

    http/protobuf:  opentelemetry-instrument python app.py ──OTLP/HTTP──▶ oteltap (PyPI receiver)
    grpc:           opentelemetry-instrument python app.py ──OTLP/gRPC──▶ rotel (PyPI collector)
                        ──OTLP/gRPC──▶ grpc_sink (official OTLP service definitions, grpcio)

(rotel 0.0.1a15 always gzips its OTLP/HTTP export, whatever its compression flags say, and
oteltap cannot decode gzip: so rotel forwards over gRPC.)

The app (tests/delivery/app.py) has no OpenTelemetry code: the zero-code path exports. It makes
one sound and one NaN-broken generate call. Everything the SDK sent must arrive intact: the two
spans with their typed corevital attributes, the step events, the log-based evaluation events
tied to their spans, and both metric
families (gen_ai.* and corevital.*) with their units, buckets and values, consistent across
signals (entropy histogram sum = the steps' entropies, risk histogram sum = the spans' scores).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from opentelemetry_instrumentation_corevital.telemetry import metrics as cv_metrics
from tests.support.delivery import (
    APP_TIMEOUT_S, LOOPBACK, app_env, background, free_port, instrumented_app, log_tail, require_module,
    wait_for_port,
)

MODEL = "GPT2LMHeadModel"
SPAN_NAME = f"text_completion {MODEL}"
PROMPT_TOKENS, NEW_TOKENS = 6, 8
ARRIVAL_TIMEOUT_S = 20

# name → (unit, explicit bucket boundaries or None for the counter)
EXPECTED_METRICS = {
    gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION: ("s", cv_metrics.DURATION_BUCKETS),
    gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE: ("{token}", cv_metrics.TOKEN_USAGE_BUCKETS),
    gen_ai_metrics.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: ("s", cv_metrics.TIME_TO_FIRST_TOKEN_BUCKETS),
    gen_ai_metrics.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN: ("s", cv_metrics.TIME_PER_OUTPUT_TOKEN_BUCKETS),
    cv_metrics.RISK_SCORE: ("1", cv_metrics.RISK_BUCKETS),
    cv_metrics.LOGITS_ENTROPY: ("bit", cv_metrics.ENTROPY_BUCKETS),
    cv_metrics.HEALTH_FLAGS: ("{flag}", None),
}
SPAN_KIND_INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass
class Delivery:
    spans: list[Span] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    app: subprocess.CompletedProcess | None = None


def value_of(any_value):
    """An OTLP AnyValue as the Python value it was sent as (arrays as tuples)."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(item) for item in any_value.array_value.values)
    return getattr(any_value, kind)


def attributes(key_values) -> dict:
    return {kv.key: value_of(kv.value) for kv in key_values}


def kinds(key_values) -> dict:
    return {kv.key: kv.value.WhichOneof("value") for kv in key_values}


def genai_spans(spans) -> list:
    return [s for s in spans if attributes(s.attributes).get(gen_ai.GEN_AI_OPERATION_NAME) == "text_completion"]


def evaluation_logs(delivery: Delivery) -> list[LogRecord]:
    return [r for r in delivery.logs if r.event_name == attrs.EVALUATION_EVENT]


def complete(delivery: Delivery) -> bool:
    return (
        len(genai_spans(delivery.spans)) >= 2
        and EXPECTED_METRICS.keys() <= {m.name for m in delivery.metrics}
        and len(evaluation_logs(delivery)) >= 2
    )


def run_app(endpoint: str, protocol: str) -> subprocess.CompletedProcess:
    env = app_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_METRIC_EXPORT_INTERVAL="600000",  # one export, at shutdown: exact totals
    )
    app = subprocess.run(
        instrumented_app(traces="otlp", metrics="otlp", logs="otlp"),
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=APP_TIMEOUT_S,
    )
    assert app.returncode == 0, f"app failed\n{app.stdout}\n{app.stderr}"
    return app


def assert_complete(delivery: Delivery, route: str, log: str = "") -> None:
    assert complete(delivery), (
        f"not everything arrived over {route} within {ARRIVAL_TIMEOUT_S} s: "
        f"spans {[s.name for s in delivery.spans]}, metrics {sorted({m.name for m in delivery.metrics})}\n"
        f"--- app stderr\n{delivery.app.stderr[-3000:]}\n{log}"
    )


async def collect(stream, into: list) -> None:
    async for item in stream:
        into.append(item)


async def deliver_to_oteltap() -> Delivery:
    oteltap = require_module("oteltap")
    delivery = Delivery()
    settings = oteltap.OtelTapHttpProtobufReceiverSettings(http_port=free_port())  # loopback only by default
    async with oteltap.OtelTapHttpProtobufReceiver(settings) as receiver:
        readers = [
            asyncio.create_task(collect(receiver.stream_traces(), delivery.spans)),
            asyncio.create_task(collect(receiver.stream_metrics(), delivery.metrics)),
            asyncio.create_task(collect(receiver.stream_logs(), delivery.logs)),
        ]
        await asyncio.sleep(0)  # the readers subscribe before anything is sent
        delivery.app = await asyncio.to_thread(run_app, f"http://{LOOPBACK}:{settings.http_port}", "http/protobuf")
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        while not complete(delivery) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    await asyncio.gather(*readers)  # the streams end when the receiver stops
    assert_complete(delivery, "OTLP/HTTP into oteltap")
    return delivery


def rotel_command(grpc_port: int, http_port: int, sink_port: int, workdir: Path) -> list[str]:
    rotel = require_module("rotel")
    return [
        str(Path(rotel.__file__).parent / "rotel-agent"), "start",
        "--otlp-grpc-endpoint", f"{LOOPBACK}:{grpc_port}",
        "--otlp-http-endpoint", f"{LOOPBACK}:{http_port}",
        "--exporter", "otlp",
        "--otlp-exporter-endpoint", f"http://{LOOPBACK}:{sink_port}",
        "--otlp-exporter-protocol", "grpc",
        "--pid-file", str(workdir / "rotel.pid"),
    ]


def deliver_through_rotel(workdir: Path) -> Delivery:
    from tests.delivery.grpc_sink import OtlpGrpcSink

    grpc_port, http_port = free_port(), free_port()
    log = workdir / "rotel.log"
    with OtlpGrpcSink(LOOPBACK) as sink:
        with background(rotel_command(grpc_port, http_port, sink.port, workdir), log) as rotel:
            wait_for_port(grpc_port, rotel)
            delivery = Delivery(spans=sink.spans, metrics=sink.metrics, logs=sink.logs)
            delivery.app = run_app(f"http://{LOOPBACK}:{grpc_port}", "grpc")
            deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
            while not complete(delivery) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert_complete(delivery, "OTLP/gRPC through rotel", f"--- rotel log\n{log_tail(log)}")
    return delivery


@pytest.fixture(scope="module", params=["http/protobuf", "grpc"])
def delivery(request, tmp_path_factory) -> Delivery:
    if request.param == "grpc":
        return deliver_through_rotel(tmp_path_factory.mktemp("rotel"))
    return asyncio.run(deliver_to_oteltap())


@pytest.fixture(scope="module")
def sound_and_broken(delivery):
    spans = genai_spans(delivery.spans)
    assert len(spans) == 2, [s.name for s in delivery.spans]
    by_nan = {attributes(s.attributes)[attrs.HEALTH_NAN]: s for s in spans}
    assert set(by_nan) == {False, True}, "expected one sound and one NaN-broken call"
    return by_nan[False], by_nan[True]


def events(span, name) -> list[dict]:
    return [attributes(e.attributes) for e in span.events if e.name == name]


def metric(delivery, name):
    found = [m for m in delivery.metrics if m.name == name]
    assert len(found) == 1, f"{name}: {len(found)} metrics arrived"
    return found[0]


def test_spans_arrive_with_typed_genai_and_corevital_attributes(sound_and_broken):
    for span in sound_and_broken:
        assert span.name == SPAN_NAME
        assert span.kind == SPAN_KIND_INTERNAL
        values, types = attributes(span.attributes), kinds(span.attributes)
        assert values[gen_ai.GEN_AI_PROVIDER_NAME] == "huggingface"
        assert values[gen_ai.GEN_AI_REQUEST_MODEL] == MODEL
        assert values[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
        assert values[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == NEW_TOKENS
        assert values[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
        assert values[attrs.CAPTURE_MODE] == "summary"
        assert attrs.ERROR not in values, values.get(attrs.ERROR)
        assert types[attrs.RISK_SCORE] == "double_value"
        assert types[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == "int_value"
        assert types[attrs.HEALTH_REPETITION_LOOP] == "bool_value"
        assert types[attrs.HEALTH_HIGH_ENTROPY_STEPS] == "int_value"
        assert types[attrs.RISK_FACTORS] == "array_value"
        assert types[attrs.FINGERPRINT] == "array_value"
        assert all(isinstance(x, float) for x in values[attrs.FINGERPRINT])
        assert values[attrs.NARRATIVE]
        assert 0.0 <= values[attrs.RISK_SCORE] <= 1.0
    sound, broken = (attributes(s.attributes) for s in sound_and_broken)
    assert sound[attrs.RISK_SCORE] < 0.7, sound[attrs.NARRATIVE]
    assert sound[attrs.HEALTH_NAN] is False
    assert kinds(sound_and_broken[0].attributes)[attrs.LOGITS_ENTROPY_MEAN] == "double_value"
    assert broken[attrs.HEALTH_NAN] is True
    assert broken[attrs.HEALTH_MID_LAYER_ANOMALY] is True
    assert broken[attrs.RISK_SCORE] == 1.0
    assert broken[attrs.LANGFUSE_LEVEL] == "ERROR"
    assert "nan_or_inf" in broken[attrs.RISK_FACTORS]


def test_step_and_evaluation_events_arrive_intact(delivery, sound_and_broken):
    sound, broken = sound_and_broken
    steps = events(sound, attrs.STEP_EVENT)
    assert [s[attrs.STEP_INDEX] for s in steps] == list(range(NEW_TOKENS))
    entropies = [s[attrs.STEP_ENTROPY] for s in steps]
    assert all(0.0 <= e <= 8.0 for e in entropies)  # 256-token vocabulary: at most 8 bits
    assert math.isclose(
        sum(entropies) / len(entropies), attributes(sound.attributes)[attrs.LOGITS_ENTROPY_MEAN], rel_tol=1e-6
    )
    assert all(attrs.STEP_TOKEN_TEXT not in s for s in steps)  # no content without opt-in
    broken_steps = events(broken, attrs.STEP_EVENT)
    assert broken_steps and all(s[attrs.STEP_FLAGGED] is True for s in broken_steps)
    assert all(attrs.STEP_ENTROPY not in s for s in broken_steps)  # NaN is left out, never sent
    for span, label in ((sound, "healthy"), (broken, "critical")):
        assert not events(span, attrs.EVALUATION_EVENT)  # a log record, as gen-ai-events.md says
        (record,) = [r for r in evaluation_logs(delivery) if (r.trace_id, r.span_id) == (span.trace_id, span.span_id)]
        evaluation = attributes(record.attributes)
        assert attributes(span.attributes)[attrs.RISK_LABEL] == label  # and on the span, for trace-only backends
        assert evaluation[gen_ai.GEN_AI_EVALUATION_NAME] == attrs.EVALUATION_NAME
        assert evaluation[gen_ai.GEN_AI_EVALUATION_SCORE_LABEL] == label
        assert evaluation[gen_ai.GEN_AI_EVALUATION_SCORE_VALUE] == attributes(span.attributes)[attrs.RISK_SCORE]


@pytest.mark.parametrize("name", list(EXPECTED_METRICS))
def test_metric_arrives_with_unit_buckets_and_bounded_attributes(delivery, name):
    unit, buckets = EXPECTED_METRICS[name]
    received = metric(delivery, name)
    assert received.unit == unit
    data = received.histogram if buckets is not None else received.sum
    assert data.aggregation_temporality == CUMULATIVE
    assert data.data_points
    for point in data.data_points:
        labels = attributes(point.attributes)
        assert labels[gen_ai.GEN_AI_REQUEST_MODEL] == MODEL
        assert labels[gen_ai.GEN_AI_PROVIDER_NAME] == "huggingface"
        assert set(labels) <= {
            gen_ai.GEN_AI_OPERATION_NAME, gen_ai.GEN_AI_PROVIDER_NAME, gen_ai.GEN_AI_REQUEST_MODEL,
            gen_ai.GEN_AI_TOKEN_TYPE, attrs.HEALTH_FLAG, "error.type",
        }
        if buckets is not None:
            assert tuple(point.explicit_bounds) == tuple(float(b) for b in buckets)


def test_metric_values_agree_with_the_spans(delivery, sound_and_broken):
    sound, broken = sound_and_broken
    (duration,) = metric(delivery, gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION).histogram.data_points
    assert duration.count == 2
    usage = {
        attributes(p.attributes)[gen_ai.GEN_AI_TOKEN_TYPE]: p
        for p in metric(delivery, gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE).histogram.data_points
    }
    assert (usage["input"].count, usage["input"].sum) == (2, 2 * PROMPT_TOKENS)
    assert (usage["output"].count, usage["output"].sum) == (2, 2 * NEW_TOKENS)

    (risk,) = metric(delivery, cv_metrics.RISK_SCORE).histogram.data_points
    scores = [attributes(s.attributes)[attrs.RISK_SCORE] for s in (sound, broken)]
    assert risk.count == 2 and math.isclose(risk.sum, sum(scores), rel_tol=1e-12)
    assert risk.max == 1.0

    (entropy,) = metric(delivery, cv_metrics.LOGITS_ENTROPY).histogram.data_points
    step_entropies = [s[attrs.STEP_ENTROPY] for s in events(sound, attrs.STEP_EVENT)]
    assert entropy.count == len(step_entropies) == NEW_TOKENS  # the broken call's NaN steps are not recorded
    assert math.isclose(entropy.sum, sum(step_entropies), rel_tol=1e-9)

    flags = metric(delivery, cv_metrics.HEALTH_FLAGS).sum
    assert flags.is_monotonic
    counts = {attributes(p.attributes)[attrs.HEALTH_FLAG]: p.as_int for p in flags.data_points}
    assert counts == {"nan_detected": 1, "mid_layer_anomaly_detected": 1}
