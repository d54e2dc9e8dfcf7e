"""The risk model fitted on labelled rows: analysis.calibration's logistic regression on eval rows."""

from __future__ import annotations

import numpy as np

from opentelemetry_instrumentation_corevital.analysis.calibration import fit_logistic
from opentelemetry_instrumentation_corevital.analysis.calibration import risk_model_of as _risk_model_of

__all__ = ["fit_logistic", "risk_model_of"]


def risk_model_of(rows: list[dict], features: tuple[str, ...]) -> dict:
    """The profile's `risk_model` entry fitted on `rows` (label: `failure`)."""
    x = np.array([[row[name] for name in features] for row in rows], float)
    y = np.array([row["failure"] for row in rows], float)
    return _risk_model_of(x, y, features)
