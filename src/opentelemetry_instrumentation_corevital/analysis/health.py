"""Health flags of one sequence, and the per-step, per-layer masks they are built from.

Every flag but NaN/Inf judges the model against itself within the call, never against an
absolute scale taken from another model: a layer's L2 against the same layer's typical L2
over the call's steps, a layer's collapsed heads against the same layer's typical count,
a loop by token periodicity plus the last layer's cosine relative to the call's own typical
cosine (repetition.py). So a model CoreVital has never seen is quiet on healthy text.
"""

from __future__ import annotations

import numpy as np

from ..health_vocabulary import HealthFlags
from ..profiles import Profile
from ..summaries import RunSummaries
from .repetition import repetition_loop_of
from .sequence import SequenceView, finite_column_medians, once_per_view, sequence_view

NAN_OR_INF = "nan_or_inf"  # the risk factor and warning signal for any NaN/Inf


def layer_thirds(num_layers: int) -> tuple[slice, slice]:
    """(early, middle) layer ranges: the first and the second third of the decoder layers."""
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


# Fewer decoding steps than this give no baseline for a layer's own L2.
MIN_BASELINE_STEPS = 3


@once_per_view
def l2_explosions(view: SequenceView, profile: Profile) -> np.ndarray:
    """bool [S, L]: a middle-third layer whose L2 at a decoding step exceeds the multiplier
    times that same layer's median L2 over the call's decoding steps.

    Each layer is its own baseline: layers of one model differ in scale by orders of magnitude
    (Gemma's middle layers dwarf its early ones at every healthy step), so comparing layers
    with each other flags the architecture, not the run. Step 0 processes the whole prompt, so
    it is neither judged nor part of the baseline.
    """
    l2 = view.hidden_stat("l2_norm")
    _, middle = layer_thirds(view.num_layers)
    exploded = np.zeros(l2.shape, bool)
    decoding = view.valid.copy()
    decoding[:1] = False
    if decoding.sum() < MIN_BASELINE_STEPS or middle.start == middle.stop:
        return exploded
    observed = np.where(decoding[:, None] & np.isfinite(l2), l2, np.nan)[:, middle]
    baseline = finite_column_medians(observed)  # NaN for a layer never observed: it has no baseline
    with np.errstate(invalid="ignore"):
        exploded[:, middle] = (observed > profile.l2_explosion_multiplier * baseline) & (baseline > 0)
    return exploded


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


@once_per_view
def unusual_collapse_layers(view: SequenceView, profile: Profile) -> tuple[int, ...]:
    """Layers whose collapsed-head count exceeds their own median over the call by
    max(1, blame_collapse_excess_fraction * num_heads) on at least `collapse_persistence` of the
    observed steps. Many heads collapse by design (sinks, sliding-window layers) and single
    steps flicker on healthy text (SmolLM2: up to 17 % of steps by a third of the heads, with
    no link to failures), so only a lasting change against the layer itself counts."""
    counts = collapsed_heads(view)
    if counts is None:
        return ()
    excess = max(1.0, profile.blame_collapse_excess_fraction * view.num_heads)
    observed = np.isfinite(counts)
    seen = observed.sum(axis=0)
    with np.errstate(invalid="ignore"):
        above = ((counts >= finite_column_medians(counts) + excess) & observed).sum(axis=0) / np.maximum(seen, 1)
    return tuple(int(layer) for layer in np.flatnonzero((seen >= 2) & (above >= profile.collapse_persistence)))


def high_entropy_mask(view: SequenceView, profile: Profile) -> np.ndarray:
    """bool [S]: valid steps whose raw-logit entropy exceeds the profile threshold."""
    entropy = view.step_logit("entropy")
    return (entropy > profile.high_entropy_bits) & view.valid


def health_flags_of(view: SequenceView, profile: Profile) -> HealthFlags:
    return HealthFlags(
        nan_detected=bool(hidden_nan(view).any() or logits_nan(view).any()),
        inf_detected=bool(hidden_inf(view).any() or logits_inf(view).any()),
        attention_collapse_detected=bool(unusual_collapse_layers(view, profile)),
        high_entropy_steps=int(high_entropy_mask(view, profile).sum()),
        repetition_loop_detected=repetition_loop_of(view, profile) is not None,
        mid_layer_anomaly_detected=bool(mid_layer_anomalies(view, profile).any()),
    )


def health_flags(summaries: RunSummaries, i: int, profile: Profile) -> HealthFlags:
    return health_flags_of(sequence_view(summaries, i), profile)
