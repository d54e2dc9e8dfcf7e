import math

import numpy as np
import pytest

from opentelemetry_instrumentation_corevital.analysis import (
    FACTOR_OF_FEATURE,
    risk_factors,
    risk_features,
    risk_label,
    risk_score,
)
from opentelemetry_instrumentation_corevital.profiles import RISK_FEATURE_NAMES, load_profile

from tests.support.summaries import hidden_column, logit_column, make_run, set_tokens

PROFILE = load_profile("default")
STEPS = 60
SPREAD_REFERENCE = PROFILE.risk_model.reference[PROFILE.risk_model.features.index("hidden_norm_spread")]
CALL_SPREAD_REFERENCE = PROFILE.risk_model.reference[PROFILE.risk_model.features.index("hidden_norm_spread_call")]


def middle_layer_norms(run, norms):
    """Sets the middle decoder layer's L2 norms of sequence 0, one per step."""
    run.hidden[0, : len(norms), (run.num_layers - 1) // 2, hidden_column("l2_norm")] = norms


def healthy_run(seed=0):
    rng = np.random.default_rng(seed)
    run = make_run(steps=STEPS)
    run.logits[0, :, logit_column("entropy")] = rng.uniform(0.5, 3.5, STEPS)
    run.logits[0, :, logit_column("surprisal")] = rng.uniform(0.2, 3.5, STEPS)
    run.logits[0, :, logit_column("margin")] = rng.uniform(0.05, 0.9, STEPS)
    run.logits[0, :, logit_column("max_prob")] = rng.uniform(0.5, 0.95, STEPS)
    set_tokens(run, 0, rng.permutation(np.arange(1000, 1000 + STEPS)))
    return run


def loop_run():
    """Healthy for 12 steps, then a confident period-4 phrase loop."""
    run = healthy_run()
    loop = slice(12, STEPS)
    run.logits[0, loop, logit_column("entropy")] = 0.2
    run.logits[0, loop, logit_column("surprisal")] = 0.1
    run.logits[0, loop, logit_column("margin")] = 0.95
    tokens = run.token_ids[0].copy()
    tokens[loop] = np.resize([7, 8, 9, 10], STEPS - 12)
    set_tokens(run, 0, tokens)
    return run


def confused_run():
    """Unsure from start to end, its middle layer's state moving as a typical healthy run's."""
    rng = np.random.default_rng(1)
    run = healthy_run()
    middle_layer_norms(run, 30.0 * np.exp(SPREAD_REFERENCE * np.resize([1.0, -1.0], STEPS)))
    run.logits[0, :, logit_column("entropy")] = rng.uniform(3.5, 7.0, STEPS)
    run.logits[0, :, logit_column("surprisal")] = rng.uniform(3.0, 9.0, STEPS)
    run.logits[0, :, logit_column("margin")] = rng.uniform(0.0, 0.1, STEPS)
    run.logits[0, :, logit_column("max_prob")] = rng.uniform(0.02, 0.15, STEPS)
    return run


def score_of(run):
    return risk_score(risk_features(run, 0, PROFILE), PROFILE)


def test_features_cover_every_model_feature_name():
    features = risk_features(healthy_run(), 0, PROFILE)
    assert set(features) == {"nan_or_inf", *RISK_FEATURE_NAMES}
    assert set(FACTOR_OF_FEATURE) == set(RISK_FEATURE_NAMES)


def test_features_default_to_the_model_type_profile():
    run = healthy_run()
    run.model_type = "gpt2"
    assert risk_features(run, 0) == risk_features(run, 0, load_profile("gpt2"))


def test_hand_computed_features():
    run = make_run(steps=10)
    run.logits[0, :, logit_column("entropy")] = [0.1] * 8 + [5.0, 5.0]
    run.logits[0, :, logit_column("margin")] = [0.05] * 3 + [0.5] * 7
    features = risk_features(run, 0, PROFILE)
    assert features["entropy_mean"] == pytest.approx(1.08)
    assert features["entropy_max"] == pytest.approx(5.0)
    assert features["high_entropy_fraction"] == pytest.approx(0.2)
    assert features["low_margin_fraction"] == pytest.approx(0.3)
    assert features["low_entropy_run_fraction"] == pytest.approx(0.8)  # one run of 8 >= low_entropy_min_run
    assert features["entropy_rise"] == 0.0  # fewer than two windows of history


def test_a_low_entropy_loop_scores_riskier_than_a_healthy_run():
    healthy, loop = score_of(healthy_run()), score_of(loop_run())
    assert loop > healthy
    assert risk_label(healthy, PROFILE) == "healthy"
    assert risk_label(loop, PROFILE) == "critical"
    assert risk_factors(risk_features(loop_run(), 0, PROFILE), PROFILE)[0] == "repetition_loop"


def test_an_unsure_run_is_a_warning_never_critical_out_of_the_box():
    healthy, confused = score_of(healthy_run()), score_of(confused_run())
    assert confused > healthy
    # The default profile is safe by construction: without a loop or NaN/Inf, even every
    # uncertainty feature at its worst stays below `critical`.
    assert risk_label(confused, PROFILE) == "warning"
    # (with the middle layer's state moving as a typical healthy run's does, or not measured at all)
    for spread, call_spread in ((SPREAD_REFERENCE, CALL_SPREAD_REFERENCE), (math.nan, math.nan)):
        worst = dict(risk_features(confused_run(), 0, PROFILE), answer_uncertainty=1.0, low_margin_fraction=1.0,
                     mid_layer_anomaly=1.0, attention_collapse_fraction=1.0, hidden_norm_spread=spread,
                     hidden_norm_spread_call=call_spread)
        assert risk_label(risk_score(worst, PROFILE), PROFILE) == "warning"
    factors = risk_factors(risk_features(confused_run(), 0, PROFILE), PROFILE)
    assert "uncertain_answer" in factors and "repetition_loop" not in factors


def test_healthy_runs_have_no_factors():
    for seed in range(5):
        assert risk_factors(risk_features(healthy_run(seed), 0, PROFILE), PROFILE) == []


def test_the_score_is_the_profile_logistic():
    profile = load_profile(
        "default",
        {"risk_model": {"features": ["entropy_mean", "repetition_loop"], "weights": [2.0, -1.0],
                        "reference": [0.0, 0.0], "bias": -3.0}},
    )
    features = {"nan_or_inf": 0.0, "entropy_mean": 1.25, "repetition_loop": 1.0}
    assert risk_score(features, profile) == pytest.approx(1 / (1 + math.exp(-(-3.0 + 2.5 - 1.0))))


def test_nan_or_inf_forces_one_and_leads_the_factors():
    features = dict(risk_features(healthy_run(), 0, PROFILE), nan_or_inf=1.0)
    assert risk_score(features, PROFILE) == 1.0
    assert risk_factors(features, PROFILE)[0] == "nan_or_inf"
    assert risk_label(1.0, PROFILE) == "critical"


def test_labels_follow_the_profile_thresholds():
    profile = load_profile("default", {"risk_threshold_warning": 0.3, "risk_threshold_critical": 0.6})
    assert [risk_label(x, profile) for x in (0.29, 0.3, 0.59, 0.6)] == ["healthy", "warning", "warning", "critical"]


def test_factors_are_ordered_by_their_push():
    profile = load_profile("default", {"risk_factor_min_logit": 0.1})
    features = dict(risk_features(healthy_run(), 0, profile), mid_layer_anomaly=1.0, attention_collapse_fraction=0.5)
    assert risk_factors(features, profile) == ["mid_layer_anomaly", "attention_collapse"]


def test_hidden_norm_spread_is_the_std_of_the_middle_layers_log_norm_over_the_first_eight_steps():
    run = make_run(steps=12, layers=6)  # middle layer: 2
    norms = np.array([50.0, 40.0, 44.0, 52.0, 47.0, 41.0, 49.0, 45.0, 4000.0, 0.1, 7.0, 9.0])
    middle_layer_norms(run, norms)
    run.hidden[0, :, 3, hidden_column("l2_norm")] = 1e4 * np.arange(1, 13)  # another layer never counts
    expected = np.log(norms[:8]).std()
    assert risk_features(run, 0, PROFILE)["hidden_norm_spread"] == pytest.approx(expected, rel=1e-6)
    middle_layer_norms(run, np.full(12, 30.0))
    assert risk_features(run, 0, PROFILE)["hidden_norm_spread"] == 0.0  # every step at the same norm


def test_hidden_norm_spread_counts_valid_steps_only():
    run = make_run(steps=12, layers=6)
    middle_layer_norms(run, np.array([50.0, 40.0, 44.0, 52.0, 47.0, 41.0, 49.0, 45.0, 30.0, 60.0, 7.0, 9.0]))
    run.valid[0, 5:] = False  # finished at step 4: five steps count
    expected = np.log([50.0, 40.0, 44.0, 52.0, 47.0]).std()
    assert risk_features(run, 0, PROFILE)["hidden_norm_spread"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("case", ["one step", "no layers", "hidden not captured"])
def test_hidden_norm_spread_is_not_measured_without_two_steps_of_hidden_statistics(case):
    run = make_run(steps=1 if case == "one step" else 12, layers=0 if case == "no layers" else 6)
    if case == "hidden not captured":  # what a compiled forward leaves in the buffers
        run.hidden[:] = np.nan
    assert math.isnan(risk_features(run, 0, PROFILE)["hidden_norm_spread"])


def test_a_feature_that_was_not_measured_moves_neither_the_score_nor_the_factors():
    """A compiled forward captures no hidden state: the term drops out, as if the run were typical."""
    for run in (healthy_run(), confused_run(), loop_run()):
        features = risk_features(run, 0, PROFILE)
        missing = dict(features, hidden_norm_spread=math.nan)
        typical = dict(features, hidden_norm_spread=SPREAD_REFERENCE)
        assert risk_score(missing, PROFILE) == risk_score(typical, PROFILE)
        assert risk_factors(missing, PROFILE) == risk_factors(typical, PROFILE)
    assert risk_score(dict(risk_features(healthy_run(), 0, PROFILE), hidden_norm_spread=math.nan), PROFILE) < 0.4


def test_a_middle_layer_that_barely_moves_raises_the_risk_and_says_so():
    features = risk_features(healthy_run(), 0, PROFILE)
    moving, steady = dict(features, hidden_norm_spread=0.3), dict(features, hidden_norm_spread=0.0)
    assert risk_score(steady, PROFILE) > risk_score(features, PROFILE) > risk_score(moving, PROFILE)
    assert "steady_hidden_state" in risk_factors(steady, PROFILE)
    assert risk_factors(moving, PROFILE) == []


def test_hidden_norm_spread_call_is_the_std_of_the_middle_layers_log_norm_over_every_valid_step():
    run = make_run(steps=12, layers=6)
    norms = np.array([50.0, 40.0, 44.0, 52.0, 47.0, 41.0, 49.0, 45.0, 4000.0, 0.1, 7.0, 9.0])
    middle_layer_norms(run, norms)
    features = risk_features(run, 0, PROFILE)
    assert features["hidden_norm_spread_call"] == pytest.approx(np.log(norms).std(), rel=1e-6)
    assert features["hidden_norm_spread_call"] != pytest.approx(features["hidden_norm_spread"])  # not only 8 steps
    run.valid[0, 5:] = False
    assert risk_features(run, 0, PROFILE)["hidden_norm_spread_call"] == pytest.approx(np.log(norms[:5]).std(), rel=1e-6)
    run.hidden[:] = np.nan  # a compiled forward: not measured
    assert math.isnan(risk_features(run, 0, PROFILE)["hidden_norm_spread_call"])


def test_a_feature_read_back_as_none_enters_at_its_reference_like_nan():
    features = risk_features(healthy_run(), 0, PROFILE)
    assert risk_score(dict(features, hidden_norm_spread_call=None), PROFILE) == \
        risk_score(dict(features, hidden_norm_spread_call=math.nan), PROFILE)
    assert risk_factors(dict(features, hidden_norm_spread_call=None), PROFILE) == \
        risk_factors(dict(features, hidden_norm_spread_call=math.nan), PROFILE)
