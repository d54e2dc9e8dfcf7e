"""Real-time health: step listeners, health-aware stopping, and the async step stream."""

from .aio import HealthStream, stream_health
from .observe import Run, observe
from .step import StepSummary
from .stopping import CoreVitalStoppingCriteria

__all__ = ["CoreVitalStoppingCriteria", "HealthStream", "Run", "StepSummary", "observe", "stream_health"]
