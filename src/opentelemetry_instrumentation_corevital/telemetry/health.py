"""CoreVital health on the span and in metrics (filled in by the analysis layer)."""

from __future__ import annotations

import numpy as np

from ..summaries import RunSummaries
from . import attributes as attrs


class HealthRecorder:
    def __init__(self, instruments, settings):
        self.instruments = instruments
        self.settings = settings

    def capture_thresholds(self) -> dict:
        return {}

    def record(self, span, call, result, summaries: RunSummaries, metric_attributes: dict) -> None:
        entropy = summaries.logit("entropy")[summaries.valid]
        for value in entropy[np.isfinite(entropy)].tolist():
            self.instruments.logits_entropy.record(value, metric_attributes)
        if summaries.attention_unavailable_reason:
            span.set_attribute(attrs.ATTENTION_UNAVAILABLE_REASON, summaries.attention_unavailable_reason)
