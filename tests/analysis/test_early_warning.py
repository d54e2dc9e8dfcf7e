import numpy as np
import pytest

from opentelemetry_instrumentation_corevital.analysis import EarlyWarning, early_warning
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import hidden_column, logit_column, make_run, set_tokens

PROFILE = load_profile("default")  # window 8
ENTROPY = logit_column("entropy")


def test_a_flat_run_raises_no_warning():
    assert early_warning(make_run(steps=30), 0, profile=PROFILE) == EarlyWarning(0.0, (), 0)


def test_no_valid_steps_means_no_warning():
    run = make_run(steps=5)
    run.valid[0] = False
    assert early_warning(run, 0, profile=PROFILE) == EarlyWarning(0.0, (), None)
    assert early_warning(make_run(steps=0), 0, profile=PROFILE) == EarlyWarning(0.0, (), None)


def test_entropy_rising_appears_once_the_window_has_risen():
    run = make_run(steps=30, entropy=1.0)
    run.logits[0, 20:, ENTROPY] = 3.0
    assert early_warning(run, 0, upto_step=19, profile=PROFILE).signals == ()
    assert early_warning(run, 0, upto_step=21, profile=PROFILE).signals == ()  # window mean 1.5: +0.5 bits
    live = early_warning(run, 0, upto_step=25, profile=PROFILE)
    assert live.signals == ("entropy_rising",) and live.step == 25
    assert live.failure_risk == pytest.approx(PROFILE.early_warning_weights.entropy_rising)


def test_live_evaluation_reads_only_the_prefix():
    run = make_run(steps=30)
    run.hidden[0, 20, 0, hidden_column("nan_count")] = 1
    assert early_warning(run, 0, upto_step=19, profile=PROFILE).failure_risk == 0.0
    live = early_warning(run, 0, upto_step=20, profile=PROFILE)
    assert live.failure_risk == 1.0 and live.signals == ("nan_or_inf",)
    assert early_warning(run, 0, upto_step=29, profile=PROFILE).failure_risk == 1.0


def test_whole_run_reports_the_peak_and_every_signal_that_fired():
    run = make_run(steps=40, margin=0.6)
    run.logits[0, 10, logit_column("surprisal")] = 12.0
    run.logits[0, 30:, logit_column("margin")] = 0.05
    whole = early_warning(run, 0, profile=PROFILE)
    assert whole.signals == ("margin_collapsing", "surprisal_spike")
    assert whole.failure_risk == pytest.approx(PROFILE.early_warning_weights.margin_collapsing)
    assert early_warning(run, 0, upto_step=14, profile=PROFILE).signals == ("surprisal_spike",)
    assert early_warning(run, 0, upto_step=25, profile=PROFILE).signals == ()


def test_signals_combine_as_independent_odds():
    run = make_run(steps=40, entropy=1.0, margin=0.6)
    run.logits[0, 30:, ENTROPY] = 4.0
    run.logits[0, 30:, logit_column("margin")] = 0.05
    live = early_warning(run, 0, upto_step=39, profile=PROFILE)
    weights = PROFILE.early_warning_weights
    assert live.signals == ("entropy_rising", "margin_collapsing")
    assert live.failure_risk == pytest.approx(1 - (1 - weights.entropy_rising) * (1 - weights.margin_collapsing))


def test_repetition_building_before_the_loop_is_confirmed():
    run = make_run(steps=30)
    tokens = np.arange(500, 530)
    tokens[10:22] = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]  # period 6 needs 12 repeating steps; 6 so far
    set_tokens(run, 0, tokens)
    assert early_warning(run, 0, upto_step=20, profile=PROFILE).signals == ()
    assert early_warning(run, 0, upto_step=21, profile=PROFILE).signals == ("repetition_building",)


def test_hidden_norm_growth_ignores_the_prompt_step():
    run = make_run(steps=30)
    run.hidden[0, 0, :, hidden_column("l2_norm")] *= 10.0
    assert early_warning(run, 0, profile=PROFILE).signals == ()
    run.hidden[0, 22:, :, hidden_column("l2_norm")] *= 2.0
    assert early_warning(run, 0, upto_step=29, profile=PROFILE).signals == ("hidden_norm_growth",)


def test_padding_does_not_count_as_history():
    run = make_run(steps=30, entropy=1.0)
    run.valid[0, 4:] = False
    run.logits[0, 4:, ENTROPY] = 9.0
    assert early_warning(run, 0, profile=PROFILE) == EarlyWarning(0.0, (), 0)


def test_trends_are_judged_against_the_calls_own_spread():
    # A history that swings between 0 and 4 bits (std 2): a 2-bit rise is within its own range.
    swinging = make_run(steps=40, entropy=0.0)
    swinging.logits[0, 1:30:2, ENTROPY] = 4.0
    swinging.logits[0, 30:, ENTROPY] = 4.0  # window mean 4 vs earlier mean 2: +2 bits < 2 x 2
    assert "entropy_rising" not in early_warning(swinging, 0, upto_step=39, profile=PROFILE).signals
    # The same rise from a steady history is a trend.
    steady = make_run(steps=40, entropy=2.0)
    steady.logits[0, 30:, ENTROPY] = 4.0
    assert early_warning(steady, 0, upto_step=39, profile=PROFILE).signals == ("entropy_rising",)
    # With trend_spread 0 only the fixed floor decides, as before.
    loose = load_profile("default", {"trend_spread": 0.0})
    assert "entropy_rising" in early_warning(swinging, 0, upto_step=39, profile=loose).signals


def test_a_margin_drop_inside_the_calls_usual_swings_is_no_collapse():
    swinging = make_run(steps=40, margin=0.9)
    swinging.logits[0, 1:30:2, logit_column("margin")] = 0.05
    swinging.logits[0, 30:, logit_column("margin")] = 0.05  # ratio 0.05 / 0.48 < 0.4, drop 0.43 < 2 x 0.43
    assert "margin_collapsing" not in early_warning(swinging, 0, upto_step=39, profile=PROFILE).signals
    steady = make_run(steps=40, margin=0.9)
    steady.logits[0, 30:, logit_column("margin")] = 0.05
    assert early_warning(steady, 0, upto_step=39, profile=PROFILE).signals == ("margin_collapsing",)
