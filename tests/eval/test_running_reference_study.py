"""The running-reference study: before MIN_CALLS calls a call is scored with the shipped references,
afterwards with the median of the calls before it, never its own."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.eval.running_reference_study import TERMS, running_scores, with_references
from opentelemetry_instrumentation_corevital.analysis import risk_score
from opentelemetry_instrumentation_corevital.profiles import load_profile

SHIPPED = load_profile("default")


def row(spread, call_spread):
    return {"nan_or_inf": 0.0, "answer_uncertainty": 0.35, "repetition_loop": 0.0, "repetition_fraction": 0.0,
            "mid_layer_anomaly": 0.0, "attention_collapse_fraction": 0.0, "hidden_norm_spread": float(spread),
            "hidden_norm_spread_call": float(call_spread), "failure": 0, "failure_reason": "ok"}


def test_a_reference_moves_only_its_own_term():
    model = SHIPPED.risk_model
    k = model.features.index(TERMS[1])
    moved = with_references(SHIPPED, {TERMS[1]: 0.2})
    r = row(0.1, 0.15)
    expected_shift = -model.weights[k] * (0.2 - model.reference[k])  # weight x (feature - reference)
    logit = lambda p: np.log(risk_score(r, p) / (1 - risk_score(r, p)))  # noqa: E731
    assert logit(moved) - logit(SHIPPED) == pytest.approx(expected_shift, abs=1e-9)
    assert risk_score(r, with_references(SHIPPED, {})) == risk_score(r, SHIPPED)


def test_calls_are_scored_with_the_fixed_reference_first_then_the_median_of_the_calls_before_them():
    rows = [row(0.05 + 0.01 * k, 0.06 + 0.01 * k) for k in range(6)]
    scored, history = running_scores(rows, SHIPPED, min_calls=3)
    for k in range(3):
        assert scored[k]["risk_score"] == risk_score(rows[k], SHIPPED)
    for k in range(3, 6):
        before = {name: float(np.median([r[name] for r in rows[:k]])) for name in TERMS}
        assert scored[k]["risk_score"] == pytest.approx(risk_score(rows[k], with_references(SHIPPED, before)), abs=1e-12)
        assert scored[k]["risk_score"] != pytest.approx(risk_score(rows[k], SHIPPED), abs=1e-6)
    assert history[TERMS[0]] == [r[TERMS[0]] for r in rows]
    fixed, _ = running_scores(rows, SHIPPED, min_calls=None)
    assert [r["risk_score"] for r in fixed] == [risk_score(r, SHIPPED) for r in rows]
