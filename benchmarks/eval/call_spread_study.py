"""python -m benchmarks.eval.call_spread_study: the default risk model's two hidden-state terms,
w8 x (r8 - hidden_norm_spread) (the answer's first 8 steps) and wall x (rall - hidden_norm_spread_call)
(every step of the call), their weights chosen leave-one-model-out.

For each model F (the fold's fit model): each reference is the median of the feature on F's healthy
rows, and (w8, wall) the pair of the grid with the highest risk AUROC on F's rows among those that
keep F's loops AUROC >= LOOPS_FLOOR and `critical` on at most CRITICAL_CEILING of its healthy rows
(ties: the smaller total weight). F's rows are its 200 evaluation rows and, with --heldout-cache, the
220 held-out items not among them. The pick is scored on the other model's rows, which took no part.
Also scored on both: the default of the fourth round (w8 24, no call term) and the shipped default.
Writes results/call_spread_study.json and prints the tables of docs/evaluation.md (fifth round).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.profiles import load_profile

from .metrics import auroc
from .models import MODELS
from .norm_spread_study import markdown as fold_markdown
from .norm_spread_study import scored
from .transfer import row_sets, summary

HERE = Path(__file__).resolve().parent
TERMS = ("hidden_norm_spread", "hidden_norm_spread_call")
W8 = (0.0, 8.0, 16.0, 24.0, 32.0)
WALL = (0.0, 8.0, 16.0, 24.0, 32.0, 48.0)
LOOPS_FLOOR = 0.95
CRITICAL_CEILING = 0.02


def with_terms(shipped, weights: dict[str, float], references: dict[str, float]):
    """The shipped default's risk model with the terms weight x (reference - feature) of TERMS in place
    of its own (a zero weight drops the term); the rest of the model as shipped."""
    model = shipped.risk_model
    bias = model.bias
    kept = []
    for k, name in enumerate(model.features):
        if name in TERMS:  # fold the shipped term's reference out of the bias
            bias += model.weights[k] * model.reference[k]
        else:
            kept.append(k)
    features = [model.features[k] for k in kept]
    weights_out = [model.weights[k] for k in kept]
    reference_out = [model.reference[k] for k in kept]
    for name in TERMS:
        if weights.get(name, 0.0):
            features.append(name)
            weights_out.append(-weights[name])
            reference_out.append(references[name])
            bias += weights[name] * references[name]
    risk_model = {"features": features, "weights": weights_out, "bias": round(bias, 6), "reference": reference_out}
    return load_profile("default", {"risk_model": risk_model})


def fold_fit(rows: list[dict], shipped) -> dict:
    failed = np.array([r["failure"] for r in rows], bool)
    loop = np.array([r["failure_reason"] == "degenerate" for r in rows], bool)
    references = {name: round(float(np.nanmedian(np.array([r[name] for r in rows], float)[~failed])), 2)
                  for name in TERMS}
    candidates = []
    for w8 in W8:
        for wall in WALL:
            profile = with_terms(shipped, {TERMS[0]: w8, TERMS[1]: wall}, references)
            rescored = scored(rows, profile)
            score = np.array([r["risk_score"] for r in rescored])
            critical = np.array([r["risk_label"] == "critical" for r in rescored])
            candidates.append({"w8": w8, "wall": wall, "auroc": auroc(failed, score), "auroc_loops": auroc(loop, score),
                               "healthy_critical": float(critical[~failed].mean())})
    allowed = [c for c in candidates if c["auroc_loops"] >= LOOPS_FLOOR and c["healthy_critical"] <= CRITICAL_CEILING]
    best = max(allowed, key=lambda c: (round(c["auroc"], 3), -(c["w8"] + c["wall"])))
    return {"references": references, "w8": best["w8"], "wall": best["wall"], "candidates": candidates}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.call_spread_study", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="folder holding one summaries cache per model")
    parser.add_argument("--heldout-cache", type=Path, default=None,
                        help="the --split heldout caches, one per model (adds the 220 unseen held-out items)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "call_spread_study.json")
    args = parser.parse_args(argv)

    shipped = load_profile("default")
    sets = row_sets(args.cache, args.heldout_cache, shipped)
    results: dict = {"folds": {}, "scored": {}}
    for fit_model in MODELS:
        results["folds"][fit_model] = fold_fit([r for rows in sets[fit_model].values() for r in rows], shipped)
    profiles = {"fourth round (w8 24 at 0.12)": with_terms(shipped, {TERMS[0]: 24.0}, {TERMS[0]: 0.12}),
                "shipped default": shipped}
    for fit_model, fold in results["folds"].items():
        profiles[f"chosen on {fit_model}"] = with_terms(shipped, {TERMS[0]: fold["w8"], TERMS[1]: fold["wall"]},
                                                        fold["references"])
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
        lines.append(f"- fit on {model}: references {fold['references']}, w8 {fold['w8']:g}, wall {fold['wall']:g}")
        lines.append("  " + "; ".join(f"({c['w8']:g}, {c['wall']:g}): {c['auroc']:.3f} L{c['auroc_loops']:.3f} "
                                      f"C{c['healthy_critical']:.1%}" for c in fold["candidates"]))
    table = fold_markdown({"folds": {}, "scored": results["scored"]})
    return "\n".join(lines) + "\n" + table


if __name__ == "__main__":
    main()
