"""The risk model fitted on labelled rows: analysis.calibration's logistic regression on eval rows."""

from __future__ import annotations

import numpy as np

from opentelemetry_instrumentation_corevital.analysis.calibration import fit_logistic
from opentelemetry_instrumentation_corevital.analysis.calibration import risk_model_of as _risk_model_of

__all__ = ["feature_matrix", "fit_logistic", "risk_model_of"]


def feature_matrix(rows: list[dict], features: tuple[str, ...]) -> np.ndarray:
    """float [rows, features]: the named features of each row."""
    return np.array([[row[name] for name in features] for row in rows], float)


def risk_model_of(rows: list[dict], features: tuple[str, ...]) -> dict:
    """The profile's `risk_model` entry fitted on `rows` (label: `failure`)."""
    y = np.array([row["failure"] for row in rows], float)
    return _risk_model_of(feature_matrix(rows, features), y, features)
