"""Layer blame: which decoder layers a sequence's problems point at.

- NaN/Inf: per step, the first layer whose hidden state holds one. Later layers inherit it
  through the residual stream, so only the origin is blamed.
- L2 explosion: per step, the first middle-third layer above its own median over the call
  (same rule as the mid-layer flag, same origin logic).
- Attention collapse: only when unusual for that layer (the attention-collapse flag's rule,
  health.unusual_collapse_layers).
"""

from __future__ import annotations

import numpy as np

from ..profiles import Profile
from ..summaries import RunSummaries
from .health import hidden_inf, hidden_nan, l2_explosions, unusual_collapse_layers
from .sequence import SequenceView, sequence_view


def origin_layers(mask: np.ndarray) -> set[int]:
    """For a bool [S, L] mask, the first True layer of every step that has one."""
    rows = mask.any(axis=1)
    if not rows.any():
        return set()
    return {int(layer) for layer in mask[rows].argmax(axis=1)}


def blamed_layers_of(view: SequenceView, profile: Profile) -> list[int]:
    blamed = origin_layers(hidden_nan(view) | hidden_inf(view))
    blamed |= origin_layers(l2_explosions(view, profile))
    blamed.update(unusual_collapse_layers(view, profile))
    return sorted(blamed)


def blamed_layers(summaries: RunSummaries, i: int, profile: Profile) -> list[int]:
    return blamed_layers_of(sequence_view(summaries, i), profile)
