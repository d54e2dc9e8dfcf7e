"""The fourth round's study: its candidate risk models are the shipped default with one term changed,
and a fold picks the strongest weight its own model's healthy runs tolerate."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.eval.norm_spread_study import fold_fit, with_term
from opentelemetry_instrumentation_corevital.analysis import risk_score
from opentelemetry_instrumentation_corevital.profiles import load_profile

SHIPPED = load_profile("default")


def rows(spreads, failures, uncertainty=0.35):
    uncertainty = np.broadcast_to(uncertainty, len(spreads))
    return [{"nan_or_inf": 0.0, "answer_uncertainty": float(u), "repetition_loop": 0.0, "repetition_fraction": 0.0,
             "mid_layer_anomaly": 0.0, "attention_collapse_fraction": 0.0, "hidden_norm_spread": float(spread),
             "failure": failure, "failure_reason": "wrong" if failure else "ok"}
            for spread, failure, u in zip(spreads, failures, uncertainty)]


def test_the_candidates_are_the_shipped_default_with_its_term_replaced():
    model = SHIPPED.risk_model
    k = model.features.index("hidden_norm_spread")
    shipped_again = with_term(SHIPPED, -model.weights[k], model.reference[k])
    before = with_term(SHIPPED, 0.0, 0.0)
    for row in rows([0.02, 0.12, 0.3], [0, 0, 0]):
        # the fifth round's whole-call term is dropped: at its reference, the shipped default's score
        at_call_reference = dict(row, hidden_norm_spread_call=model.reference[model.features.index("hidden_norm_spread_call")])
        assert risk_score(row, shipped_again) == pytest.approx(risk_score(at_call_reference, SHIPPED), abs=1e-12)
        assert risk_score(dict(row, hidden_norm_spread_call=0.0), shipped_again) == risk_score(row, shipped_again)
        # without the term the spread moves nothing: the second round's default (bias -4.2)
        assert risk_score(row, before) == pytest.approx(1 / (1 + np.exp(-(-4.2 + 4.5 * 0.35))), abs=1e-12)


def test_a_fold_takes_its_healthy_median_and_stops_where_healthy_runs_would_turn_critical():
    rng = np.random.default_rng(0)
    healthy, failed = rng.uniform(0.04, 0.2, 100), rng.uniform(0.02, 0.14, 60)
    answers = rows(np.r_[healthy, failed], [0] * 100 + [1] * 60, uncertainty=rng.uniform(0.2, 0.9, 160))
    loops = [dict(row, repetition_loop=1.0, repetition_fraction=0.5, failure_reason="degenerate")
             for row in rows(rng.uniform(0.02, 0.2, 10), [1] * 10)]
    fold = fold_fit(answers + loops, SHIPPED)
    assert fold["reference"] == round(float(np.median(healthy)), 2)
    by_weight = {c["weight"]: c for c in fold["candidates"]}
    chosen = by_weight[fold["weight"]]
    assert chosen["healthy_critical"] <= 0.02 and chosen["auroc"] > by_weight[0.0]["auroc"]
    # every stronger weight with a higher AUROC turns more than 2 % of the healthy runs critical
    assert all(c["healthy_critical"] > 0.02 for c in fold["candidates"]
               if c["weight"] > fold["weight"] and round(c["auroc"], 3) > round(chosen["auroc"], 3))
    assert any(c["healthy_critical"] > 0.02 for c in fold["candidates"])  # the ceiling did bind
