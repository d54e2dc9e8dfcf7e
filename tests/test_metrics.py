"""Semconv GenAI metrics: names, units, bucket boundaries, exact token counts, timing
relations and bounded attributes (real tiny models, real SDK metric reader)."""

from __future__ import annotations

import time

import pytest
import torch
from opentelemetry.trace import StatusCode
from transformers import StoppingCriteria, StoppingCriteriaList

from opentelemetry_instrumentation_corevital.telemetry import metrics as corevital_metrics
from tests.conftest import build_gpt2, prompt_ids

DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
MODEL = "gen_ai.request.model"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
BASE_KEYS = {OPERATION, PROVIDER, MODEL}

# Literal boundaries from the GenAI semantic conventions (gen-ai-metrics.md, ExplicitBucketBoundaries).
SPEC_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
SPEC_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SPEC_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
SPEC_TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]

SEMCONV_METRICS = [
    (DURATION, "s", SPEC_DURATION_BUCKETS, corevital_metrics.DURATION_BUCKETS),
    (TOKEN_USAGE, "{token}", SPEC_TOKEN_BUCKETS, corevital_metrics.TOKEN_USAGE_BUCKETS),
    (TIME_TO_FIRST_TOKEN, "s", SPEC_TTFT_BUCKETS, corevital_metrics.TIME_TO_FIRST_TOKEN_BUCKETS),
    (TIME_PER_OUTPUT_TOKEN, "s", SPEC_TPOT_BUCKETS, corevital_metrics.TIME_PER_OUTPUT_TOKEN_BUCKETS),
]


def all_points(telemetry):
    """(metric name, point) for every data point the instrumentation recorded."""
    data = telemetry.metrics.get_metrics_data()
    found = []
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.extend((metric.name, point) for point in metric.data.data_points)
    return found


def single_point(telemetry, name):
    points = telemetry.metric_points(name)
    assert len(points) == 1, (name, [dict(p.attributes) for p in points])
    assert points[0].count == 1, name
    return points[0]


class Boom(RuntimeError):
    pass


class RaiseAtFirstStep(StoppingCriteria):
    def __call__(self, input_ids, scores, **kwargs):
        raise Boom("caller gave up")


@pytest.mark.parametrize("name, unit, spec, constant", SEMCONV_METRICS, ids=[m[0] for m in SEMCONV_METRICS])
def test_semconv_metric_unit_and_buckets(models, telemetry, instrument, name, unit, spec, constant):
    assert list(constant) == spec, f"telemetry/metrics.py bucket constant for {name} differs from the spec"
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=3)
    metric = telemetry.metric(name)
    assert metric is not None, f"{name} not recorded"
    assert metric.unit == unit
    points = metric.data.data_points
    assert points
    for point in points:
        assert list(point.explicit_bounds) == spec
        assert list(point.explicit_bounds) == list(constant)


def test_token_usage_exact_counts(models, telemetry, instrument):
    model = models["gpt2"]
    instrument()
    model.generate(prompt_ids(length=6), max_new_tokens=3)
    model.generate(prompt_ids(length=5, seed=2), max_new_tokens=2)
    points = {point.attributes[TOKEN_TYPE]: point for point in telemetry.metric_points(TOKEN_USAGE)}
    assert set(points) == {"input", "output"}
    assert points["input"].count == 2 and points["input"].sum == 6 + 5
    assert points["output"].count == 2 and points["output"].sum == 3 + 2
    assert points["input"].min == 5 and points["input"].max == 6
    assert points["output"].min == 2 and points["output"].max == 3
    for point in points.values():
        assert dict(point.attributes) == {
            OPERATION: "text_completion", PROVIDER: "huggingface", MODEL: "GPT2LMHeadModel",
            TOKEN_TYPE: point.attributes[TOKEN_TYPE],
        }


def test_token_usage_matches_span_for_padded_batch(models, telemetry, instrument):
    ids = prompt_ids(batch=2, length=6, seed=3)
    mask = ids.new_ones(ids.shape)
    ids[0, :3] = 0
    mask[0, :3] = 0
    instrument()
    models["llama"].generate(ids, attention_mask=mask, max_new_tokens=2, eos_token_id=255)
    span = telemetry.only_span()
    points = {point.attributes[TOKEN_TYPE]: point for point in telemetry.metric_points(TOKEN_USAGE)}
    assert points["input"].sum == int(mask.sum()) == 9 == span.attributes["gen_ai.usage.input_tokens"]
    assert points["output"].sum == span.attributes["gen_ai.usage.output_tokens"]


def test_metric_attributes_are_bounded(telemetry, instrument, monkeypatch):
    """Only operation, provider, model (+ token type, error type, health flag); never trace ids or content."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    model = build_gpt2()
    model.name_or_path = "acme/tiny-gpt2"
    ids = prompt_ids()
    instrument()
    model.generate(ids, max_new_tokens=3)
    with pytest.raises(Boom):
        model.generate(ids, max_new_tokens=3, stopping_criteria=StoppingCriteriaList([RaiseAtFirstStep()]))
    spans = telemetry.finished()
    forbidden = set()
    for span in spans:
        forbidden |= {format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")}
        forbidden |= {str(span.context.trace_id), str(span.context.span_id)}
    prompt = " ".join(str(t) for t in ids[0].tolist())
    allowed_keys = BASE_KEYS | {TOKEN_TYPE, ERROR_TYPE, "corevital.health.flag"}
    points = all_points(telemetry)
    assert {name for name, _ in points} >= {DURATION, TOKEN_USAGE, TIME_TO_FIRST_TOKEN, TIME_PER_OUTPUT_TOKEN}
    for name, point in points:
        attributes = dict(point.attributes)
        assert BASE_KEYS <= set(attributes) <= allowed_keys, (name, attributes)
        assert attributes[OPERATION] == "text_completion"
        assert attributes[PROVIDER] == "huggingface"
        assert attributes[MODEL] == "acme/tiny-gpt2"
        for value in attributes.values():
            assert isinstance(value, str), (name, attributes)
            assert value not in forbidden and prompt not in value and "[" not in value, (name, attributes)


def test_failed_call_records_duration_with_error_type(models, telemetry, instrument):
    instrument()
    with pytest.raises(ValueError):
        models["gpt2"].generate(prompt_ids(), max_new_tokens=-1)
    point = single_point(telemetry, DURATION)
    assert dict(point.attributes) == {
        OPERATION: "text_completion", PROVIDER: "huggingface", MODEL: "GPT2LMHeadModel", ERROR_TYPE: "ValueError",
    }
    assert point.sum > 0
    assert telemetry.only_span().status.status_code is StatusCode.ERROR
    # time to first token and per-token time are for successful responses only
    assert telemetry.metric_points(TIME_TO_FIRST_TOKEN) == []
    assert telemetry.metric_points(TIME_PER_OUTPUT_TOKEN) == []


def test_successful_and_failed_calls_are_separate_series(models, telemetry, instrument):
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    with pytest.raises(Boom):
        models["gpt2"].generate(
            prompt_ids(), max_new_tokens=2, stopping_criteria=StoppingCriteriaList([RaiseAtFirstStep()])
        )
    points = telemetry.metric_points(DURATION)
    by_error = {point.attributes.get(ERROR_TYPE): point.count for point in points}
    assert by_error == {None: 1, "Boom": 1}


def test_time_to_first_token_within_duration(models, telemetry, instrument):
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=4)
    duration = single_point(telemetry, DURATION).sum
    first_token = single_point(telemetry, TIME_TO_FIRST_TOKEN).sum
    per_token = single_point(telemetry, TIME_PER_OUTPUT_TOKEN).sum
    assert 0 < first_token <= duration
    assert first_token < duration  # 3 more decoding steps ran after the first token existed
    assert per_token > 0
    assert per_token == pytest.approx((duration - first_token) / 3, rel=1e-6, abs=1e-9)


class SlowCaller(StoppingCriteria):
    """A caller's stopping criterion that takes SLEEP seconds and notes when each call began.

    generate calls it once per step, right after that step's token was chosen, so the first
    token exists before call 1 ends and the second decoding step runs between calls 1 and 2."""

    SLEEP = 0.05

    def __init__(self):
        self.entered: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.entered.append(time.perf_counter())
        time.sleep(self.SLEEP)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def test_time_to_first_token_is_taken_at_the_first_token(models, telemetry, instrument):
    slow = SlowCaller()
    instrument()
    before = time.perf_counter()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=3, stopping_criteria=StoppingCriteriaList([slow]))
    assert len(slow.entered) == 3
    first_token = single_point(telemetry, TIME_TO_FIRST_TOKEN).sum
    duration = single_point(telemetry, DURATION).sum
    per_token = single_point(telemetry, TIME_PER_OUTPUT_TOKEN).sum
    # not before the caller had seen the first token, not after the second step was done
    assert SlowCaller.SLEEP <= first_token <= slow.entered[1] - before
    assert duration >= 3 * SlowCaller.SLEEP
    assert per_token >= 0.9 * SlowCaller.SLEEP  # two sleeps over the two tokens after the first


def test_single_token_generation_first_token_is_whole_call(models, telemetry, instrument):
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    duration = single_point(telemetry, DURATION).sum
    first_token = single_point(telemetry, TIME_TO_FIRST_TOKEN).sum
    assert first_token == duration > 0
    assert telemetry.metric_points(TIME_PER_OUTPUT_TOKEN) == []  # no token after the first


def test_duration_fits_inside_the_span(models, telemetry, instrument):
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=2)
    span = telemetry.only_span()
    duration = single_point(telemetry, DURATION).sum
    assert 0 < duration <= (span.end_time - span.start_time) / 1e9 + 1e-6


@pytest.mark.parametrize("capture_mode", ["off", "summary"])
def test_semconv_metrics_in_every_capture_mode(models, telemetry, instrument, capture_mode):
    instrument(capture_mode=capture_mode)
    models["llama"].generate(prompt_ids(), max_new_tokens=3)
    assert single_point(telemetry, DURATION).sum > 0
    assert single_point(telemetry, TIME_TO_FIRST_TOKEN).sum > 0
    assert single_point(telemetry, TIME_PER_OUTPUT_TOKEN).sum > 0
    usage = {point.attributes[TOKEN_TYPE]: point.sum for point in telemetry.metric_points(TOKEN_USAGE)}
    assert usage == {"input": 6, "output": 3}
