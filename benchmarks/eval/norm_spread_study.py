"""python -m benchmarks.eval.norm_spread_study: the weight and reference of the default risk model's
hidden-state term `weight x (reference - hidden_norm_spread)`, chosen leave-one-model-out.

For each model F (the fold's fit model): the reference is the median hidden_norm_spread of F's
healthy rows, and the weight the one of WEIGHTS with the highest risk AUROC on F's rows among
those that keep F's loops AUROC >= LOOPS_FLOOR and `critical` on at most CRITICAL_CEILING of
its healthy rows. F's rows are its 200 evaluation rows and, with --heldout-cache, the 220
held-out items not among them. The choice is then scored on the other model's rows, which
played no part in it. Also scored on both models: the default without the term (before) and
the default as shipped (after). Scores go through risk_score and risk_label, as a span's do.
Writes results/norm_spread_study.json and prints the tables of docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.analysis import risk_label, risk_score
from opentelemetry_instrumentation_corevital.profiles import load_profile

from .metrics import auroc, interval_text
from .models import MODELS
from .transfer import row_sets, summary

HERE = Path(__file__).resolve().parent
FEATURE = "hidden_norm_spread"
WEIGHTS = (0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0, 40.0, 48.0)
LOOPS_FLOOR = 0.95
CRITICAL_CEILING = 0.02


# The fifth round's whole-call term (call_spread_study.py): dropped here, so the candidates stay the
# fourth round's default (its other terms as shipped) with this one term changed.
LATER_TERMS = ("hidden_norm_spread_call",)


def with_term(shipped, weight: float, reference: float):
    """The shipped default's risk model with the term weight x (reference - feature) in place of its own,
    and without LATER_TERMS."""
    model = shipped.risk_model
    kept = [k for k, name in enumerate(model.features) if name != FEATURE and name not in LATER_TERMS]
    bias = model.bias + sum(w * r for name, w, r in zip(model.features, model.weights, model.reference)
                            if name == FEATURE or name in LATER_TERMS)
    risk_model = {
        "features": [model.features[k] for k in kept] + [FEATURE],
        "weights": [model.weights[k] for k in kept] + [-weight],
        "bias": round(bias + weight * reference, 6),
        "reference": [model.reference[k] for k in kept] + [reference],
    }
    return load_profile("default", {"risk_model": risk_model})


def scored(rows: list[dict], profile) -> list[dict]:
    """The rows with the risk score and label `profile` gives them (their features are the profile's own)."""
    out = []
    for row in rows:
        score = risk_score(row, profile)
        out.append({**row, "risk_score": score, "risk_label": risk_label(score, profile)})
    return out


def fold_fit(rows: list[dict], shipped) -> dict:
    """The reference and weight chosen on one model's rows, with each candidate weight's figures there."""
    failed = np.array([r["failure"] for r in rows], bool)
    loop = np.array([r["failure_reason"] == "degenerate" for r in rows], bool)
    spread = np.array([r[FEATURE] for r in rows], float)
    reference = round(float(np.nanmedian(spread[~failed])), 2)
    candidates = []
    for weight in WEIGHTS:
        rescored = scored(rows, with_term(shipped, weight, reference))
        score = np.array([r["risk_score"] for r in rescored])
        critical = np.array([r["risk_label"] == "critical" for r in rescored])
        candidates.append({"weight": weight, "auroc": auroc(failed, score), "auroc_loops": auroc(loop, score),
                           "healthy_critical": float(critical[~failed].mean())})
    allowed = [c for c in candidates if c["auroc_loops"] >= LOOPS_FLOOR and c["healthy_critical"] <= CRITICAL_CEILING]
    best = max(allowed, key=lambda c: (round(c["auroc"], 3), -c["weight"]))
    return {"reference": reference, "weight": best["weight"], "candidates": candidates}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.norm_spread_study", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="folder holding one summaries cache per model")
    parser.add_argument("--heldout-cache", type=Path, default=None,
                        help="the --split heldout caches, one per model (adds the 220 unseen held-out items)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "norm_spread_study.json")
    args = parser.parse_args(argv)

    shipped = load_profile("default")
    sets = row_sets(args.cache, args.heldout_cache, shipped)
    results: dict = {"folds": {}, "scored": {}}
    for fit_model in MODELS:
        fit_rows = [r for rows in sets[fit_model].values() for r in rows]
        results["folds"][fit_model] = fold_fit(fit_rows, shipped)
    profiles = {"before (no term)": with_term(shipped, 0.0, 0.0), "fourth round default": with_term(shipped, 24.0, 0.12),
                "shipped default": shipped}
    for fit_model, fold in results["folds"].items():
        profiles[f"chosen on {fit_model}"] = with_term(shipped, fold["weight"], fold["reference"])
    for name, profile in profiles.items():
        results["scored"][name] = {
            model: {which: summary(scored(rows, profile), args.bootstrap) for which, rows in by_set.items()}
            for model, by_set in sets.items()
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    lines = []
    for model, fold in results["folds"].items():
        tried = ", ".join(f"{c['weight']:g}: {c['auroc']:.3f}" for c in fold["candidates"])
        lines.append(f"- fit on {model}: reference {fold['reference']}, weight {fold['weight']:g} (AUROC by weight: {tried})")
    lines += ["", "| risk model | model | rows | risk AUROC | loops AUROC | wrong-answer AUROC | not-loop AUROC "
              "| any flag on healthy | critical on healthy | warning or critical on healthy | loops critical "
              "| wrong answers warning or critical |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_model in results["scored"].items():
        for model, by_set in by_model.items():
            for which, r in by_set.items():
                lines.append(
                    f"| {name} | {model} | {which} {r['rows']} ({r['failures']}: {r['loops']} / {r['wrong']}) "
                    f"| {interval_text(r['auroc'])} | {interval_text(r['auroc_loops'])} | {interval_text(r['auroc_wrong'])} "
                    f"| {interval_text(r['auroc_not_loops'])} | {r['healthy_any_flag']:.1%} of {r['healthy']} "
                    f"| {r['healthy_critical']:.1%} | {r['healthy_warning_or_critical']:.1%} "
                    f"| {r['loops_critical']:.1%} | {r['wrong_warning_or_critical']:.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
