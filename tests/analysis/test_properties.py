import dataclasses
import math
import re
import warnings
from dataclasses import asdict

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from opentelemetry_instrumentation_corevital.analysis import FINGERPRINT_LAYOUT, analyze, early_warning
from opentelemetry_instrumentation_corevital.analysis.health import l2_explosions
from opentelemetry_instrumentation_corevital.analysis.repetition import period_matches, repetition_loop_of
from opentelemetry_instrumentation_corevital.analysis.sequence import finite_column_medians, sequence_view
from tests.support.strategies import ANY_FLOAT32, PROFILE, run_summaries


def in_unit_interval(x):
    return isinstance(x, float) and 0.0 <= x <= 1.0


@settings(max_examples=200, deadline=None)
@given(run_summaries())
def test_anything_goes_in_scores_stay_in_range(run):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = analyze(run, PROFILE)
    steps, layers = run.num_steps, run.num_layers
    for sequence in result.sequences:
        assert in_unit_interval(sequence.risk_score) and in_unit_interval(sequence.failure_risk)
        assert sequence.label in ("healthy", "warning", "critical")
        assert len(sequence.fingerprint) == len(FINGERPRINT_LAYOUT)
        assert all(math.isfinite(x) for x in sequence.fingerprint)
        assert all(math.isfinite(v) or math.isnan(v) for v in sequence.features.values())  # NaN: not measured
        assert sequence.flagged_steps == sorted(set(sequence.flagged_steps))
        assert all(0 <= step < steps and run.valid[sequence.index, step] for step in sequence.flagged_steps)
        assert sequence.blamed_layers == sorted(set(sequence.blamed_layers))
        assert all(0 <= layer < layers for layer in sequence.blamed_layers)
        assert 2 <= len(re.split(r"(?<=\.)\s+", sequence.narrative)) <= 4
        if sequence.flags.nan_detected or sequence.flags.inf_detected:
            assert sequence.risk_score == 1.0 and sequence.label == "critical"
    assert in_unit_interval(result.aggregate.risk_score) and in_unit_interval(result.aggregate.failure_risk)


@settings(max_examples=100, deadline=None)
@given(run_summaries(), st.data())
def test_live_warnings_stay_in_range_and_never_exceed_the_run_peak(run, data):
    for i in range(run.num_sequences):
        upto = data.draw(st.integers(0, run.num_steps + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            live = early_warning(run, i, upto_step=upto, profile=PROFILE)
            whole = early_warning(run, i, profile=PROFILE)
        assert in_unit_interval(live.failure_risk)
        assert live.failure_risk <= whole.failure_risk
        assert set(live.signals) <= set(whole.signals)


@settings(max_examples=100, deadline=None)
@given(run_summaries(), st.data())
def test_padding_steps_never_change_the_analysis(run, data):
    before = analyze(run, PROFILE)
    padding = ~run.valid
    scramble = data.draw(hnp.arrays(np.float32, run.logits.shape, elements=ANY_FLOAT32))
    run.logits[padding] = scramble[padding]
    run.hidden[padding] = data.draw(hnp.arrays(np.float32, run.hidden.shape, elements=ANY_FLOAT32))[padding]
    run.token_ids[padding] = 7
    if run.attention is not None:
        run.attention[padding] = math.nan
    if run.repetition_cosine is not None:
        run.repetition_cosine[padding] = 1.0
    np.testing.assert_equal(asdict(analyze(run, PROFILE)), asdict(before))  # NaN (a feature not measured) equals NaN


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
                  elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan), st.just(np.inf), st.just(-np.inf))))
def test_finite_column_medians_equal_nanmedian_of_the_finite_values(values):
    finite_only = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(finite_only, axis=0) if len(values) else np.full(values.shape[1:], np.nan)
    np.testing.assert_array_equal(finite_column_medians(values), expected)


@settings(max_examples=50, deadline=None)
@given(run_summaries())
def test_findings_shared_by_analyses_are_computed_once_and_read_only(run):
    assume(run.num_sequences > 0)
    view = sequence_view(run, 0)
    explosions = l2_explosions(view, PROFILE)
    assert l2_explosions(view, PROFILE) is explosions
    assert not explosions.flags.writeable
    assert repetition_loop_of(view, PROFILE) is repetition_loop_of(view, PROFILE)
    assert not period_matches(view, PROFILE).runs.flags.writeable
    other = dataclasses.replace(PROFILE, l2_explosion_multiplier=PROFILE.l2_explosion_multiplier * 2)
    np.testing.assert_array_equal(l2_explosions(view, other), l2_explosions(sequence_view(run, 0), other))
