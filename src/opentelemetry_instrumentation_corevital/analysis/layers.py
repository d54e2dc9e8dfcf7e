"""Layer blame: which decoder layers a sequence's problems point at.

- NaN/Inf: per step, the first layer whose hidden state holds one. Later layers inherit it
  through the residual stream, so only the origin is blamed.
- L2 explosion: per step, the first middle-third layer above the per-step early baseline
  (same rule as the mid-layer flag, same origin logic).
- Attention collapse: only when unusual for that layer. Many heads collapse by design (GPT-2
  has dozens at every step), so a layer is blamed when at some step its collapsed-head count
  exceeds its own median over the run by max(1, blame_collapse_excess_fraction * num_heads).
"""

from __future__ import annotations

import numpy as np

from ..profiles import Profile
from ..summaries import RunSummaries
from .health import collapsed_heads, hidden_inf, hidden_nan, l2_explosions
from .sequence import SequenceView, sequence_view


def origin_layers(mask: np.ndarray) -> set[int]:
    """For a bool [S, L] mask, the first True layer of every step that has one."""
    rows = mask.any(axis=1)
    if not rows.any():
        return set()
    return {int(layer) for layer in mask[rows].argmax(axis=1)}


def unusual_collapse_layers(view: SequenceView, profile: Profile) -> list[int]:
    counts = collapsed_heads(view)
    if counts is None:
        return []
    excess = max(1.0, profile.blame_collapse_excess_fraction * view.num_heads)
    blamed = []
    for layer in range(counts.shape[1]):
        observed = counts[:, layer][np.isfinite(counts[:, layer])]
        if observed.size >= 2 and observed.max() >= np.median(observed) + excess:
            blamed.append(layer)
    return blamed


def blamed_layers_of(view: SequenceView, profile: Profile) -> list[int]:
    blamed = origin_layers(hidden_nan(view) | hidden_inf(view))
    blamed |= origin_layers(l2_explosions(view, profile))
    blamed.update(unusual_collapse_layers(view, profile))
    return sorted(blamed)


def blamed_layers(summaries: RunSummaries, i: int, profile: Profile) -> list[int]:
    return blamed_layers_of(sequence_view(summaries, i), profile)
