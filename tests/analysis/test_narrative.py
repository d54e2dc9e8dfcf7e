import re

import numpy as np

from opentelemetry_instrumentation_corevital.analysis import analyze
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import attention_column, hidden_column, logit_column, make_run, set_tokens

PROFILE = load_profile("default")


def sentences(text):
    return [s for s in re.split(r"(?<=\.)\s+", text) if s]


def narrative_of(run):
    return analyze(run, PROFILE).sequences[0].narrative


def test_quiet_run():
    sequence = analyze(make_run(steps=12), PROFILE).sequences[0]
    assert sequence.narrative == (
        f"Generated 12 steps with risk {sequence.risk_score:.2f} (healthy). "
        "Mean entropy was 2.00 bits and no health flag was raised."
    )


def test_empty_run_still_has_two_sentences():
    assert len(sentences(narrative_of(make_run(steps=0)))) == 2


def test_loop_is_described_with_period_and_steps():
    run = make_run(steps=30)
    set_tokens(run, 0, [*range(100, 105), *([7, 8, 9, 10] * 5), *range(200, 205)])
    text = narrative_of(run)
    assert "A phrase of 4 tokens repeats from step 5 to step 24." in text
    assert 2 <= len(sentences(text)) <= 4


def test_everything_wrong_at_once_stays_within_four_sentences():
    run = make_run(steps=40, layers=6, attention=True)
    run.hidden[0, 30, 2, hidden_column("nan_count")] = 1
    run.logits[0, 20:, logit_column("entropy")] = 6.0
    run.attention[0, 25:, 4, attention_column("collapsed_heads")] = 12
    set_tokens(run, 0, [*([3, 4, 5] * 5), *range(60, 85)])
    text = narrative_of(run)
    assert len(sentences(text)) == 4
    assert "NaN values first appeared at step 30." in text
    assert "Implicated layers: 2, 4." in text


def test_no_token_ids_leak_into_the_text():
    run = make_run(steps=12)
    set_tokens(run, 0, np.arange(987650, 987662))
    assert "98765" not in narrative_of(run)
