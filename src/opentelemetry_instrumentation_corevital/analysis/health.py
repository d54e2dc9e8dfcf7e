"""Health flags of one sequence, and the per-step, per-layer masks they are built from."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..profiles import Profile
from ..summaries import RunSummaries
from .repetition import repetition_loop_of
from .sequence import SequenceView, sequence_view

NAN_OR_INF = "nan_or_inf"  # the risk factor and warning signal for any NaN/Inf


@dataclass(frozen=True)
class HealthFlags:
    nan_detected: bool = False
    inf_detected: bool = False
    attention_collapse_detected: bool = False
    high_entropy_steps: int = 0
    repetition_loop_detected: bool = False
    mid_layer_anomaly_detected: bool = False

    def raised(self) -> tuple[str, ...]:
        """Names of the flags that are set (`high_entropy_steps` when above zero), in field order."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name))

    @property
    def any_raised(self) -> bool:
        return bool(self.raised())

    def merge(self, other: "HealthFlags") -> "HealthFlags":
        """Flags of a batch: any sequence's flag raises it; high-entropy steps add up."""
        merged = {f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)}
        merged["high_entropy_steps"] = self.high_entropy_steps + other.high_entropy_steps
        return HealthFlags(**merged)


def layer_thirds(num_layers: int) -> tuple[slice, slice]:
    """(early, middle) layer ranges: the first and second third, as in the original documents."""
    return slice(0, num_layers // 3), slice(num_layers // 3, 2 * num_layers // 3)


def hidden_nan(view: SequenceView) -> np.ndarray:
    """bool [S, L]: a NaN in that layer's hidden state at a valid step.

    Only the counts say so: a NaN statistic without a count means "not observed".
    """
    return (view.hidden_stat("nan_count") > 0) & view.valid[:, None]


def hidden_inf(view: SequenceView) -> np.ndarray:
    """bool [S, L]: an Inf in that layer's hidden state at a valid step."""
    return (view.hidden_stat("inf_count") > 0) & view.valid[:, None]


def logits_nan(view: SequenceView) -> np.ndarray:
    """bool [S]: NaN in the raw logits at a valid step."""
    return (view.step_logit("nan_count") > 0) & view.valid


def logits_inf(view: SequenceView) -> np.ndarray:
    return (view.step_logit("inf_count") > 0) & view.valid


def nonfinite_steps(view: SequenceView) -> np.ndarray:
    """bool [S]: any NaN/Inf in hidden states or logits at that step."""
    layers = hidden_nan(view) | hidden_inf(view)
    return layers.any(axis=1) | logits_nan(view) | logits_inf(view)


def l2_explosions(view: SequenceView, profile: Profile) -> np.ndarray:
    """bool [S, L]: a middle-third layer whose L2 exceeds the multiplier times the mean L2 of
    the same step's early layers.

    The baseline is per step because step 0 of a causal model carries the whole prompt and has
    far larger norms in every layer than the single-token steps after it.
    """
    l2 = view.hidden_stat("l2_norm")
    early, middle = layer_thirds(view.num_layers)
    exploded = np.zeros(l2.shape, bool)
    if early.stop == 0:
        return exploded
    early_l2 = l2[:, early]
    finite = np.isfinite(early_l2)
    counts = finite.sum(axis=1)
    baseline = np.full(l2.shape[0], np.nan)
    np.divide(np.where(finite, early_l2, 0.0).sum(axis=1), counts, out=baseline, where=counts > 0)
    limit = profile.l2_explosion_multiplier * baseline
    exploded[:, middle] = (l2[:, middle] > limit[:, None]) & (baseline > 0)[:, None]
    return exploded & view.valid[:, None]


def mid_layer_anomalies(view: SequenceView, profile: Profile) -> np.ndarray:
    """bool [S, L]: NaN/Inf in a middle-third layer, or an L2 explosion there."""
    _, middle = layer_thirds(view.num_layers)
    nonfinite = np.zeros(view.hidden.shape[:2], bool)
    nonfinite[:, middle] = (hidden_nan(view) | hidden_inf(view))[:, middle]
    return nonfinite | l2_explosions(view, profile)


def collapsed_heads(view: SequenceView) -> np.ndarray | None:
    """float [S, L] collapsed-head counts at valid steps (NaN elsewhere or when not observed)."""
    counts = view.attention_stat("collapsed_heads")
    if counts is None:
        return None
    return np.where(view.valid[:, None], counts, np.nan)


def high_entropy_mask(view: SequenceView, profile: Profile) -> np.ndarray:
    """bool [S]: valid steps whose raw-logit entropy exceeds the profile threshold."""
    entropy = view.step_logit("entropy")
    return (entropy > profile.high_entropy_bits) & view.valid


def health_flags_of(view: SequenceView, profile: Profile) -> HealthFlags:
    collapsed = collapsed_heads(view)
    collapse = bool(collapsed is not None and (collapsed > 0).any())
    return HealthFlags(
        nan_detected=bool(hidden_nan(view).any() or logits_nan(view).any()),
        inf_detected=bool(hidden_inf(view).any() or logits_inf(view).any()),
        attention_collapse_detected=collapse,
        high_entropy_steps=int(high_entropy_mask(view, profile).sum()),
        repetition_loop_detected=repetition_loop_of(view, profile) is not None,
        mid_layer_anomaly_detected=bool(mid_layer_anomalies(view, profile).any()),
    )


def health_flags(summaries: RunSummaries, i: int, profile: Profile) -> HealthFlags:
    return health_flags_of(sequence_view(summaries, i), profile)
