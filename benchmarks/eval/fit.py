"""Logistic regression over the risk features (numpy, L2-penalised Newton steps).

Features are standardised for the fit and the weights mapped back to raw feature units, so
the profile's `risk_model` applies them to `risk_features()` as they are.
"""

from __future__ import annotations

import numpy as np

L2_PENALTY = 1.0  # on standardised weights; keeps constant or separable features finite


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float = L2_PENALTY, iterations: int = 100):
    """Returns (weights in raw units, bias)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((x.shape[0], 1)), (x - mean) / scale])
    theta = np.zeros(z.shape[1])
    ridge = np.full(z.shape[1], penalty)
    ridge[0] = 1e-3  # barely: keeps the intercept finite when one class is missing (smoke runs)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(z @ theta, -60, 60)))
        gradient = z.T @ (p - y) + ridge * theta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = theta[1:] / scale
    bias = theta[0] - float(weights @ mean)
    return weights, float(bias)


def risk_model_of(rows: list[dict], features: tuple[str, ...]) -> dict:
    """The profile's `risk_model` entry fitted on `rows` (label: `failure`)."""
    x = np.array([[row[name] for name in features] for row in rows], float)
    y = np.array([row["failure"] for row in rows], float)
    weights, bias = fit_logistic(x, y)
    healthy = x[y == 0] if (y == 0).any() else x
    return {
        "features": list(features),
        "weights": [round(float(w), 6) for w in weights],
        "bias": round(bias, 6),
        "reference": [round(float(v), 6) for v in healthy.mean(axis=0)],
    }
