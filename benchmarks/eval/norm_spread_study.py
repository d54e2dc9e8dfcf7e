"""python -m benchmarks.eval.norm_spread_study: one hidden-state feature, measured as an
out-of-the-box risk term on both models (not shipped).

The feature: the standard deviation, over the answer's first steps, of the log L2 norm of the
middle decoder layer's newest hidden state (`probe_study.probe_vector`, its middle column):
how much the model's internal state moves while it starts answering. It is scale-free (a log),
needs no labels and no fitting. Printed for each model, on the 200 evaluation rows and on the
held-out items not among them (from `--heldout-cache`, see docs/evaluation.md):
- medians on healthy and failed runs, and the AUROC of the *negated* feature (low = risky) for
  non-loop failures against healthy runs, wrong against right answers, and within each QA
  template (weighted by rows), so a task-type effect is told apart from an answer effect;
- the shipped `default` risk logit plus WEIGHT * (REFERENCE - feature), with bootstrap intervals.
WEIGHT and REFERENCE were chosen by looking at these same rows (declared in docs/evaluation.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.analysis.risk import risk_logit
from opentelemetry_instrumentation_corevital.profiles import load_profile

from .dataset import build_items
from .generation import generate_all
from .metrics import auroc, bootstrap
from .models import MODELS
from .probe_study import probe_vector
from .signals import rows_of
from .transfer import PER_TEMPLATE, heldout_items

WEIGHT = 24.0
REFERENCE = 0.1
MIDDLE = 1  # probe_vector's columns: layers at 1/4, 1/2 and 3/4 of the depth


def rows_and_spread(model: str, items: list, cache: Path, profile) -> tuple[list[dict], np.ndarray]:
    generations = generate_all(items, cache, model_name=model, log=lambda _: None)
    spread = np.array([probe_vector(generations[item.id].summaries)[MIDDLE] for item in items])
    return rows_of(items, generations, profile), spread


def within_template(rows: list[dict], risky: np.ndarray) -> float:
    """AUROC inside each QA template with both outcomes (non-loop rows), weighted by its rows."""
    total, weighted = 0, 0.0
    for template in sorted({r["template"] for r in rows if r["correct"] is not None}):
        picked = [i for i, r in enumerate(rows) if r["template"] == template and r["failure_reason"] != "degenerate"]
        failed = np.array([rows[i]["failure"] for i in picked], bool)
        if failed.sum() >= 2 and (~failed).sum() >= 2:
            total += len(picked)
            weighted += len(picked) * auroc(failed, risky[picked])
    return weighted / total if total else float("nan")


def describe(rows: list[dict], spread: np.ndarray, profile, resamples: int) -> dict:
    failed = np.array([r["failure"] for r in rows], bool)
    loop = np.array([r["failure_reason"] == "degenerate" for r in rows], bool)
    qa = np.array([r["correct"] is not None for r in rows], bool) & ~loop
    risky = -np.nan_to_num(spread, nan=REFERENCE)
    shipped = np.array([60.0 if r["nonfinite_flag"] else risk_logit(r, profile) for r in rows])
    with_term = shipped + WEIGHT * (REFERENCE + risky)

    def interval(labels, score):
        value, low, high = bootstrap(auroc, labels, score, resamples=resamples)
        return f"{value:.3f} [{low:.2f}, {high:.2f}]"

    return {
        "rows": len(rows),
        "median healthy / failed": f"{np.nanmedian(spread[~failed]):.3f} / {np.nanmedian(spread[failed]):.3f}",
        "feature AUROC non-loop failures": interval(failed[~loop], risky[~loop]),
        "feature AUROC wrong answers": interval(failed[qa], risky[qa]),
        "feature AUROC within QA templates": f"{within_template(rows, risky):.3f}",
        "risk AUROC shipped": interval(failed, shipped),
        "risk AUROC with the term": interval(failed, with_term),
        "loops AUROC shipped / with the term": f"{auroc(loop, shipped):.3f} / {auroc(loop, with_term):.3f}",
        "healthy runs critical with the term": f"{np.mean(1 / (1 + np.exp(-with_term[~failed])) >= 0.7):.3f}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.norm_spread_study", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="folder holding one summaries cache per model")
    parser.add_argument("--heldout-cache", type=Path, required=True, help="the --split heldout caches, one per model")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)

    profile = load_profile("default")
    evaluation_items = build_items(PER_TEMPLATE)
    seen = {item.id for item in evaluation_items}
    for model in MODELS:
        rows, spread = rows_and_spread(model, evaluation_items, args.cache / model, profile)
        held_rows, held_spread = rows_and_spread(model, heldout_items(), args.heldout_cache / model, profile)
        unseen = [i for i, row in enumerate(held_rows) if row["id"] not in seen]
        sets = {"evaluation rows": (rows, spread),
                "held-out rows not among them": ([held_rows[i] for i in unseen], held_spread[unseen])}
        for name, (set_rows, set_spread) in sets.items():
            print(f"## {model}, {name}")
            for key, value in describe(set_rows, set_spread, profile, args.bootstrap).items():
                print(f"- {key}: {value}")


if __name__ == "__main__":
    main()
