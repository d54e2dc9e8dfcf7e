import numpy as np

from opentelemetry_instrumentation_corevital.analysis import Repetition, analyze, repetition_loop
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import PLAIN_COSINE, make_run, set_tokens

PROFILE = load_profile("default")
PHRASE = [7, 8, 9, 10]  # "I'm a cat ."


def tokens_with(prefix_len: int, body: list[int], steps: int) -> np.ndarray:
    tokens = np.arange(1000, 1000 + steps)
    tokens[prefix_len : prefix_len + len(body)] = body
    return tokens


def test_phrase_loop_of_period_four_is_found_with_start_end_and_period():
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(5, PHRASE * 4, 30))  # copies at steps 5, 9, 13, 17
    assert repetition_loop(run, 0, PROFILE) == Repetition(start_step=5, end_step=20, period=4)
    sequence = analyze(run, PROFILE).sequences[0]
    assert sequence.flags.repetition_loop_detected
    assert set(range(5, 21)) <= set(sequence.flagged_steps)


def test_two_copies_of_a_phrase_are_not_a_loop_but_a_phrase_going_on_is():
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(3, PHRASE * 2, 30))  # "The dog runs fast. The dog runs fast."
    assert repetition_loop(run, 0, PROFILE) is None
    # A short phrase must also keep going for repetition_min_steps (10) repeating steps.
    set_tokens(run, 0, tokens_with(3, PHRASE * 3, 30))
    assert repetition_loop(run, 0, PROFILE) is None
    set_tokens(run, 0, tokens_with(3, PHRASE * 4, 30))
    assert repetition_loop(run, 0, PROFILE) == Repetition(start_step=3, end_step=18, period=4)


def test_a_loop_is_judged_against_the_models_own_cosine_scale():
    # A model whose unrelated states already sit at cosine 0.9 (Gemma 3 does): an absolute
    # threshold would call every token repeat a loop or none; the relative cosine does not.
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(3, PHRASE * 4, 30))
    cosine = run.repetition_cosine[0]
    cosine[np.isfinite(cosine) & (cosine == PLAIN_COSINE)] = 0.9
    assert repetition_loop(run, 0, PROFILE) == Repetition(start_step=3, end_step=18, period=4)
    cosine[np.isfinite(cosine) & (cosine > 0.9)] = 0.88  # token repeats, states no closer than usual
    assert repetition_loop(run, 0, PROFILE) is None


def test_a_single_repeated_token_pair_is_not_a_loop():
    run = make_run(steps=20)
    set_tokens(run, 0, tokens_with(4, [7, 8, 7, 8], 20))  # "New York New York": cosine high, but short
    assert repetition_loop(run, 0, PROFILE) is None


def test_a_token_run_is_a_loop_only_from_repetition_min_steps():
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(4, [7] * PROFILE.repetition_min_steps, 30))  # "0.999999999": digits
    assert repetition_loop(run, 0, PROFILE) is None
    set_tokens(run, 0, tokens_with(4, [7] * (PROFILE.repetition_min_steps + 1), 30))
    assert repetition_loop(run, 0, PROFILE) == Repetition(start_step=4, end_step=4 + PROFILE.repetition_min_steps, period=1)


def test_token_repeats_without_hidden_state_agreement_are_not_a_loop():
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(5, PHRASE * 4, 30))
    run.repetition_cosine[0, :, 3] = PLAIN_COSINE  # lag index 3 = period 4
    found = repetition_loop(run, 0, PROFILE)
    assert found is None or found.period != 4


def test_without_cosine_tokens_alone_decide():
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(5, PHRASE * 2, 30))
    run.repetition_cosine = None
    assert repetition_loop(run, 0, PROFILE) is None
    run.token_ids[0] = tokens_with(5, PHRASE * 4, 30)
    assert repetition_loop(run, 0, PROFILE) == Repetition(start_step=5, end_step=20, period=4)


def test_periods_beyond_the_kept_lags_fall_back_to_tokens():
    run = make_run(steps=40, lags=2)
    phrase = [21, 22, 23, 24, 25]
    set_tokens(run, 0, tokens_with(2, phrase * 2, 40))
    assert repetition_loop(run, 0, PROFILE) is None  # two copies, no cosine at lag 5
    set_tokens(run, 0, tokens_with(2, phrase * 3, 40))
    assert repetition_loop(run, 0, PROFILE) == Repetition(start_step=2, end_step=16, period=5)


def test_loops_longer_than_max_period_are_ignored():
    run = make_run(steps=40)
    phrase = list(range(50, 56))
    set_tokens(run, 0, tokens_with(1, phrase * 3, 40))
    assert repetition_loop(run, 0, load_profile("default", {"repetition_max_period": 5})) is None
    assert repetition_loop(run, 0, PROFILE).period == 6


def test_loops_in_padding_are_ignored():
    run = make_run(steps=30)
    set_tokens(run, 0, tokens_with(12, PHRASE * 4, 30))
    run.valid[0, 14:] = False
    assert repetition_loop(run, 0, PROFILE) is None


def test_the_earliest_loop_wins():
    run = make_run(steps=40)
    tokens = tokens_with(2, [5] * 12, 40)
    tokens[20:32] = PHRASE * 3
    set_tokens(run, 0, tokens)
    assert repetition_loop(run, 0, PROFILE).start_step == 2
