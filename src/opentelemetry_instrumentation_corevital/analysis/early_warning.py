"""Early warning: trends over a sliding window of the last `early_warning_window` valid steps.

Every signal at step s uses steps <= s only, so the same computation serves a live prefix of
the run and the finished run. Signals, per valid step:

- entropy_rising: mean entropy of the window minus the mean of all earlier steps >= entropy_rise_bits,
  and >= trend_spread x the standard deviation of those earlier steps' entropy
- margin_collapsing: mean margin of the window <= margin_collapse_ratio x the mean of all earlier steps,
  and the drop >= trend_spread x the standard deviation of the earlier margins
- repetition_building: a repeating run ending here is halfway to a confirmed loop
- surprisal_spike: a step in the window had surprisal above surprisal_spike_bits
- hidden_norm_growth: mean L2 (over layers) of the window >= norm_growth_ratio x the earlier mean,
  step 0 excluded (a causal model's step 0 carries the whole prompt)

"Earlier" needs at least one full window of history, so trend signals stay quiet at first.
The spread condition judges a trend against the call itself: a model (or a text) whose entropy
swings by several bits from step to step has to move further before its swing counts as a
trend; on a flat history the fixed floors (bits, ratio) decide alone.
failure_risk = 1 - prod(1 - weight) over the active signals, and 1.0 once NaN/Inf has appeared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..profiles import WARNING_SIGNAL_NAMES, Profile, load_profile
from ..summaries import RunSummaries
from .health import NAN_OR_INF, nonfinite_steps
from .repetition import repetition_building
from .sequence import SequenceView, per_count, sequence_view, trailing_window_means


@dataclass(frozen=True)
class EarlyWarning:
    failure_risk: float
    signals: tuple[str, ...]
    step: int | None  # step evaluated (live) or where failure_risk peaked (whole run); None without valid steps


@dataclass(frozen=True)
class WarningTimeline:
    steps: np.ndarray  # int [V]: the valid steps, in order
    signals: dict[str, np.ndarray]  # name -> bool [V], WARNING_SIGNAL_NAMES plus nan_or_inf
    failure_risk: np.ndarray  # float [V]


def warning_timeline(view: SequenceView, profile: Profile) -> WarningTimeline:
    window = profile.early_warning_window
    valid = view.valid
    entropy_recent, entropy_earlier = trailing_window_means(view.logit("entropy"), window)
    margin_recent, margin_earlier = trailing_window_means(view.logit("margin"), window)
    norm_recent, norm_earlier = trailing_window_means(_mean_layer_l2(view)[valid], window)
    entropy_spread = profile.trend_spread * _earlier_std(view.logit("entropy"), window)
    margin_spread = profile.trend_spread * _earlier_std(view.logit("margin"), window)
    rise, drop = entropy_recent - entropy_earlier, margin_earlier - margin_recent
    signals = {
        "entropy_rising": (rise >= profile.entropy_rise_bits) & (rise >= entropy_spread),
        "margin_collapsing": (margin_earlier > 0) & (margin_recent <= profile.margin_collapse_ratio * margin_earlier)
        & (drop >= margin_spread),
        "repetition_building": repetition_building(view, profile)[valid],
        "surprisal_spike": _window_max(view.logit("surprisal"), window) > profile.surprisal_spike_bits,
        "hidden_norm_growth": (norm_earlier > 0) & (norm_recent >= profile.norm_growth_ratio * norm_earlier),
        NAN_OR_INF: np.logical_or.accumulate(nonfinite_steps(view)[valid]),
    }
    survive = np.ones(int(valid.sum()))
    for name in WARNING_SIGNAL_NAMES:
        survive *= np.where(signals[name], 1.0 - profile.early_warning_weights.of(name), 1.0)
    failure_risk = np.where(signals[NAN_OR_INF], 1.0, 1.0 - survive)
    return WarningTimeline(steps=view.valid_steps, signals=signals, failure_risk=failure_risk)


def early_warning_of(view: SequenceView, profile: Profile, live: bool) -> EarlyWarning:
    timeline = warning_timeline(view, profile)
    if timeline.steps.size == 0:
        return EarlyWarning(failure_risk=0.0, signals=(), step=None)
    if live:
        position = timeline.steps.size - 1
        active = {name for name, fired in timeline.signals.items() if fired[position]}
    else:
        position = int(timeline.failure_risk.argmax())
        active = {name for name, fired in timeline.signals.items() if fired.any()}
    ordered = tuple(name for name in (NAN_OR_INF, *WARNING_SIGNAL_NAMES) if name in active)
    return EarlyWarning(
        failure_risk=float(timeline.failure_risk[position]),
        signals=ordered,
        step=int(timeline.steps[position]),
    )


def early_warning(
    summaries: RunSummaries, i: int, upto_step: int | None = None, profile: Profile | None = None
) -> EarlyWarning:
    """Warning state of sequence i.

    With `upto_step`, the state at that step seen live (only steps <= upto_step are read):
    the signals active there. Without it, the whole run: the peak failure_risk and every
    signal that fired at some step.
    """
    profile = profile or load_profile(summaries.model_type)
    return early_warning_of(sequence_view(summaries, i, upto_step), profile, live=upto_step is not None)


def _mean_layer_l2(view: SequenceView) -> np.ndarray:
    """float [S]: mean finite L2 over layers per step; NaN at step 0 and where none is finite."""
    l2 = view.hidden_stat("l2_norm")
    finite = np.isfinite(l2)
    counts = finite.sum(axis=1)
    means = per_count(np.where(finite, l2, 0.0).sum(axis=1), counts)
    means[:1] = np.nan
    return means


def _earlier_std(values: np.ndarray, window: int) -> np.ndarray:
    """For each position j: the standard deviation of the finite values before its window
    (the steps trailing_window_means calls "earlier"); 0 where there are none."""
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    counts = np.concatenate(([0], np.cumsum(finite)))
    sums = np.concatenate(([0.0], np.cumsum(clean)))
    squares = np.concatenate(([0.0], np.cumsum(clean * clean)))
    starts = np.maximum(np.arange(1, values.shape[0] + 1) - window, 0)
    n = counts[starts]
    mean = per_count(sums[starts], n, 0.0)
    variance = per_count(squares[starts], n, 0.0) - mean * mean
    return np.sqrt(np.maximum(variance, 0.0))


def _window_max(values: np.ndarray, window: int) -> np.ndarray:
    """Max over the last `window` positions at each position; NaN counts as absent."""
    cleaned = np.where(np.isnan(values), -np.inf, values)
    maxima = cleaned.copy()
    for lag in range(1, min(window, cleaned.size)):
        maxima[lag:] = np.maximum(maxima[lag:], cleaned[:-lag])
    return maxima
