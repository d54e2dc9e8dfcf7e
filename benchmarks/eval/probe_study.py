"""python -m benchmarks.eval.probe_study: would a hidden-state probe or another recalibration earn its place?

A measured attempt, not a shipped feature (docs/evaluation.md, "A hidden-state probe term, measured").
For each model it re-fits what `corevital calibrate` fits, from calibrate's own work folder (the
fit-half prompts, greedy + samples, its label-free labels), with and without a probe term, and scores
both on the evaluation's held-out rows with their text labels. Nothing is fitted on those rows.

The probe: for the layers at 1/4, 1/2 and 3/4 of the depth, the standard deviation over the answer's
first 8 steps of log(L2 norm) of the newest hidden state, a fixed-size vector per call read from the
summaries (`hidden`) every capture mode already records. Its weights get 10 times the L2 penalty of
the risk features. Also measured: the ECE of other recalibration steps, each fitted on calibrate's
own prompts only.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.analysis import calibration
from opentelemetry_instrumentation_corevital.analysis.risk import risk_features
from opentelemetry_instrumentation_corevital.analysis.sequence import sequence_view
from opentelemetry_instrumentation_corevital.profiles import load_profile_file

from .dataset import HELDOUT, build_items
from .generation import generate_all
from .labels import failure
from .metrics import auroc, bootstrap, ece
from .models import MODELS
from .transfer import PER_TEMPLATE, heldout_items

PROBE_DEPTHS = (0.25, 0.5, 0.75)
PROBE_STEPS = calibration.CALIBRATION_ANSWER_STEPS
PROBE_PENALTY = 10.0  # times the risk features' L2 penalty, on standardised weights
FEATURES = calibration.CALIBRATION_FEATURES
# Label rules for a question calibrate asks: failure when fewer than this fraction of samples agree
# (0.5 is calibrate's), or "soft": 1 - agreement as a fractional label.
LABEL_RULES = (0.5, 0.75, 1.0, "soft")
RECALIBRATIONS = ("none", "platt_5fold", "platt_leave_one_out", "slope_only_5fold", "platt_heldout_quarter")


def probe_vector(summaries) -> np.ndarray:
    view = sequence_view(summaries, 0)
    layers = sorted({round(depth * (view.num_layers - 1)) for depth in PROBE_DEPTHS})
    steps = view.valid_steps[:PROBE_STEPS]
    if steps.size == 0:
        return np.zeros(len(layers))
    norms = np.log(np.maximum(view.hidden_stat("l2_norm")[steps][:, layers], 1e-12))
    return norms.std(axis=0)


def fitted(x: np.ndarray, y: np.ndarray, penalties: np.ndarray, recalibration: str = "platt_5fold"):
    """The fit, then the recalibration step, all on calibrate's prompts (x, y)."""
    weights, bias = calibration.fit_logistic(x, y, penalty=penalties)
    if recalibration == "none":
        return weights, bias
    if recalibration == "platt_heldout_quarter":  # as calibrate's own held-out check splits its prompts
        test = calibration.held_out(np.arange(len(y)), 0.25)
        w, b = calibration.fit_logistic(x[~test], y[~test], penalty=penalties)
        logits, labels = x[test] @ w + b, y[test]
    else:
        folds = len(y) if recalibration == "platt_leave_one_out" else calibration.RECALIBRATION_FOLDS
        fold = np.arange(len(y)) % folds
        logits, labels = np.zeros(len(y)), y
        for k in range(folds):
            w, b = calibration.fit_logistic(x[fold != k], y[fold != k], penalty=penalties)
            logits[fold == k] = x[fold == k] @ w + b
    if recalibration == "slope_only_5fold":
        slope, offset = _slope(logits, labels), 0.0
    else:
        (slope,), offset = calibration.fit_logistic(logits[:, None], labels, penalty=1e-3)
    return (weights * slope, bias * slope + offset) if slope > 0 else (weights, bias)


def cross_validated(x, y, penalties, recalibration: str = "platt_5fold", repeats: int = 5,
                    folds: int = 5) -> tuple[float, float]:
    """Mean AUROC and ECE of the whole procedure over repeated prompt-level folds of calibrate's own prompts."""
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(repeats):
        fold = np.empty(len(y), int)
        fold[rng.permutation(len(y))] = np.arange(len(y)) % folds
        s = np.zeros(len(y))
        for k in range(folds):
            w, b = fitted(x[fold != k], y[fold != k], penalties, recalibration)
            s[fold == k] = sigmoid(x[fold == k] @ w + b)
        scores.append((auroc(y.astype(bool), s), ece(y, s)))
    return tuple(float(v) for v in np.mean(scores, axis=0))


def calibrate_work(calibrate_dir: Path, model: str) -> tuple[list[str], list]:
    """The prompts `corevital calibrate` was given for `model` and its recorded runs (from its
    resumable work folder), in prompt order."""
    prompts = [json.loads(line) for line in (calibrate_dir / f"prompts-{model}.jsonl").read_text().splitlines()]
    runs = []
    for path in sorted((calibrate_dir / f"calibrated-{model}.json.work").glob("*.pkl")):
        with open(path, "rb") as file:
            runs.extend(pickle.load(file))
    return prompts, sorted(runs, key=lambda run: run.prompt_index)


def study(model: str, calibrate_dir: Path, cache: Path, heldout_cache: Path | None, resamples: int) -> dict:
    profile = load_profile_file(calibrate_dir / f"calibrated-{model}.json")
    prompts, runs = calibrate_work(calibrate_dir, model)
    labels_of_runs = [calibration.label_run(run, prompts[run.prompt_index]) for run in runs]
    y = np.array([label.failure for label in labels_of_runs], float)
    x_risk = np.array([[risk_features(run.summaries, 0, profile)[n] for n in FEATURES] for run in runs])
    x_probe = np.array([probe_vector(run.summaries) for run in runs])
    risk_penalties = np.ones(len(FEATURES))
    probe_penalties = np.r_[risk_penalties, np.full(x_probe.shape[1], PROBE_PENALTY)]
    x_both = np.hstack([x_risk, x_probe])

    result = {"calibrate_prompts": len(runs), "calibrate_failures": int(y.sum()),
              "cross_validated_on_calibrate_prompts": {
                  "risk_model": cross_validated(x_risk, y, risk_penalties),
                  "risk_model_plus_probe": cross_validated(x_both, y, probe_penalties),
                  "ece_by_recalibration": {recalibration: cross_validated(x_risk, y, risk_penalties, recalibration)[1]
                                           for recalibration in RECALIBRATIONS}}}
    # The item lists must be exactly the ones the caches were generated from (batches are keyed by them).
    sets = {"heldout_100": (build_items(PER_TEMPLATE), cache)}
    if heldout_cache and (heldout_cache / model).is_dir():
        sets["heldout_320"] = (heldout_items(), heldout_cache)
    first_100 = {item.id for item in sets["heldout_100"][0] if item.split == HELDOUT}
    for name, (items, folder) in sets.items():
        generations = generate_all(items, folder / model, model_name=model, log=lambda _: None)
        rows = [(item, generations[item.id]) for item in items if item.split == HELDOUT]
        reasons = [failure(item, g.text) for item, g in rows]
        labels = np.array([failed for failed, _ in reasons], bool)
        loop = np.array([reason == "degenerate" for _, reason in reasons], bool)
        qa = np.array([item.category in ("arithmetic", "fact") for item, _ in rows]) & ~loop
        e_risk = np.array([[risk_features(g.summaries, 0, profile)[n] for n in FEATURES] for _, g in rows])
        e_both = np.hstack([e_risk, np.array([probe_vector(g.summaries) for _, g in rows])])
        w0, b0 = fitted(x_risk, y, risk_penalties)
        w1, b1 = fitted(x_both, y, probe_penalties)
        before, after = sigmoid(e_risk @ w0 + b0), sigmoid(e_both @ w1 + b1)
        entry = {"rows": len(rows), "failures": int(labels.sum()),
                 "probe_weights": [round(float(w), 3) for w in w1[len(FEATURES):]]}
        for subset, mask, truth in (("auroc", slice(None), labels), ("auroc_wrong", qa, labels),
                                    ("auroc_loops", slice(None), loop), ("auroc_not_loops", ~loop, labels)):
            t, s0, s1 = truth[mask], before[mask], after[mask]
            entry[subset] = {"before": bootstrap(auroc, t, s0, resamples=resamples),
                             "after": bootstrap(auroc, t, s1, resamples=resamples),
                             "difference": bootstrap(lambda t, a, b: auroc(t, b) - auroc(t, a), t, s0, s1,
                                                     resamples=resamples)}
        entry["ece"] = {"before": bootstrap(ece, labels, before, resamples=resamples),
                        "after": bootstrap(ece, labels, after, resamples=resamples)}
        # What a perfectly calibrated score would show at this size: labels drawn from its own probabilities.
        rng = np.random.default_rng(0)
        entry["ece_noise_floor"] = float(np.mean([ece(rng.random(before.size) < before, before) for _ in range(2000)]))
        if name == "heldout_320":  # the 100-row items, generated again in other batches (padding, seeds)
            again = np.array([item.id in first_100 for item, _ in rows])
            entry["same_items_as_heldout_100"] = {"auroc": auroc(labels[again], before[again]),
                                                  "auroc_wrong": auroc(labels[again & qa], before[again & qa]),
                                                  "ece": ece(labels[again], before[again])}
        healthy = ~labels
        entry["critical_on_healthy"] = {"before": float(np.mean(before[healthy] >= profile.risk_threshold_critical)),
                                        "after": float(np.mean(after[healthy] >= profile.risk_threshold_critical))}
        entry["mean_score_by_category"] = {
            category: {"failure_rate": float(labels[mask].mean()), "before": float(before[mask].mean()),
                       "after": float(after[mask].mean()),
                       "auroc_wrong_before": auroc(labels[mask & qa], before[mask & qa]),
                       "auroc_wrong_after": auroc(labels[mask & qa], after[mask & qa])}
            for category in ("arithmetic", "fact", "repetition", "free")
            for mask in [np.array([item.category == category for item, _ in rows])]}
        entry["ece_by_recalibration"] = {}
        for recalibration in RECALIBRATIONS:
            w, b = fitted(x_risk, y, risk_penalties, recalibration)
            entry["ece_by_recalibration"][recalibration] = bootstrap(ece, labels, sigmoid(e_risk @ w + b),
                                                                     resamples=resamples)
        entry["ece_by_label_rule"] = {}
        for rule in LABEL_RULES:
            y_rule = np.array([_relabel(label, prompts[run.prompt_index], rule)
                               for run, label in zip(runs, labels_of_runs)])
            w, b = fitted(x_risk, y_rule, risk_penalties)
            scores = sigmoid(e_risk @ w + b)
            entry["ece_by_label_rule"][str(rule)] = {"auroc": auroc(labels, scores),
                                                      "ece": bootstrap(ece, labels, scores, resamples=resamples)}
        result[name] = entry
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.probe_study", description=__doc__)
    parser.add_argument("--calibrate", type=Path, required=True,
                        help="folder of benchmarks.eval.calibrated's output (profiles, prompts, work folders)")
    parser.add_argument("--cache", type=Path, required=True, help="summaries caches of the 200-row sets, per model")
    parser.add_argument("--heldout-cache", type=Path, default=None, help="summaries caches of all 320 held-out items")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "probe_study.json")
    args = parser.parse_args(argv)
    results = {model: study(model, args.calibrate, args.cache, args.heldout_cache, args.bootstrap) for model in MODELS}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=1))
    return results


def _relabel(label, prompt: str, rule) -> float:
    if label.reason == "degenerate":
        return 1.0
    if not calibration.is_question(prompt):
        return 0.0
    return 1.0 - label.agreement if rule == "soft" else float(label.agreement < rule)


def sigmoid(z):
    return 1 / (1 + np.exp(-np.clip(z, -60, 60)))


def _slope(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling: the one factor on the logits that maximises the likelihood (no offset)."""
    slope = 1.0
    for _ in range(50):
        p = sigmoid(slope * logits)
        slope -= ((p - labels) * logits).sum() / ((p * (1 - p) * logits * logits).sum() + 1e-9)
    return slope


if __name__ == "__main__":
    main()
