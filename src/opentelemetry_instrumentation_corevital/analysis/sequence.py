"""One returned sequence of a RunSummaries, with the numeric helpers every analysis needs.

Arrays keep the original step indexing (so step numbers in results match the run); `valid`
says which steps count. Non-finite values in the summaries mean either a real NaN/Inf in the
model (health.py reads the counts for that) or "not observed" (attention on skipped steps),
so every average here ignores them. Findings that several analyses read (a loop, the layers'
L2 baselines) are computed once per view and profile (`once_per_view`) and handed out read-only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, RunSummaries


@dataclass(frozen=True)
class SequenceView:
    """Views into the run's arrays (no copies); accessors return float64 columns."""

    valid: np.ndarray  # bool [S]
    logits: np.ndarray  # [S, len(LOGIT_STATS)]
    token_ids: np.ndarray  # [S]
    hidden: np.ndarray  # [S, L, len(HIDDEN_STATS)]
    attention: np.ndarray | None  # [S, L, len(ATTENTION_STATS)]
    repetition_cosine: np.ndarray | None  # [S, R]
    num_heads: int
    # function -> (profile, its finding) for once_per_view
    findings: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_steps(self) -> int:
        return int(self.valid.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.hidden.shape[1])

    @property
    def valid_steps(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def logit(self, name: str) -> np.ndarray:
        """One logit statistic at the valid steps only, in step order."""
        return self.logits[self.valid, LOGIT_STATS.index(name)].astype(np.float64)

    def step_logit(self, name: str) -> np.ndarray:
        """[S]; invalid steps included, callers mask with `valid`."""
        return self.logits[:, LOGIT_STATS.index(name)].astype(np.float64)

    def hidden_stat(self, name: str) -> np.ndarray:
        """[S, L]; invalid steps included, callers mask with `valid`."""
        return self.hidden[..., HIDDEN_STATS.index(name)].astype(np.float64)

    def attention_stat(self, name: str) -> np.ndarray | None:
        if self.attention is None:
            return None
        return self.attention[..., ATTENTION_STATS.index(name)].astype(np.float64)


def once_per_view(function):
    """`function(view, profile)` runs once per view and profile; later calls get the same
    finding. An array finding is made read-only, so no caller can change what another reads
    (a finding holding arrays makes them read-only itself, as period_matches does)."""

    @functools.wraps(function)
    def finding(view: SequenceView, profile):
        kept = view.findings.get(function)
        if kept is not None and kept[0] is profile:
            return kept[1]
        value = function(view, profile)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        view.findings[function] = (profile, value)
        return value

    return finding


def sequence_view(summaries: RunSummaries, i: int, upto_step: int | None = None) -> SequenceView:
    """The i-th returned sequence; with `upto_step`, only steps 0..upto_step (a live prefix)."""
    end = None if upto_step is None else max(0, int(upto_step) + 1)

    def take(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else np.asarray(array)[i, :end]

    return SequenceView(
        valid=take(summaries.valid).astype(bool),
        logits=take(summaries.logits),
        token_ids=take(summaries.token_ids),
        hidden=take(summaries.hidden),
        attention=take(summaries.attention),
        repetition_cosine=take(summaries.repetition_cosine),
        num_heads=int(summaries.num_heads),
    )


def finite_mean(values: np.ndarray, default: float = 0.0) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else default


def finite_max(values: np.ndarray, default: float = 0.0) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else default


def finite_column_medians(values: np.ndarray) -> np.ndarray:
    """[S, C] -> the median of each column's finite values [C], NaN for a column without any
    (np.nanmedian's values, without its per-column masked-array path)."""
    if not len(values):
        return np.full(values.shape[1:], np.nan)
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    ordered = np.sort(np.where(finite, values, np.inf), axis=0)  # the finite values first
    middle = np.stack((np.maximum(counts - 1, 0) // 2, counts // 2))  # [2, C]
    lower, upper = np.take_along_axis(ordered, np.minimum(middle, len(values) - 1), axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, (lower + upper) / 2, np.nan)


def fraction(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """Length of the run of True values ending at each position (0 where False).

    Works along the last axis, so a [P, S] mask gives one run-length row per P.
    """
    positions = np.arange(mask.shape[-1])
    last_false = np.maximum.accumulate(np.where(mask, -1, positions), axis=-1)
    return np.where(mask, positions - last_false, 0)


def trailing_window_means(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For each position j: (mean of finite values in j-window+1..j, mean of finite values before that).

    NaN where a window holds no finite value, or where fewer than `window` positions precede it.
    """
    finite = np.isfinite(values)
    sums = np.concatenate(([0.0], np.cumsum(np.where(finite, values, 0.0))))
    counts = np.concatenate(([0], np.cumsum(finite)))
    ends = np.arange(1, values.shape[0] + 1)
    starts = np.maximum(ends - window, 0)
    recent = per_count(sums[ends] - sums[starts], counts[ends] - counts[starts])
    earlier = per_count(sums[starts], counts[starts])
    earlier[starts < window] = np.nan
    return recent, earlier


def per_count(totals: np.ndarray, counts: np.ndarray, empty: float = np.nan) -> np.ndarray:
    """totals / counts elementwise, `empty` where the count is 0."""
    out = np.full(np.shape(totals), empty)
    np.divide(totals, counts, out=out, where=counts > 0)
    return out
