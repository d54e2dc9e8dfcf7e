import hashlib
import math

import pytest

from opentelemetry_instrumentation_corevital.analysis import FINGERPRINT_LAYOUT, fingerprint, prompt_hash
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import hidden_column, logit_column, make_run, set_tokens

PROFILE = load_profile("default")


def entry(vector, name):
    return vector[FINGERPRINT_LAYOUT.index(name)]


def test_layout_has_unique_names_and_fixes_the_length():
    assert len(set(FINGERPRINT_LAYOUT)) == len(FINGERPRINT_LAYOUT)
    for steps in (0, 1, 17):
        vector = fingerprint(make_run(steps=steps), 0, PROFILE, risk_score=0.2, failure_risk=0.1)
        assert len(vector) == len(FINGERPRINT_LAYOUT)
        assert all(isinstance(x, float) and math.isfinite(x) for x in vector)


def test_entries_hold_what_the_layout_names():
    run = make_run(steps=15, layers=4, entropy=2.0, margin=0.25)
    run.logits[0, 3, logit_column("entropy")] = 6.0
    run.hidden[0, :, 3, hidden_column("l2_norm")] = 4 * run.hidden[0, :, 0, hidden_column("l2_norm")]
    set_tokens(run, 0, [1, 2, 3] * 5)
    vector = fingerprint(run, 0, PROFILE, risk_score=0.42, failure_risk=0.3)
    assert entry(vector, "valid_steps_log2") == pytest.approx(4.0)
    assert entry(vector, "entropy_max") == 6.0
    assert entry(vector, "margin_mean") == pytest.approx(0.25)
    assert entry(vector, "high_entropy_fraction") == pytest.approx(1 / 15)
    assert entry(vector, "repetition_period") == 3.0
    assert entry(vector, "repetition_loop") == 1.0
    assert entry(vector, "hidden_l2_log2_growth") == pytest.approx(2.0)
    assert entry(vector, "risk_score") == 0.42
    assert entry(vector, "failure_risk") == 0.3


def test_non_finite_summaries_still_give_finite_entries():
    run = make_run(steps=5)
    run.logits[0, 1] = float("nan")
    run.hidden[0, 2] = float("inf")
    vector = fingerprint(run, 0, PROFILE, risk_score=1.0, failure_risk=1.0)
    assert all(math.isfinite(x) for x in vector)
    assert entry(vector, "nan_or_inf") == 1.0


def test_prompt_hash_normalises_whitespace_only():
    base = prompt_hash("Hello   world\n", "gpt2")
    assert base == prompt_hash(" Hello world", "gpt2")
    assert base == hashlib.sha256(b"gpt2\ntext\nHello world").hexdigest()
    assert base != prompt_hash("hello world", "gpt2")
    assert base != prompt_hash("Hello world", "distilgpt2")


def test_prompt_hash_of_token_ids():
    assert prompt_hash([1, 2, 3], "m") == hashlib.sha256(b"m\nids\n1,2,3").hexdigest()
    assert prompt_hash((1, 2, 3), "m") == prompt_hash([1, 2, 3], "m")
    assert prompt_hash([1, 2, 3], "m") != prompt_hash("1,2,3", "m")
