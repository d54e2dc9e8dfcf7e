"""Everything analysis says about one generate call: per returned sequence, and for the span."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..health_vocabulary import RISK_HEALTHY
from ..profiles import WARNING_SIGNAL_NAMES, Profile, load_profile
from ..summaries import RunSummaries
from .early_warning import early_warning_of
from .fingerprint import fingerprint_of
from .health import NAN_OR_INF, HealthFlags, health_flags_of, high_entropy_mask, mid_layer_anomalies, nonfinite_steps
from .layers import blamed_layers_of
from .narrative import narrative
from .repetition import Repetition, repetition_loop_of
from .risk import risk_factors, risk_features_of, risk_label, risk_score
from .sequence import SequenceView, finite_max, finite_mean, sequence_view


@dataclass(frozen=True)
class SequenceAnalysis:
    index: int
    valid_steps: int
    flags: HealthFlags
    features: dict[str, float]
    risk_score: float
    risk_factors: list[str]
    label: str
    blamed_layers: list[int]
    failure_risk: float
    warning_signals: list[str]
    fingerprint: list[float]
    narrative: str
    repetition: Repetition | None
    flagged_steps: list[int]
    entropy_mean: float
    entropy_max: float
    surprisal_mean: float
    margin_mean: float


@dataclass(frozen=True)
class RunAggregate:
    """Span-level view of a batch: the worst sequence decides score and label."""

    risk_score: float = 0.0
    label: str = RISK_HEALTHY
    risk_factors: list[str] = field(default_factory=list)
    flags: HealthFlags = field(default_factory=HealthFlags)
    blamed_layers: list[int] = field(default_factory=list)
    failure_risk: float = 0.0
    warning_signals: list[str] = field(default_factory=list)
    worst_sequence: int | None = None
    # Over all valid steps of all sequences; 0.0 when there are none.
    entropy_mean: float = 0.0
    entropy_max: float = 0.0
    surprisal_mean: float = 0.0
    margin_mean: float = 0.0


@dataclass(frozen=True)
class RunAnalysis:
    sequences: list[SequenceAnalysis]
    aggregate: RunAggregate


def analyze(summaries: RunSummaries, profile: Profile | None = None) -> RunAnalysis:
    profile = profile or load_profile(summaries.model_type)
    views = [sequence_view(summaries, i) for i in range(summaries.num_sequences)]
    sequences = [analyze_sequence(view, i, profile) for i, view in enumerate(views)]
    return RunAnalysis(sequences=sequences, aggregate=aggregate(sequences, views))


def analyze_sequence(view: SequenceView, index: int, profile: Profile) -> SequenceAnalysis:
    flags = health_flags_of(view, profile)
    features = risk_features_of(view, profile)
    score = risk_score(features, profile)
    warning = early_warning_of(view, profile, live=False)
    repetition = repetition_loop_of(view, profile)
    nonfinite = nonfinite_steps(view)
    mid_layer = mid_layer_anomalies(view, profile).any(axis=1)
    blamed = blamed_layers_of(view, profile)
    label = risk_label(score, profile)
    entropy_mean = finite_mean(view.logit("entropy"))
    entropy_max = finite_max(view.logit("entropy"))
    return SequenceAnalysis(
        index=index,
        valid_steps=int(view.valid.sum()),
        flags=flags,
        features=features,
        risk_score=score,
        risk_factors=risk_factors(features, profile),
        label=label,
        blamed_layers=blamed,
        failure_risk=warning.failure_risk,
        warning_signals=list(warning.signals),
        fingerprint=fingerprint_of(view, profile, features, score, warning.failure_risk),
        narrative=narrative(
            profile=profile,
            valid_steps=int(view.valid.sum()),
            flags=flags,
            risk_score=score,
            label=label,
            repetition=repetition,
            first_nonfinite_step=int(nonfinite.argmax()) if nonfinite.any() else None,
            mid_layer_steps=int(mid_layer.sum()),
            blamed_layers=blamed,
            failure_risk=warning.failure_risk,
            warning_signals=list(warning.signals),
            entropy_mean=entropy_mean,
            entropy_max=entropy_max,
        ),
        repetition=repetition,
        flagged_steps=_flagged_steps(nonfinite | mid_layer | high_entropy_mask(view, profile), repetition),
        entropy_mean=entropy_mean,
        entropy_max=entropy_max,
        surprisal_mean=finite_mean(view.logit("surprisal")),
        margin_mean=finite_mean(view.logit("margin")),
    )


def aggregate(sequences: list[SequenceAnalysis], views: list[SequenceView]) -> RunAggregate:
    if not sequences:
        return RunAggregate()
    worst = max(sequences, key=lambda s: s.risk_score)
    flags = HealthFlags()
    for sequence in sequences:
        flags = flags.merge(sequence.flags)
    factors = list(dict.fromkeys(f for s in [worst, *sequences] for f in s.risk_factors))
    signals = {signal for s in sequences for signal in s.warning_signals}
    entropy = np.concatenate([view.logit("entropy") for view in views])
    return RunAggregate(
        risk_score=worst.risk_score,
        label=worst.label,
        risk_factors=factors,
        flags=flags,
        blamed_layers=sorted({layer for s in sequences for layer in s.blamed_layers}),
        failure_risk=max(s.failure_risk for s in sequences),
        warning_signals=[name for name in (NAN_OR_INF, *WARNING_SIGNAL_NAMES) if name in signals],
        worst_sequence=worst.index,
        entropy_mean=finite_mean(entropy),
        entropy_max=finite_max(entropy),
        surprisal_mean=finite_mean(np.concatenate([view.logit("surprisal") for view in views])),
        margin_mean=finite_mean(np.concatenate([view.logit("margin") for view in views])),
    )


def _flagged_steps(step_mask: np.ndarray, repetition: Repetition | None) -> list[int]:
    steps = set(np.flatnonzero(step_mask).tolist())
    if repetition is not None:
        steps.update(range(repetition.start_step, repetition.end_step + 1))
    return sorted(steps)
