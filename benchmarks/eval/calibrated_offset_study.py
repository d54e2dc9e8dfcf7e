"""python -m benchmarks.eval.calibrated_offset_study: would `corevital calibrate` do better keeping the
default's hand-set hidden-state terms (not fitted) in the model it fits?

Calibrate fits no hidden-state term: fitted on its 80 prompts such a term learnt which *kind* of prompt
fails (third round). This study keeps the shipped default's two terms, weights and references as they
are, as a fixed offset o = sum of w x (feature - reference) (0 where not measured) in the logistic fit,
and re-runs what calibrate runs (fit + Platt on 5-fold out-of-fold logits) from calibrate's own work
folder and labels only. The Platt slope scales the offset with the rest. Scored on the 320 held-out
items with their text labels; nothing is fitted on them. Variants: "refit" (weights fitted with the
offset), "platt only" (calibrate's own weights kept, the offset added, Platt refitted on its prompts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.analysis import calibration
from opentelemetry_instrumentation_corevital.analysis.risk import risk_features
from opentelemetry_instrumentation_corevital.profiles import load_profile, load_profile_file

from .dataset import HELDOUT
from .generation import generate_all
from .labels import failure
from .metrics import auroc, bootstrap, ece
from .models import MODELS
from .probe_study import calibrate_work
from .transfer import heldout_items

HERE = Path(__file__).resolve().parent
FEATURES = calibration.CALIBRATION_FEATURES
TERMS = calibration.HIDDEN_STATE_FEATURES


def hidden_offset(features: dict, default) -> float:
    """The shipped default's hidden-state terms, w x (feature - reference); 0 where not measured."""
    model = default.risk_model
    total = 0.0
    for name in TERMS:
        if name in model.features:
            k = model.features.index(name)
            value = features[name]
            if value is not None and np.isfinite(value):
                total += model.weights[k] * (value - model.reference[k])
    return total


def platt(logits, y):
    (slope,), intercept = calibration.fit_logistic(np.asarray(logits)[:, None], y, penalty=1e-3)
    return (slope, intercept) if slope > 0 else (1.0, 0.0)


def fitted(x, y, offset, folds=calibration.RECALIBRATION_FOLDS):
    """(weights, bias, offset scale): calibrate's procedure with the fixed offset."""
    weights, bias = calibration.fit_logistic(x, y, offset=offset)
    fold = np.arange(y.size) % folds
    logits = np.zeros(y.size)
    for k in range(folds):
        w, b = calibration.fit_logistic(x[fold != k], y[fold != k], offset=offset[fold != k])
        logits[fold == k] = x[fold == k] @ w + b + offset[fold == k]
    slope, intercept = platt(logits, y)
    return weights * slope, bias * slope + intercept, slope


def sigmoid(z):
    return 1 / (1 + np.exp(-np.clip(z, -60, 60)))


def study(model: str, calibrate_dir: Path, heldout_cache: Path, resamples: int) -> dict:
    default = load_profile("default")
    profile = load_profile_file(calibrate_dir / f"calibrated-{model}.json")
    prompts, runs = calibrate_work(calibrate_dir, model)
    y = np.array([calibration.label_run(run, prompts[run.prompt_index]).failure for run in runs], float)
    fit_features = [risk_features(run.summaries, 0, profile) for run in runs]
    x = np.array([[f[n] for n in FEATURES] for f in fit_features])
    offset = np.array([hidden_offset(f, default) for f in fit_features])
    items = heldout_items()
    generations = generate_all(items, heldout_cache / model, model_name=model, log=lambda _: None)
    rows = [(item, generations[item.id]) for item in items if item.split == HELDOUT]
    reasons = [failure(item, g.text) for item, g in rows]
    labels = np.array([failed for failed, _ in reasons], bool)
    loop = np.array([reason == "degenerate" for _, reason in reasons], bool)
    qa = np.array([item.category in ("arithmetic", "fact") for item, _ in rows]) & ~loop
    held_features = [risk_features(g.summaries, 0, profile) for _, g in rows]
    e = np.array([[f[n] for n in FEATURES] for f in held_features])
    e_offset = np.array([hidden_offset(f, default) for f in held_features])
    shipped_model = profile.risk_model
    w0 = np.array([shipped_model.weights[shipped_model.features.index(n)] for n in FEATURES])
    scores = {"calibrated profile as written": sigmoid(e @ w0 + shipped_model.bias)}
    w, b, slope = fitted(x, y, offset)
    scores["refit with the default's hidden-state terms"] = sigmoid(e @ w + b + slope * e_offset)
    own_logits = x @ w0 + shipped_model.bias
    a, c = platt(own_logits + offset, y)  # in-sample on calibrate's prompts only
    scores["calibrate's weights + the terms, Platt refitted"] = sigmoid(a * (e @ w0 + shipped_model.bias + e_offset) + c)
    result = {"calibrate_prompts": len(runs), "calibrate_failures": int(y.sum()), "rows": len(rows)}
    for name, s in scores.items():
        healthy = ~labels
        result[name] = {"auroc": bootstrap(auroc, labels, s, resamples=resamples),
                        "auroc_wrong": bootstrap(auroc, labels[qa], s[qa], resamples=resamples),
                        "auroc_loops": bootstrap(auroc, loop, s, resamples=resamples),
                        "ece": bootstrap(ece, labels, s, resamples=resamples),
                        "critical_on_healthy": float(np.mean(s[healthy] >= profile.risk_threshold_critical)),
                        "mean_score": float(s.mean()), "failure_rate": float(labels.mean())}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.calibrated_offset_study", description=__doc__)
    parser.add_argument("--calibrate", type=Path, required=True, help="benchmarks.eval.calibrated's output folder")
    parser.add_argument("--heldout-cache", type=Path, required=True)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "calibrated_offset_study.json")
    args = parser.parse_args(argv)
    results = {model: study(model, args.calibrate, args.heldout_cache, args.bootstrap) for model in MODELS
               if (args.calibrate / f"calibrated-{model}.json.work").is_dir()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for model, r in results.items():
        for name, s in r.items():
            if isinstance(s, dict):
                f = lambda t: "%.3f [%.2f, %.2f]" % tuple(t)  # noqa: E731
                print(f"| {model} | {name} | {f(s['auroc'])} | {f(s['auroc_wrong'])} | {f(s['auroc_loops'])} "
                      f"| {f(s['ece'])} | {s['critical_on_healthy']:.1%} | {s['mean_score']:.2f} vs {s['failure_rate']:.2f} |")
    return results


if __name__ == "__main__":
    main()
