import numpy as np

from opentelemetry_instrumentation_corevital.analysis import HealthFlags, analyze, health_flags
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import attention_column, hidden_column, logit_column, make_run

PROFILE = load_profile("default")
L2 = hidden_column("l2_norm")


def test_healthy_run_raises_nothing():
    flags = health_flags(make_run(), 0, PROFILE)
    assert flags == HealthFlags()
    assert not flags.any_raised


def test_nan_in_a_middle_layer_sets_nan_and_mid_layer_flags_and_risk_one():
    run = make_run(steps=10, layers=6)  # middle third = layers 2, 3
    run.hidden[0, 5, 3, hidden_column("nan_count")] = 4
    flags = health_flags(run, 0, PROFILE)
    assert flags.nan_detected and flags.mid_layer_anomaly_detected
    assert not flags.inf_detected
    sequence = analyze(run, PROFILE).sequences[0]
    assert sequence.risk_score == 1.0
    assert sequence.label == "critical"
    assert sequence.risk_factors[0] == "nan_or_inf"
    assert 5 in sequence.flagged_steps


def test_nan_in_the_last_layer_is_not_a_mid_layer_anomaly():
    run = make_run(steps=4, layers=6)
    run.hidden[0, 1, 5, hidden_column("nan_count")] = 1
    flags = health_flags(run, 0, PROFILE)
    assert flags.nan_detected and not flags.mid_layer_anomaly_detected


def test_nan_or_inf_in_the_logits_counts():
    run = make_run(steps=4)
    run.logits[0, 2, logit_column("inf_count")] = 1
    flags = health_flags(run, 0, PROFILE)
    assert flags.inf_detected and not flags.nan_detected
    run.logits[0, 3, logit_column("nan_count")] = 7
    assert health_flags(run, 0, PROFILE).nan_detected


def test_l2_explosion_in_the_middle_third_relative_to_the_same_layer_over_the_call():
    run = make_run(steps=8, layers=9)  # early = 0..2, middle = 3..5
    usual = run.hidden[0, 1, 4, L2]
    run.hidden[0, 4, 4, L2] = usual * 8.5
    assert health_flags(run, 0, PROFILE).mid_layer_anomaly_detected
    run.hidden[0, 4, 4, L2] = usual * 7.5
    assert not health_flags(run, 0, PROFILE).mid_layer_anomaly_detected


def test_middle_layers_far_above_the_early_ones_at_every_step_are_the_architecture():
    run = make_run(steps=8, layers=9)
    run.hidden[0, :, 3:6, L2] *= 50.0  # Gemma 3: middle-layer norms dwarf the early ones, always
    assert not health_flags(run, 0, PROFILE).mid_layer_anomaly_detected


def test_prompt_step_with_ten_times_larger_norms_everywhere_is_not_an_anomaly():
    run = make_run(steps=40, layers=9)
    run.hidden[0, 0, :, L2] *= 10.0
    global_early_mean = run.hidden[0, :, 0:3, L2].mean()
    assert run.hidden[0, 0, 3:6, L2].max() > 8.0 * global_early_mean  # a global baseline would fire
    assert not health_flags(run, 0, PROFILE).mid_layer_anomaly_detected


def test_l2_explosion_in_the_late_third_does_not_raise_the_mid_layer_flag():
    run = make_run(steps=3, layers=9)
    run.hidden[0, 1, 7, L2] = 1e6
    assert not health_flags(run, 0, PROFILE).mid_layer_anomaly_detected


def test_padding_steps_never_count():
    run = make_run(steps=8, layers=6)
    run.valid[0, 5:] = False
    run.hidden[0, 6, 2, hidden_column("nan_count")] = 3
    run.hidden[0, 7, 3, L2] = 1e9
    run.logits[0, 5:, logit_column("entropy")] = 9.0
    run.logits[0, 6, logit_column("inf_count")] = 2
    assert health_flags(run, 0, PROFILE) == HealthFlags()
    assert analyze(run, PROFILE).sequences[0].flagged_steps == []


def test_high_entropy_steps_are_counted_strictly_above_the_threshold():
    run = make_run(steps=6)
    run.logits[0, [1, 3, 4], logit_column("entropy")] = [4.5, 4.0, 7.0]
    assert health_flags(run, 0, PROFILE).high_entropy_steps == 2
    assert health_flags(run, 0, load_profile("default", {"high_entropy_bits": 3.9})).high_entropy_steps == 3


def test_attention_collapse_needs_attention():
    run = make_run(steps=4, attention=False)
    assert not health_flags(run, 0, PROFILE).attention_collapse_detected
    run = make_run(steps=8, attention=True, num_heads=12)
    assert not health_flags(run, 0, PROFILE).attention_collapse_detected
    run.attention[0, 5:, 1, attention_column("collapsed_heads")] = 6  # half the heads, from step 5 on
    assert health_flags(run, 0, PROFILE).attention_collapse_detected


def test_collapse_that_flickers_or_is_structural_is_not_flagged():
    run = make_run(steps=8, attention=True, num_heads=12)
    run.attention[0, 3, 1, attention_column("collapsed_heads")] = 12  # one step only
    run.attention[0, :, 2, attention_column("collapsed_heads")] = 10  # every step: a sink layer
    assert not health_flags(run, 0, PROFILE).attention_collapse_detected


def test_unobserved_attention_steps_are_not_collapse():
    run = make_run(steps=4, attention=True)
    run.attention[0, 1::2] = np.nan
    assert not health_flags(run, 0, PROFILE).attention_collapse_detected


def test_flags_merge_for_a_batch():
    a = HealthFlags(nan_detected=True, high_entropy_steps=2)
    b = HealthFlags(repetition_loop_detected=True, high_entropy_steps=3)
    merged = a.merge(b)
    assert merged == HealthFlags(nan_detected=True, repetition_loop_detected=True, high_entropy_steps=5)
    assert merged.raised() == ("nan_detected", "high_entropy_steps", "repetition_loop_detected")
