"""Detection-quality metrics with percentile-bootstrap confidence intervals (numpy only)."""

from __future__ import annotations

import numpy as np

from opentelemetry_instrumentation_corevital.analysis.calibration import ECE_BINS, auroc, ece

__all__ = ["ECE_BINS", "auroc", "bootstrap", "brier", "ece", "precision_recall"]


def brier(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean((np.asarray(probabilities, float) - np.asarray(labels, float)) ** 2))


def precision_recall(labels: np.ndarray, flags: np.ndarray) -> tuple[float, float]:
    labels, flags = np.asarray(labels, bool), np.asarray(flags, bool)
    hits = (labels & flags).sum()
    precision = hits / flags.sum() if flags.any() else float("nan")
    recall = hits / labels.sum() if labels.any() else float("nan")
    return float(precision), float(recall)


def bootstrap(metric, *arrays: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(value on the data, 2.5th percentile, 97.5th percentile) over resampled rows."""
    arrays = [np.asarray(a) for a in arrays]
    value = metric(*arrays)
    rng = np.random.default_rng(seed)
    n = arrays[0].shape[0]
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        draw = metric(*(a[pick] for a in arrays))
        if np.isfinite(draw):
            draws.append(draw)
    if not draws:
        return value, float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(value), float(low), float(high)


def interval_text(triple) -> str:
    """(value, low, high) from `bootstrap` as "0.812 [0.74, 0.88]"."""
    value, low, high = triple
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"
