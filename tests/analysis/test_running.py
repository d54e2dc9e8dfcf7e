"""RunningHealth, fed one step at a time, equals the analysis of the steps so far at every step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentelemetry_instrumentation_corevital.analysis.running import LOOP_AND_NONFINITE_FEATURES, RunningHealth
from opentelemetry_instrumentation_corevital.profiles import load_profile
from opentelemetry_instrumentation_corevital.summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, RunSummaries
from tests.support.running_reference import (
    assert_features_equal,
    every_feature_profile,
    expected_at,
    step_rows,
)
from tests.support.summaries import LOOP_COSINE, make_run, set_tokens

PROFILES = {
    "default": load_profile("default"),
    "llama": load_profile("llama"),
    "calibrated": every_feature_profile(),
    "short windows": every_feature_profile(early_warning_window=3, repetition_min_steps=2, repetition_max_period=5,
                                           low_entropy_min_run=3, answer_steps=2),
}


def assert_running_equals_analysis(summaries: RunSummaries, profile) -> int:
    """Feeds every step and compares every valid sequence there; returns how many loops were seen."""
    health = RunningHealth(profile, summaries.num_sequences, summaries.num_layers, summaries.num_heads,
                           capacity=summaries.num_steps)
    loops = 0
    for step in range(summaries.num_steps):
        health.add_step(step_rows(summaries, step))
        features, signals = health.features(), health.signals()
        for i in np.flatnonzero(summaries.valid[:, step]):
            expected = expected_at(summaries, i, step, profile)
            where = f"sequence {i} step {step}"
            assert_features_equal(features[i], expected.features, where)
            assert signals[i] == expected.signals, where
            assert bool(health.nonfinite[i]) == expected.nonfinite, where
            loops += expected.repetition_loop
    return loops


@st.composite
def live_runs(draw):
    """Runs as capture writes them: each sequence valid from step 0 up to its end; NaN/Inf steps,
    phrase loops with high cosines, long low-entropy and confident runs, L2 spikes, collapsing heads."""
    n, s = draw(st.integers(1, 3)), draw(st.integers(1, 40))
    layers, lags, heads = draw(st.integers(0, 6)), draw(st.sampled_from([None, 0, 3, 8, 32])), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def mostly(values, odd, rate):
        return np.where(rng.random(values.shape) < rate, rng.choice(odd, values.shape), values)

    tokens = rng.integers(0, draw(st.integers(2, 50)), (n, s))
    cosine = None if lags is None else rng.uniform(-0.2, 0.9, (n, s, lags)).astype(np.float32)
    for i in range(n):
        for _ in range(draw(st.integers(0, 3))):  # phrase loops, each with its own level of cosine
            period, start, length = draw(st.integers(1, 7)), draw(st.integers(0, s)), draw(st.integers(2, 30))
            level = rng.choice([LOOP_COSINE, rng.uniform(0.1, 1.0)])
            for t in range(start + period, min(start + period + length, s)):
                tokens[i, t] = tokens[i, t - period]
                if cosine is not None and period <= lags:
                    cosine[i, t, period - 1] = min(level + rng.uniform(-0.05, 0.05), 1.0)
    if cosine is not None:
        cosine[:, np.arange(s)[:, None] - 1 - np.arange(lags)[None, :] < 0] = np.nan  # no step that far back
        cosine = mostly(cosine, [np.nan], 0.03).astype(np.float32)
    low = draw(st.booleans())
    logits = np.zeros((n, s, len(LOGIT_STATS)), np.float32)
    low_steps = rng.random((n, s)) < (0.7 if low else 0.1)
    entropy = np.where(low_steps, rng.uniform(0, 0.6, (n, s)), rng.uniform(0, 7, (n, s)))
    logits[..., LOGIT_STATS.index("entropy")] = mostly(entropy, [np.nan, np.inf], 0.03)
    logits[..., LOGIT_STATS.index("margin")] = mostly(rng.uniform(0, 1, (n, s)), [np.nan, 0.0], 0.05)
    logits[..., LOGIT_STATS.index("max_prob")] = mostly(rng.uniform(0.2, 1, (n, s)), [np.nan, 0.95, 0.99], 0.3)
    logits[..., LOGIT_STATS.index("topk_mass")] = 0.8
    logits[..., LOGIT_STATS.index("surprisal")] = mostly(rng.uniform(0, 10, (n, s)), [np.nan, np.inf, -0.0, 20.0], 0.05)
    logits[..., LOGIT_STATS.index("nan_count")] = mostly(np.zeros((n, s)), [1.0, np.nan], 0.005)
    logits[..., LOGIT_STATS.index("inf_count")] = mostly(np.zeros((n, s)), [1.0], 0.005)
    hidden = np.zeros((n, s, layers, len(HIDDEN_STATS)), np.float32)
    l2 = rng.uniform(5, 15, (n, s, layers)) * np.where(rng.random((n, s, 1)) < 0.1, rng.uniform(1, 40), 1.0)
    hidden[..., HIDDEN_STATS.index("l2_norm")] = mostly(l2, [np.nan, np.inf, 0.0, 1e4], 0.03)
    hidden[..., HIDDEN_STATS.index("nan_count")] = mostly(np.zeros((n, s, layers)), [2.0], 0.002)
    hidden[..., HIDDEN_STATS.index("inf_count")] = mostly(np.zeros((n, s, layers)), [1.0], 0.002)
    attention = None
    if draw(st.booleans()):
        attention = np.zeros((n, s, layers, len(ATTENTION_STATS)), np.float32)
        base = rng.integers(0, heads + 1, (n, 1, layers))
        collapsed = np.clip(base + rng.integers(-1, 2, (n, s, layers)) * (rng.random((n, s, layers)) < 0.4), 0, heads)
        collapsed = np.where(rng.random((n, s, 1)) < 0.3, heads, collapsed)  # steps where every head collapses
        attention[..., ATTENTION_STATS.index("collapsed_heads")] = mostly(collapsed.astype(float), [np.nan], 0.1)
    ends = rng.integers(1, s + 1, n) if draw(st.booleans()) else np.full(n, s)
    return RunSummaries(
        logits=logits,
        token_ids=tokens.astype(np.int64),
        valid=np.arange(s)[None, :] < ends[:, None],
        hidden=hidden,
        attention=attention,
        repetition_cosine=cosine,
        num_heads=heads,
    )


@pytest.mark.parametrize("profile_name", list(PROFILES))
@settings(max_examples=60, deadline=None)
@given(summaries=live_runs())
def test_running_health_equals_the_analysis_of_the_steps_so_far(profile_name, summaries):
    assert_running_equals_analysis(summaries, PROFILES[profile_name])


@pytest.mark.parametrize("profile_name", ["default", "short windows"])
@settings(max_examples=60, deadline=None)
@given(summaries=live_runs())
def test_without_risk_and_signals_the_loop_and_nonfinite_equal_the_analysis(profile_name, summaries):
    """What a health stop without a risk threshold reads, kept alone, is what the full state gives."""
    profile = PROFILES[profile_name]
    health = RunningHealth(profile, summaries.num_sequences, summaries.num_layers, summaries.num_heads,
                           capacity=summaries.num_steps, risk_and_signals=False)
    for step in range(summaries.num_steps):
        health.add_step(step_rows(summaries, step))
        features = health.features(LOOP_AND_NONFINITE_FEATURES)
        for i in np.flatnonzero(summaries.valid[:, step]):
            expected = expected_at(summaries, i, step, profile)
            where = f"sequence {i} step {step}"
            assert_features_equal(features[i], {k: expected.features[k] for k in LOOP_AND_NONFINITE_FEATURES}, where)
            assert bool(health.nonfinite[i]) == expected.nonfinite, where


def test_without_risk_and_signals_other_features_and_signals_are_refused():
    run = make_run(steps=3)
    health = RunningHealth(PROFILES["default"], 1, run.num_layers, run.num_heads, capacity=3, risk_and_signals=False)
    health.add_step(step_rows(run, 0))
    with pytest.raises(ValueError, match="keeps .* only, not .*entropy_mean"):
        health.features(("repetition_loop", "entropy_mean"))
    with pytest.raises(ValueError, match="keeps no early-warning signals"):
        health.signals()


@pytest.mark.parametrize("period", [1, 3, 7])
def test_a_phrase_loop_is_confirmed_live_at_the_same_step_as_the_analysis(period):
    run = make_run(steps=60, sequences=2, layers=6, lags=32)
    phrase = np.arange(200, 200 + period)
    set_tokens(run, 1, np.concatenate([np.arange(100, 112), np.tile(phrase, 60)[:48]]))
    assert assert_running_equals_analysis(run, PROFILES["llama"]) > 0  # the loop was there to find


def test_a_sequence_that_finished_keeps_its_last_values_and_the_others_go_on():
    run = make_run(steps=30, sequences=3, lags=32, attention=True)
    run.valid[0, 5:] = False
    run.valid[2, 17:] = False
    run.logits[1, 12, LOGIT_STATS.index("nan_count")] = 1.0
    assert_running_equals_analysis(run, PROFILES["calibrated"])


def test_collapsed_head_counts_that_are_not_whole_heads_are_refused():
    run = make_run(steps=3, attention=True)
    run.attention[..., ATTENTION_STATS.index("collapsed_heads")] = 0.5
    health = RunningHealth(PROFILES["default"], 1, run.num_layers, run.num_heads, capacity=3)
    with pytest.raises(ValueError, match="whole numbers of heads"):
        health.add_step(step_rows(run, 0))


@pytest.mark.parametrize("profile_name", ["default", "calibrated"])
def test_a_run_without_hidden_statistics_equals_the_analysis(profile_name):
    """A compiled forward leaves the hidden rows NaN: the spread is not measured, live and at the end."""
    run = make_run(steps=20, sequences=2, layers=6)
    run.hidden[:] = np.nan
    run.valid[1, 9:] = False
    assert_running_equals_analysis(run, PROFILES[profile_name])
