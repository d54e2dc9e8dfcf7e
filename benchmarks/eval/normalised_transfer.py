"""python -m benchmarks.eval.normalised_transfer: does scaling each feature to the model's own
distribution make a risk model fitted on one model work on the other?

Issue 13 asks for baselines relative to the model's own behaviour, "running statistics over the
calls it has seen, kept per model". This measures the best case of that idea before building it:
every feature is normalised with statistics of *all* of the model's calls (what a running
estimate converges to; label-free), the risk model is fitted on one model's normalised rows and
scored on the other's. Normalisations: none, z-score, median/MAD, and the percentile within the
model (mid-ranks, so tied values such as a 0/1 flag share one rank). Reads the cached generations
of benchmarks.eval.transfer; prints one row per normalisation and direction, with bootstrap
intervals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.profiles import load_profile

from .fit import feature_matrix, fit_logistic
from .metrics import auroc, bootstrap
from .models import MODELS
from .transfer import TRANSFER_FEATURES, model_rows


def _z(x: np.ndarray) -> np.ndarray:
    spread = x.std(0)
    return (x - x.mean(0)) / np.where(spread > 0, spread, 1.0)


def _robust(x: np.ndarray) -> np.ndarray:
    median = np.median(x, 0)
    spread = 1.4826 * np.median(np.abs(x - median), 0)
    spread = np.where(spread > 0, spread, x.std(0))
    return (x - median) / np.where(spread > 0, spread, 1.0)


def _percentile(x: np.ndarray) -> np.ndarray:
    ordered = np.sort(x, 0)
    columns = [
        (np.searchsorted(ordered[:, j], x[:, j], "left") + np.searchsorted(ordered[:, j], x[:, j], "right")) / 2
        for j in range(x.shape[1])
    ]
    return np.column_stack(columns) / len(x)


NORMALISATIONS = {"none": lambda x: x, "z-score": _z, "median/MAD": _robust, "percentile": _percentile}


def features(rows: list[dict]) -> np.ndarray:
    return np.nan_to_num(feature_matrix(rows, TRANSFER_FEATURES))


def scores(rows: list[dict], score: np.ndarray, resamples: int) -> dict:
    failure = np.array([r["failure"] for r in rows], bool)
    loop = np.array([r["failure_reason"] == "degenerate" for r in rows], bool)
    qa = np.array([r["correct"] is not None and not l for r, l in zip(rows, loop)], bool)
    return {
        "all": bootstrap(auroc, failure, score, resamples=resamples),
        "loops": bootstrap(auroc, loop, score, resamples=resamples),
        "wrong answers": bootstrap(auroc, failure[qa], score[qa], resamples=resamples),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.normalised_transfer", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="folder holding one summaries cache per model")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)

    default = load_profile("default")
    rows = {model: model_rows(model, args.cache, default) for model in MODELS}
    print("| normalisation | fitted on -> tested on | risk AUROC | loops | wrong answers |\n|---|---|---|---|---|")
    for name, normalise in NORMALISATIONS.items():
        for fitted_on in MODELS:
            (tested_on,) = [model for model in MODELS if model != fitted_on]
            labels = np.array([r["failure"] for r in rows[fitted_on]], float)
            weights, bias = fit_logistic(normalise(features(rows[fitted_on])), labels)
            score = normalise(features(rows[tested_on])) @ weights + bias
            cells = [f"{v:.3f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in scores(rows[tested_on], score, args.bootstrap).values()]
            print(f"| {name} | {fitted_on} -> {tested_on} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
