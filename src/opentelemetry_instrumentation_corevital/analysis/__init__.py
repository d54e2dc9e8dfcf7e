"""What the captured summaries mean: pure functions over RunSummaries (numpy + stdlib only).

`analyze` does everything for a generate call; the other functions are the pieces, for
real-time consumers (early_warning on a prefix) and for calibration (risk_features).
"""

from .batch import RunAggregate, RunAnalysis, SequenceAnalysis, analyze
from .early_warning import EarlyWarning, early_warning
from .fingerprint import FINGERPRINT_LAYOUT, fingerprint, prompt_hash
from .health import HealthFlags, health_flags
from .layers import blamed_layers
from .narrative import narrative
from .repetition import Repetition, repetition_loop
from .risk import FACTOR_OF_FEATURE, risk_factors, risk_features, risk_label, risk_score

__all__ = [
    "FACTOR_OF_FEATURE",
    "FINGERPRINT_LAYOUT",
    "EarlyWarning",
    "HealthFlags",
    "Repetition",
    "RunAggregate",
    "RunAnalysis",
    "SequenceAnalysis",
    "analyze",
    "blamed_layers",
    "early_warning",
    "fingerprint",
    "health_flags",
    "narrative",
    "prompt_hash",
    "repetition_loop",
    "risk_factors",
    "risk_features",
    "risk_label",
    "risk_score",
]
