"""Property-based checks of what tests/analysis/test_properties.py does not already cover:
the risk model's public pieces fed any features, the whole telemetry path (span attributes,
events, payload, metrics on the real SDK) fed any summaries, and the on-device logit
reduction fed any logits. Nothing raises, scores stay in [0, 1], everything exported is a
valid, finite OTel value."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from opentelemetry_instrumentation_corevital.analysis import FACTOR_OF_FEATURE, risk_factors, risk_label, risk_score
from opentelemetry_instrumentation_corevital.analysis.risk import FACTOR_BELOW_REFERENCE
from opentelemetry_instrumentation_corevital.capture import stats
from opentelemetry_instrumentation_corevital.config import Settings
from opentelemetry_instrumentation_corevital.generate_call import GenerateCall, GenerateResult
from opentelemetry_instrumentation_corevital.telemetry.health import HealthRecorder
from opentelemetry_instrumentation_corevital.telemetry.metrics import Instruments
from tests.support.strategies import ANY_FLOAT32, PROFILE, run_summaries

ANY_FLOAT = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e300]))
LABELS = ("healthy", "warning", "critical")
NAN_OR_INF = "nan_or_inf"


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: ANY_FLOAT for name in PROFILE.risk_model.features}), st.booleans())
def test_risk_model_stays_in_range_for_any_features(features, nonfinite_seen):
    features = {**features, NAN_OR_INF: float(nonfinite_seen)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = risk_score(features, PROFILE)
        factors = risk_factors(features, PROFILE)
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    assert risk_label(score, PROFILE) in LABELS
    assert set(factors) <= {*FACTOR_OF_FEATURE.values(), *FACTOR_BELOW_REFERENCE.values(), NAN_OR_INF}
    if nonfinite_seen:
        assert score == 1.0 and factors[0] == NAN_OR_INF


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _call(num_sequences: int) -> GenerateCall:
    return GenerateCall(
        model_id="tiny", is_encoder_decoder=False, input_ids=torch.arange(3, 9).repeat(max(num_sequences, 1), 1),
        attention_mask=None, max_new_tokens=14, do_sample=False, num_beams=1, num_return_sequences=1,
        temperature=None, top_p=None, top_k=None,
    )


def _otel_valid(value) -> bool:
    items = value if isinstance(value, (tuple, list)) else (value,)
    types = {type(item) for item in items}
    return len(types) <= 1 and types <= {bool, int, float, str} and all(
        not isinstance(item, float) or math.isfinite(item) for item in items
    )


TRACER_PROVIDER = TracerProvider(shutdown_on_exit=False)
METRICS = InMemoryMetricReader()
INSTRUMENTS = Instruments.create(MeterProvider(metric_readers=[METRICS], shutdown_on_exit=False).get_meter("p"))


@settings(max_examples=100, deadline=None)
@given(run_summaries(), st.sampled_from(["summary", "full", "on_risk"]))
def test_telemetry_never_raises_and_exports_only_valid_finite_values(run, mode):
    recorder = HealthRecorder(INSTRUMENTS, Settings(capture_mode=mode, risk_threshold=0.0, max_step_events=4))
    n = run.num_sequences
    result = GenerateResult(None, [run.num_steps] * n, ["length"] * n)
    collect = _Collect()
    logging.getLogger("opentelemetry").addHandler(collect)
    try:
        span = TRACER_PROVIDER.get_tracer("p").start_span("p")
        recorder.record(span, _call(n), result, run, {"gen_ai.request.model": "tiny"}, profile=PROFILE)
        span.end()
    finally:
        logging.getLogger("opentelemetry").removeHandler(collect)
    assert collect.messages == []  # the SDK dropped nothing as invalid
    for key, value in span.attributes.items():
        assert _otel_valid(value), (key, value)
    if "corevital.risk.score" in span.attributes:
        assert 0.0 <= span.attributes["corevital.risk.score"] <= 1.0
    for event in span.events:
        for key, value in event.attributes.items():
            assert _otel_valid(value), (event.name, key, value)
    assert span.attributes["corevital.risk.label"] in ("healthy", "warning", "critical")
    METRICS.get_metrics_data()  # drain, so memory stays flat across examples


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 40)), elements=ANY_FLOAT32))
def test_logit_reduction_for_any_logits(logits):
    reduced, log_probs = stats.logit_stats(torch.from_numpy(logits))
    entropy, margin, topk_mass, max_prob, nan_count, inf_count = reduced.T.numpy()
    assert log_probs.shape == logits.shape
    np.testing.assert_array_equal(nan_count, np.isnan(logits).sum(-1))
    np.testing.assert_array_equal(inf_count, np.isinf(logits).sum(-1))
    finite_rows = np.isfinite(logits).all(-1)
    limit = math.log2(logits.shape[-1]) + 1e-3
    assert np.all((entropy[finite_rows] >= -1e-4) & (entropy[finite_rows] <= limit))
    for values in (margin, topk_mass, max_prob):
        assert np.all((values[finite_rows] >= -1e-5) & (values[finite_rows] <= 1 + 1e-5))
