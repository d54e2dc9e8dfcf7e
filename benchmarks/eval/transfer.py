"""python -m benchmarks.eval.transfer: the leave-one-model-out evaluation, from cached generations.

Needs the summaries of both models cached by `python -m benchmarks.eval --model M --per-template 10
--generate-only --cache CACHE/M` (and, for (c), the profile files `corevital calibrate` wrote from each
model's fit-half prompts, see benchmarks/eval/calibrated.py). Re-runs in seconds; writes
results/transfer.json and prints the tables of docs/evaluation.md.

(a) out of the box: the shipped `default` profile, nothing fitted on either model, all rows;
(b) the risk model fitted on all rows of one model, scored on all rows of the other;
(c) the model's own `corevital calibrate` profile, scored on its held-out half.
Failure modes: loops (text-level degeneration, vs everything else) and wrong answers (QA rows
that did not degenerate: wrong vs right). Healthy = labelled not failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.profiles import load_profile, load_profile_file

from .dataset import HELDOUT, build_items
from .fit import risk_model_of
from .generation import generate_all
from .metrics import auroc, bootstrap, ece, precision_recall
from .models import MODELS
from .signals import rows_of

HERE = Path(__file__).resolve().parent
PER_TEMPLATE = 10
BOOLEAN_FLAGS = ("repetition_flag", "mid_layer_flag", "collapse_flag", "nonfinite_flag")
# The features a transferred risk model uses: the scale-free ones (probabilities, fractions, flags).
TRANSFER_FEATURES = (
    "answer_uncertainty", "confidence_mean", "chosen_probability_mean", "low_margin_fraction",
    "confident_run_fraction", "repetition_loop", "repetition_fraction", "mid_layer_anomaly",
    "attention_collapse_fraction",
)


def model_rows(model: str, cache: Path, profile) -> list[dict]:
    items = build_items(PER_TEMPLATE)
    generations = generate_all(items, cache / model, model_name=model, log=lambda _: None)
    return rows_of(items, generations, profile)


def summary(rows: list[dict], resamples: int) -> dict:
    failure = np.array([r["failure"] for r in rows], bool)
    score = np.array([r["risk_score"] for r in rows], float)
    loop = np.array([r["failure_reason"] == "degenerate" for r in rows], bool)
    qa = np.array([r["correct"] is not None and r["failure_reason"] != "degenerate" for r in rows], bool)
    flags = {name: np.array([r[name] for r in rows], bool) for name in BOOLEAN_FLAGS}
    any_flag = np.any(list(flags.values()), axis=0)
    critical = np.array([r["risk_label"] == "critical" for r in rows], bool)
    healthy = ~failure
    precision, recall = precision_recall(loop, flags["repetition_flag"])
    return {
        "rows": len(rows), "failures": int(failure.sum()), "loops": int(loop.sum()),
        "wrong": int((failure & qa).sum()), "right": int((~failure & qa).sum()),
        "auroc": bootstrap(auroc, failure, score, resamples=resamples),
        "auroc_loops": bootstrap(auroc, loop, score, resamples=resamples),
        "auroc_wrong": bootstrap(auroc, failure[qa], score[qa], resamples=resamples),
        # Every failure that is not a loop (wrong answers) against every healthy run (open text too).
        "auroc_not_loops": bootstrap(auroc, failure[~loop], score[~loop], resamples=resamples),
        "ece": bootstrap(ece, failure, score, resamples=resamples),
        "repetition_precision": precision, "repetition_recall": recall,
        "healthy": int(healthy.sum()),
        "healthy_any_flag": float(any_flag[healthy].mean()),
        "healthy_critical": float(critical[healthy].mean()),
        "healthy_flag_rates": {name: float(flags[name][healthy].mean()) for name in BOOLEAN_FLAGS},
        "healthy_early_warning": float(np.mean([r["warning_signal_count"] > 0 for r, h in zip(rows, healthy) if h])),
        "auroc_failure_risk": bootstrap(auroc, failure, np.array([r["failure_risk"] for r in rows], float),
                                        resamples=resamples),
        "healthy_high_entropy_runs": float(np.mean([r["high_entropy_steps"] > 0 for r, h in zip(rows, healthy) if h])),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.transfer", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="folder holding one summaries cache per model")
    parser.add_argument("--profiles", type=Path, default=HERE / "results",
                        help="folder holding calibrated-MODEL.json from corevital calibrate (default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "transfer.json")
    args = parser.parse_args(argv)

    default = load_profile("default")
    rows = {model: model_rows(model, args.cache, default) for model in MODELS}
    results: dict = {"out_of_the_box": {}, "transferred": {}, "calibrated": {}}
    for model in MODELS:
        results["out_of_the_box"][model] = summary(rows[model], args.bootstrap)
    for fitted_on in MODELS:
        for tested_on in MODELS:
            if fitted_on == tested_on:
                continue
            model = risk_model_of(rows[fitted_on], TRANSFER_FEATURES)
            profile = load_profile("default", {"risk_model": model})
            results["transferred"][f"{fitted_on}->{tested_on}"] = {
                "risk_model": model, **summary(model_rows(tested_on, args.cache, profile), args.bootstrap)}
    for model in MODELS:
        path = args.profiles / f"calibrated-{model}.json" if args.profiles else None
        if path is None or not path.is_file():
            continue
        profile = load_profile_file(path)
        held = [r for r in model_rows(model, args.cache, profile) if r["split"] == HELDOUT]
        results["calibrated"][model] = {"profile": str(path.name), **summary(held, args.bootstrap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    lines = ["| setting | model | rows (failures: loops / wrong) | risk AUROC | loops AUROC | wrong-answer AUROC | ECE "
             "| repetition flag P / R | any flag on healthy | critical on healthy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, title in (("out_of_the_box", "(a) out of the box"), ("transferred", "(b) fitted on the other"),
                           ("calibrated", "(c) own calibrate profile, held-out half")):
        for model, r in results[setting].items():
            lines.append(
                f"| {title} | {model} | {r['rows']} ({r['failures']}: {r['loops']} / {r['wrong']}) | {_ci(r['auroc'])} "
                f"| {_ci(r['auroc_loops'])} | {_ci(r['auroc_wrong'])} | {_ci(r['ece'])} "
                f"| {r['repetition_precision']:.2f} / {r['repetition_recall']:.2f} "
                f"| {r['healthy_any_flag']:.1%} of {r['healthy']} | {r['healthy_critical']:.1%} |")
    return "\n".join(lines) + "\n"


def _ci(triple) -> str:
    value, low, high = triple
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


if __name__ == "__main__":
    main()
