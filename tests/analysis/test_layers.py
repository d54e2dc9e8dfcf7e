import numpy as np

from opentelemetry_instrumentation_corevital.analysis import blamed_layers
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import attention_column, hidden_column, make_run

PROFILE = load_profile("default")
COLLAPSED = attention_column("collapsed_heads")


def test_healthy_run_blames_nothing():
    assert blamed_layers(make_run(attention=True), 0, PROFILE) == []


def test_nan_blames_the_layer_it_started_in_not_the_layers_it_spread_to():
    run = make_run(steps=6, layers=6)
    run.hidden[0, 2, 3:, hidden_column("nan_count")] = 5
    run.hidden[0, 4, 1:, hidden_column("inf_count")] = 1
    assert blamed_layers(run, 0, PROFILE) == [1, 3]


def test_l2_explosion_blames_its_first_middle_layer():
    run = make_run(steps=5, layers=9)  # middle = 3..5
    run.hidden[0, 1, 4:, hidden_column("l2_norm")] = 1e4
    assert blamed_layers(run, 0, PROFILE) == [4]


def test_structural_collapse_is_not_blamed_but_a_lasting_change_is():
    run = make_run(steps=8, layers=4, attention=True, num_heads=8)
    run.attention[0, :, 1, COLLAPSED] = 3  # the same three heads collapse at every step: by design
    assert blamed_layers(run, 0, PROFILE) == []
    run.attention[0, 6:, 2, COLLAPSED] = 4  # 4 = max(1, 0.5 * 8) above the layer's median of 0, 2 of 8 steps
    assert blamed_layers(run, 0, PROFILE) == [2]
    run.attention[0, 6:, 1, COLLAPSED] = 4  # only one above this layer's usual three
    assert blamed_layers(run, 0, PROFILE) == [2]


def test_collapse_on_padding_or_unobserved_steps_is_ignored():
    run = make_run(steps=8, layers=4, attention=True, num_heads=4)
    run.valid[0, 6:] = False
    run.attention[0, 7, 0, COLLAPSED] = 4
    run.attention[0, 0::2] = np.nan
    assert blamed_layers(run, 0, PROFILE) == []
