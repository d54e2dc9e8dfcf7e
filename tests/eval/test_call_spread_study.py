"""The fifth round's study: its candidates are the shipped default with its two hidden-state terms set,
and a fold stays within its own model's loop and healthy-run limits."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.eval.call_spread_study import TERMS, fold_fit, with_terms
from opentelemetry_instrumentation_corevital.analysis import risk_score
from opentelemetry_instrumentation_corevital.profiles import load_profile

SHIPPED = load_profile("default")


def row(spread, call_spread, uncertainty=0.35, failure=0, loop=False):
    return {"nan_or_inf": 0.0, "answer_uncertainty": float(uncertainty), "repetition_loop": float(loop),
            "repetition_fraction": 0.5 if loop else 0.0, "mid_layer_anomaly": 0.0, "attention_collapse_fraction": 0.0,
            "hidden_norm_spread": float(spread), "hidden_norm_spread_call": float(call_spread), "failure": failure,
            "failure_reason": "degenerate" if loop else ("wrong" if failure else "ok")}


def test_the_shipped_weights_give_the_shipped_default_and_zero_weights_drop_both_terms():
    model = SHIPPED.risk_model
    weights = {name: -model.weights[model.features.index(name)] for name in TERMS}
    references = {name: model.reference[model.features.index(name)] for name in TERMS}
    again, neither = with_terms(SHIPPED, weights, references), with_terms(SHIPPED, {}, {})
    for r in (row(0.02, 0.3), row(0.12, 0.13), row(0.3, 0.01)):
        assert risk_score(r, again) == pytest.approx(risk_score(r, SHIPPED), abs=1e-12)
        assert risk_score(r, neither) == pytest.approx(1 / (1 + np.exp(-(-4.2 + 4.5 * 0.35))), abs=1e-12)


def test_a_fold_keeps_its_loops_first_and_its_healthy_runs_out_of_critical():
    rng = np.random.default_rng(1)
    healthy = [row(s, c, u) for s, c, u in zip(rng.uniform(0.05, 0.2, 100), rng.uniform(0.08, 0.2, 100),
                                                rng.uniform(0.2, 0.9, 100))]
    failed = [row(s, c, u, failure=1) for s, c, u in zip(rng.uniform(0.02, 0.15, 60), rng.uniform(0.03, 0.14, 60),
                                                          rng.uniform(0.2, 0.9, 60))]
    loops = [row(s, c, failure=1, loop=True) for s, c in zip(rng.uniform(0.02, 0.2, 10), rng.uniform(0.02, 0.2, 10))]
    fold = fold_fit(healthy + failed + loops, SHIPPED)
    chosen = next(c for c in fold["candidates"] if (c["w8"], c["wall"]) == (fold["w8"], fold["wall"]))
    assert chosen["healthy_critical"] <= 0.02 and chosen["auroc_loops"] >= 0.95
    assert chosen["auroc"] > next(c for c in fold["candidates"] if (c["w8"], c["wall"]) == (0.0, 0.0))["auroc"]
    assert all(round(c["auroc"], 3) <= round(chosen["auroc"], 3) for c in fold["candidates"]
               if c["healthy_critical"] <= 0.02 and c["auroc_loops"] >= 0.95)
