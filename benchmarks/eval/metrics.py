"""Detection-quality metrics with percentile-bootstrap confidence intervals (numpy only)."""

from __future__ import annotations

import numpy as np

ECE_BINS = 10


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random failure scores above a random success (ties count half)."""
    labels = np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, float))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-width probability bins, weighted by bin size."""
    labels, probabilities = np.asarray(labels, float), np.asarray(probabilities, float)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(labels[members].mean() - probabilities[members].mean())
    return float(total / labels.size)


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


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks
