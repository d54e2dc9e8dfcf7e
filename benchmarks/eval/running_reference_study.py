"""python -m benchmarks.eval.running_reference_study: the default risk model's hidden-state references
as per-model running statistics instead of fixed numbers, measured before building them.

Each model's calls arrive in dataset order, as one process would see them. Call n is scored with the
shipped default, except that the reference of each hidden-state term (hidden_norm_spread,
hidden_norm_spread_call) is the median of that feature over the calls 1..n-1 of the same model once
there are at least MIN_CALLS of them (before that, the fixed reference). No labels are read to set a
reference. Sets: the 200 evaluation rows, the 220 unseen held-out rows, and the held-out rows after
the evaluation rows in one process (a history already long). Also: the arrival order shuffled
(SHUFFLES seeded orders, the mean), since the dataset's order comes in blocks of one prompt kind.
Writes results/running_reference_study.json and prints the table of docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.analysis import risk_label, risk_score
from opentelemetry_instrumentation_corevital.profiles import load_profile

from .metrics import auroc, ece
from .models import MODELS
from .transfer import row_sets, summary

HERE = Path(__file__).resolve().parent
TERMS = ("hidden_norm_spread", "hidden_norm_spread_call")
MIN_CALLS = (20, 50)
SHUFFLES = 20


def with_references(shipped, references: dict[str, float]):
    model = shipped.risk_model
    bias = model.bias
    reference = list(model.reference)
    for name, value in references.items():
        k = model.features.index(name)
        bias += model.weights[k] * (model.reference[k] - value)  # keeps weight x (feature - reference) + bias
        reference[k] = value
    return load_profile("default", {"risk_model": {"features": list(model.features), "weights": list(model.weights),
                                                   "bias": bias, "reference": reference}})


def running_scores(rows: list[dict], shipped, min_calls: int | None, history: dict[str, list] | None = None):
    """Rows scored in order with running references (fixed ones when min_calls is None); returns the
    scored rows and the history of features seen (to carry into a later set)."""
    history = {name: list(values) for name, values in (history or {name: [] for name in TERMS}).items()}
    out = []
    for row in rows:
        seen = history[TERMS[0]]
        if min_calls is not None and len(seen) >= min_calls:
            profile = with_references(shipped, {name: float(np.nanmedian(history[name])) for name in TERMS})
        else:
            profile = shipped
        score = risk_score(row, profile)
        out.append({**row, "risk_score": score, "risk_label": risk_label(score, profile)})
        for name in TERMS:
            history[name].append(row[name])
    return out, history


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.running_reference_study", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--heldout-cache", type=Path, required=True)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "running_reference_study.json")
    args = parser.parse_args(argv)

    shipped = load_profile("default")
    sets = row_sets(args.cache, args.heldout_cache, shipped)
    results: dict = {}
    for model in MODELS:
        if "heldout_unseen" not in sets[model]:
            parser.error(f"--heldout-cache {args.heldout_cache} holds no {model} cache")
        evaluation, held = sets[model]["evaluation"], sets[model]["heldout_unseen"]
        by = results[model] = {}
        for min_calls in (None, *MIN_CALLS):
            key = "fixed" if min_calls is None else f"running, from {min_calls} calls"
            scored_evaluation, history = running_scores(evaluation, shipped, min_calls)
            by[key] = {"evaluation": summary(scored_evaluation, args.bootstrap),
                       "heldout_unseen": summary(running_scores(held, shipped, min_calls)[0], args.bootstrap),
                       "heldout_after_evaluation": summary(running_scores(held, shipped, min_calls, history)[0],
                                                           args.bootstrap)}
            if min_calls is not None:
                shuffled = []
                for seed in range(SHUFFLES):
                    order = np.random.default_rng(seed).permutation(len(evaluation))
                    rows = running_scores([evaluation[k] for k in order], shipped, min_calls)[0]
                    failed = np.array([r["failure"] for r in rows], bool)
                    score = np.array([r["risk_score"] for r in rows])
                    shuffled.append((auroc(failed, score), ece(failed, score)))
                by[key]["evaluation_shuffled_mean"] = {"auroc": float(np.mean([a for a, _ in shuffled])),
                                                       "ece": float(np.mean([e for _, e in shuffled]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    from .metrics import interval_text
    lines = ["| reference | model | rows | risk AUROC | wrong-answer AUROC | loops AUROC | ECE | warning or critical on healthy "
             "| critical on healthy | wrong answers warning or critical |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, by in results.items():
        for key, sets in by.items():
            for which, r in sets.items():
                if which.endswith("shuffled_mean"):
                    lines.append(f"| {key} | {model} | evaluation, 20 shuffled orders (mean) | {r['auroc']:.3f} | | | {r['ece']:.3f} | | | |")
                    continue
                lines.append(f"| {key} | {model} | {which} {r['rows']} | {interval_text(r['auroc'])} | {interval_text(r['auroc_wrong'])} "
                             f"| {interval_text(r['auroc_loops'])} | {interval_text(r['ece'])} | {r['healthy_warning_or_critical']:.1%} "
                             f"| {r['healthy_critical']:.1%} | {r['wrong_warning_or_critical']:.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
