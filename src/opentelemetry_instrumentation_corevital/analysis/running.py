"""Running health: each sequence's risk features and early-warning signals, one step at a time.

`RunningHealth.add_step` takes one decoding step of every sequence of a batch and updates
running state (sums, counts, run lengths, trailing-window prefix sums, maxima, running medians,
histograms, a bounded window of repetition keys, the middle layer's first few L2 norms and
running sums of its log L2), so a
step costs the same at step 10 as at step 1000 and is numpy over the batch. Invariant: after
steps 0..s, for every sequence valid at s, `features(i)` equals
`risk_features_of(sequence_view(summaries, i, s), profile)`, `signals(i)` equals
`early_warning_of(..., live=True).signals` and `nonfinite` the step's `nonfinite_steps`: every
threshold decision exactly (the same float64 operations in the same order), the means of
finite values within rounding (a running sum, not numpy's pairwise one).

A sequence's steps are valid from step 0 until it finishes (the EOS step is its last), so all
sequences valid at step s have s + 1 steps: the trailing windows of the batch line up.

With `risk_and_signals=False` it keeps only the loop and NaN/Inf state (what a health stop
without a risk threshold reads), at about half the cost; the invariant holds for those. A step
may then bring its NaN/Inf decision (`StepRows.nonfinite`) instead of the logit and layer
summaries it is taken from.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from ..profiles import RISK_FEATURE_NAMES, WARNING_SIGNAL_NAMES, Profile
from ..summaries import HIDDEN_STATS, LOGIT_STATS
from .health import MIN_BASELINE_STEPS, NAN_OR_INF, layer_thirds
from .risk import FEATURE_LIMIT, NORM_FLOOR, NORM_SPREAD_STEPS, log_norm_spread, middle_layer, spread_of_sums
from .sequence import per_count

_LOGIT = {name: LOGIT_STATS.index(name) for name in LOGIT_STATS}
_L2, _NAN_COUNT, _INF_COUNT = (HIDDEN_STATS.index(name) for name in ("l2_norm", "nan_count", "inf_count"))
# the columns of RunningHealth's running means, long runs and trailing windows
_MEANS = {name: column for column, name in
          enumerate(("entropy", "surprisal", "confidence", "chosen_probability", "answer_confidence"))}
_RUNS = {name: column for column, name in enumerate(("low_entropy", "confident"))}
_WINDOWS = {name: column for column, name in enumerate(("entropy", "margin", "norm"))}
_MEAN_DEFAULTS = np.array([1.0 if name == "answer_confidence" else 0.0 for name in _MEANS])
# what a RunningHealth without risk and signals still answers
LOOP_AND_NONFINITE_FEATURES = (NAN_OR_INF, "repetition_loop", "repetition_fraction")


@dataclass(frozen=True)
class StepRows:
    """One decoding step of every sequence (row i is sequence i), as RunSummaries holds it."""

    token_ids: np.ndarray  # int [N]
    valid: np.ndarray  # bool [N]
    logits: np.ndarray | None  # [N, len(LOGIT_STATS)]; None only with `nonfinite`
    hidden: np.ndarray | None  # [N, L, len(HIDDEN_STATS)]; None only with `nonfinite`
    collapsed_heads: np.ndarray | None  # [N, L]: the attention stat "collapsed_heads" (NaN: not observed; None: none at this step)
    repetition_cosine: np.ndarray | None  # [N, R]: cosine with the state 1..R steps back
    # bool [N]: NaN/Inf in the step's logits or any layer's state, for a RunningHealth without
    # risk and signals, which then reads neither logits nor hidden
    nonfinite: np.ndarray | None = None


class _FiniteMeans:
    """Per column, the mean of the finite values so far (finite_mean's value, summed in step order)."""

    def __init__(self, n: int, columns: int):
        self.sums, self.counts = np.zeros((n, columns)), np.zeros((n, columns), np.int64)

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.sums[rows] += np.where(finite, values, 0.0)
        self.counts[rows] += finite

    def means(self, defaults: np.ndarray) -> np.ndarray:
        """[n, columns]: the means, each column's default where it has no finite value yet."""
        out = np.broadcast_to(defaults, self.sums.shape).copy()
        np.divide(self.sums, self.counts, out=out, where=self.counts > 0)
        return out


class _LongRuns:
    """Per column, the fraction of steps inside runs of True at least `min_run` long (risk's _long_run_fraction)."""

    def __init__(self, n: int, columns: int, min_run: int):
        self.min_run = min_run
        self.current = np.zeros((n, columns), np.int64)
        self.closed = np.zeros((n, columns), np.int64)  # steps in finished runs that were long enough

    def add(self, rows: np.ndarray, mask: np.ndarray) -> None:
        current = self.current[rows]
        ended = ~mask & (current >= self.min_run)
        self.closed[rows] += np.where(ended, current, 0)
        self.current[rows] = np.where(mask, current + 1, 0)

    def fraction(self, steps: int) -> np.ndarray:
        total = self.closed + np.where(self.current >= self.min_run, self.current, 0)
        return total / steps if steps else np.zeros(total.shape)


class _TrailingWindows:
    """Per column, sequence.trailing_window_means and early_warning._earlier_std at the newest
    position, from the prefix sums (sequential, as np.cumsum adds) of the last `window` + 1 positions."""

    def __init__(self, n: int, columns: int, window: int):
        self.window = window
        self.length = 0
        self._recent_and_earlier: tuple[np.ndarray, np.ndarray] | None = None  # of the newest position
        # prefix sums of finite values, their squares and counts after k positions, at k % (window + 1)
        self.sums = np.zeros((n, window + 1, columns))
        self.squares = np.zeros((n, window + 1, columns))
        self.counts = np.zeros((n, window + 1, columns), np.int64)

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        clean = np.where(finite, values, 0.0)
        before, after = self.length % (self.window + 1), (self.length + 1) % (self.window + 1)
        self.sums[rows, after] = self.sums[rows, before] + clean
        self.squares[rows, after] = self.squares[rows, before] + clean * clean
        self.counts[rows, after] = self.counts[rows, before] + finite
        self.length += 1
        self._recent_and_earlier = None

    def _at(self, position: int):
        slot = position % (self.window + 1)
        return self.sums[:, slot], self.squares[:, slot], self.counts[:, slot]

    def recent_and_earlier(self) -> tuple[np.ndarray, np.ndarray]:
        """[n, columns] each, read-only: the means of the last `window` positions and of those before."""
        if self._recent_and_earlier is None:
            self._recent_and_earlier = self._means_around_start()
        return self._recent_and_earlier

    def _means_around_start(self) -> tuple[np.ndarray, np.ndarray]:
        start = max(self.length - self.window, 0)
        sums, _, counts = self._at(self.length)
        start_sums, _, start_counts = self._at(start)
        recent = per_count(sums - start_sums, counts - start_counts)
        earlier = per_count(start_sums, start_counts)
        if start < self.window:
            earlier[:] = np.nan
        return recent, earlier

    def earlier_std(self) -> np.ndarray:
        sums, squares, counts = self._at(max(self.length - self.window, 0))
        mean = per_count(sums, counts, 0.0)
        variance = per_count(squares, counts, 0.0) - mean * mean
        return np.sqrt(np.maximum(variance, 0.0))


class _RunningMedian:
    """Exact median of the values added so far (np.median's value): two heaps, O(log n) per value.
    Any split of the values into a lower and an upper half gives the same median, so a batch of
    values may go in together and be rebalanced once."""

    def __init__(self):
        self._low: list[float] = []  # the smaller half, negated (a max-heap)
        self._high: list[float] = []

    def add(self, value: float) -> None:
        low, high = self._low, self._high
        if low and value > -low[0]:
            heapq.heappush(high, value)
        else:
            heapq.heappush(low, -value)
        self._rebalance()

    def add_all(self, values: list[float]) -> None:
        """Add several values: those above the current lower half's largest go to the upper half."""
        low, high = self._low, self._high
        pivot = -low[0] if low else -math.inf
        upper = [value for value in values if value > pivot]
        if len(upper) < len(values):
            deque(map(heapq.heappush, repeat(low), [-value for value in values if value <= pivot]), maxlen=0)
        deque(map(heapq.heappush, repeat(high), upper), maxlen=0)
        self._rebalance()

    def _rebalance(self) -> None:
        low, high = self._low, self._high
        while len(low) > len(high) + 1:
            heapq.heappush(high, -heapq.heappop(low))
        while len(high) > len(low):
            heapq.heappush(low, -heapq.heappop(high))

    def median(self) -> float:
        low, high = self._low, self._high
        if not low:
            return math.nan
        if len(low) > len(high):
            return -low[0]
        return (-low[0] + high[0]) / 2


class _Repetition:
    """repetition.py's loop and 'building' decisions, kept per period from a bounded window.

    A step t "repeats at period p" when its key k[p, t] passes the relative-cosine test against
    the call's median cosine b, (k - b) / (1 - b) > repetition_relative_cosine: k is the cosine
    with step t - p (when it beats the `repetition_cosine` floor and the tokens match), +inf
    when the tokens match at a period without a cosine, -inf otherwise. The test is monotone
    in k, so a run of repeats is a window whose smallest key passes; b moves every step, so
    the decisions of past steps move with it, and every query is made against today's b:
    - loop at p: the largest window minimum so far passes; the first step it was confirmed
      is the first passing record of the window minimum's running maximum (a few per period:
      a record is a new maximum), for every sequence and period in one numpy expression;
    - building: the window of the last `halfway` keys passes.
    """

    def __init__(self, profile: Profile, n: int, capacity: int, lags: int):
        self.profile = profile
        self.lags = lags
        self.periods = np.arange(1, profile.repetition_max_period + 1)
        self.required = np.maximum(profile.repetition_min_steps, 2 * self.periods)
        self.halfway = np.maximum(2, -(-self.required // 2))
        self._longest_window = int(self.required.max())  # halfway is never longer
        self.tokens = np.zeros((n, capacity), np.int64)
        self.keys = np.full((n, self.periods.size, capacity), -np.inf)
        self.medians = [_RunningMedian() for _ in range(n)]  # of every finite cosine so far
        self.baseline = np.zeros(n)  # that median, clamped as repetition.relative_cosine does
        self.best = np.full((n, self.periods.size), -np.inf)  # running max of the loop window's minimum
        # each new running max of the loop window's minimum, per sequence and period, and its step
        self.record_values = np.full((n, self.periods.size, 4), np.nan)
        self.record_steps = np.zeros((n, self.periods.size, 4), np.int64)
        self.record_counts = np.zeros((n, self.periods.size), np.int64)
        self.building = np.zeros(n, bool)
        self.steps = 0

    def add(self, rows: np.ndarray, tokens: np.ndarray, cosine: np.ndarray | None) -> None:
        t = self.steps
        self.steps += 1
        self.tokens[rows, t] = tokens
        periods = self.periods[self.periods <= t]
        if periods.size:
            same = tokens[:, None] == self.tokens[rows[:, None], t - periods]  # [n, P']
            keys = np.where(same, np.inf, -np.inf)
            with_cosine = periods <= self.lags
            if with_cosine.any():
                lagged = cosine[:, periods[with_cosine] - 1].astype(np.float64)
                keys[:, with_cosine] = np.where(
                    same[:, with_cosine] & (lagged > self.profile.repetition_cosine), lagged, -np.inf
                )
            self.keys[rows[:, None], periods - 1, t] = keys
        if cosine is not None:
            finite = np.isfinite(cosine)
            for row, values, keep in zip(rows.tolist(), cosine.astype(np.float64), finite):
                self.medians[row].add_all(values[keep].tolist())
        medians = np.array([self.medians[row].median() for row in rows.tolist()])
        # fmax takes 0 for a NaN median (no cosine yet), as relative_cosine's clamp does
        self.baseline[rows] = np.minimum(np.fmax(medians, 0.0), 1.0 - 1e-6)
        loop_min, halfway_min = self._window_minima(rows)
        self._add_records(rows, loop_min, t)
        self.building[:] = False
        self.building[rows] = self._passes(halfway_min, self.baseline[rows, None]).any(axis=1)

    def _passes(self, keys, baseline):
        """The relative-cosine test of repetition.py, on keys (arrays or floats) against a baseline."""
        return (keys - baseline) / (1.0 - baseline) > self.profile.repetition_relative_cosine

    def _window_minima(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float [n, P] twice: the smallest key of each period's last `required[p]` steps, and of its
        last `halfway[p]` steps (-inf before there are that many)."""
        t = self.steps - 1
        first = max(0, t - self._longest_window + 1)
        window = self.keys[rows, :, first : t + 1]
        age = t - np.arange(first, t + 1)
        minima = []
        for lengths in (self.required, self.halfway):
            minimum = np.where(age < lengths[:, None], window, np.inf).min(axis=-1)
            minimum[:, lengths > t + 1] = -np.inf
            minima.append(minimum)
        return minima[0], minima[1]

    def _add_records(self, rows: np.ndarray, loop_min: np.ndarray, t: int) -> None:
        new = loop_min > self.best[rows]
        self.best[rows] = np.maximum(self.best[rows], loop_min)
        if not new.any():
            return
        if self.record_counts.max() == self.record_values.shape[2]:
            self.record_values = np.concatenate([self.record_values, np.full_like(self.record_values, np.nan)], axis=2)
            self.record_steps = np.concatenate([self.record_steps, np.zeros_like(self.record_steps)], axis=2)
        row, period = np.nonzero(new)
        slot = self.record_counts[rows[row], period]
        self.record_values[rows[row], period, slot] = loop_min[row, period]
        self.record_steps[rows[row], period, slot] = t
        self.record_counts[rows[row], period] += 1

    def loops(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start_step, end_step) [n] of each sequence's earliest-starting loop (shortest period on
        a tie); start -1 where there is none."""
        baseline = self.baseline[rows, None]
        passing = self._passes(self.record_values[rows], baseline[..., None])  # [n, P, records]
        first = passing.argmax(axis=2)
        confirmed_at = self.record_steps[rows[:, None], np.arange(self.periods.size), first]
        starts = np.where(passing.any(axis=2), confirmed_at - self.required + 1 - self.periods, self.steps)
        period = starts.argmin(axis=1)  # the first minimum: the shortest period on a tie
        start = starts[np.arange(rows.size), period]
        end = np.full(rows.size, -1)
        for index in np.flatnonzero(start < self.steps).tolist():
            row, p, confirmed = rows[index], period[index], confirmed_at[index, period[index]]
            breaks = np.flatnonzero(~self._passes(self.keys[row, p, confirmed + 1 : self.steps], baseline[index]))
            end[index] = confirmed + int(breaks[0]) if breaks.size else self.steps - 1
        return np.where(start < self.steps, start, -1), end


class RunningHealth:
    """The live health of a batch of N sequences; feed it steps 0, 1, 2, ... with `add_step`.
    Without `risk_and_signals`, `features` answers LOOP_AND_NONFINITE_FEATURES only and
    `signals` none."""

    def __init__(self, profile: Profile, num_sequences: int, num_layers: int, num_heads: int, capacity: int,
                 risk_and_signals: bool = True):
        n, window = num_sequences, profile.early_warning_window
        self.profile = profile
        self.risk_and_signals = risk_and_signals
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.capacity = capacity
        self.steps = 0
        self.running = np.zeros(0, np.int64)  # the sequences valid at the newest step
        self.nonfinite = np.zeros(n, bool)  # at the newest step
        self.any_nonfinite = np.zeros(n, bool)
        self.means = _FiniteMeans(n, len(_MEANS))
        self.entropy_max = np.full(n, -np.inf)
        self.high_entropy, self.low_margin = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.runs = _LongRuns(n, len(_RUNS), profile.low_entropy_min_run)
        self.windows = _TrailingWindows(n, len(_WINDOWS), window)
        self.surprisal_ring = np.full((n, window), -np.inf)
        _, self.middle = layer_thirds(num_layers)
        self.middle_nonfinite = np.zeros(n, bool)
        middle_layers = range(self.middle.start, self.middle.stop)
        self.middle_l2_medians = [[_RunningMedian() for _ in middle_layers] for _ in range(n)]
        self.middle_l2_max = np.full((n, self.middle.stop - self.middle.start), -np.inf)
        self.spread_l2 = np.full((n, NORM_SPREAD_STEPS), np.nan)  # middle layer's L2 at steps 0..NORM_SPREAD_STEPS-1
        self.frozen_spread: np.ndarray | None = None  # hidden_norm_spread once every step it reads is in
        # hidden_norm_spread_call: the first finite log L2 of the middle layer, then the sums of the
        # deviations from it and of their squares, added in step order (risk.shifted_log_norm_sums)
        self.call_shift = np.full(n, np.nan)
        self.call_sums, self.call_squares = np.zeros(n), np.zeros(n)
        self.call_counts = np.zeros(n, np.int64)
        self.collapse_counts: np.ndarray | None = None  # [N, L, heads + 1] histogram of collapsed-head counts
        self.collapse_fraction: np.ndarray | None = None  # of that histogram; None: not computed since it changed
        self.repetition: _Repetition | None = None

    def add_step(self, step: StepRows) -> None:
        rows = self.running = np.flatnonzero(step.valid)
        t = self.steps
        if self.repetition is None:
            lags = 0 if step.repetition_cosine is None else step.repetition_cosine.shape[1]
            self.repetition = _Repetition(self.profile, step.valid.size, self.capacity, lags)
        self.steps += 1
        if step.nonfinite is not None and not self.risk_and_signals:
            self._set_nonfinite(rows, step.nonfinite[rows])
        else:
            self._add_step_summaries(rows, t, step)
        cosine = None if step.repetition_cosine is None else step.repetition_cosine[rows]
        self.repetition.add(rows, step.token_ids[rows], cosine)

    def _add_step_summaries(self, rows: np.ndarray, t: int, step: StepRows) -> None:
        logits = step.logits[rows].astype(np.float64)
        hidden = step.hidden[rows].astype(np.float64)
        layer_nonfinite = self._add_nonfinite(rows, hidden, logits)
        if self.risk_and_signals:
            self._add_logits(rows, t, logits)
            norm = self._add_hidden(rows, t, hidden, layer_nonfinite)
            window = np.empty((rows.size, len(_WINDOWS)))
            window[:, _WINDOWS["entropy"]] = logits[:, _LOGIT["entropy"]]
            window[:, _WINDOWS["margin"]] = logits[:, _LOGIT["margin"]]
            window[:, _WINDOWS["norm"]] = norm
            self.windows.add(rows, window)
            if step.collapsed_heads is not None:
                self._add_collapsed_heads(rows, step.collapsed_heads[rows].astype(np.float64))

    def _add_logits(self, rows: np.ndarray, t: int, logits: np.ndarray) -> None:
        profile = self.profile
        entropy, margin = logits[:, _LOGIT["entropy"]], logits[:, _LOGIT["margin"]]
        max_prob, surprisal = logits[:, _LOGIT["max_prob"]], logits[:, _LOGIT["surprisal"]]
        means = np.empty((rows.size, len(_MEANS)))
        means[:, _MEANS["entropy"]] = entropy
        means[:, _MEANS["surprisal"]] = surprisal
        means[:, _MEANS["confidence"]] = max_prob
        # the answer's first steps only: a NaN counts nowhere
        means[:, _MEANS["answer_confidence"]] = max_prob if t < profile.answer_steps else np.nan
        with np.errstate(invalid="ignore"):
            means[:, _MEANS["chosen_probability"]] = np.exp2(-np.maximum(surprisal, 0.0))
        self.means.add(rows, means)
        self.entropy_max[rows] = np.fmax(self.entropy_max[rows], np.where(np.isfinite(entropy), entropy, -np.inf))
        self.high_entropy[rows] += entropy > profile.high_entropy_bits
        self.low_margin[rows] += margin < profile.low_margin
        runs = np.empty((rows.size, len(_RUNS)), bool)
        runs[:, _RUNS["low_entropy"]] = entropy < profile.low_entropy_bits
        runs[:, _RUNS["confident"]] = max_prob > profile.confident_probability
        self.runs.add(rows, runs)
        self.surprisal_ring[rows, t % profile.early_warning_window] = np.where(np.isnan(surprisal), -np.inf, surprisal)

    def _add_nonfinite(self, rows: np.ndarray, hidden: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Update the NaN/Inf flags; returns which layers of each row had one [n, L]."""
        layer_nonfinite = (hidden[..., _NAN_COUNT] > 0) | (hidden[..., _INF_COUNT] > 0)
        logit_nonfinite = (logits[:, _LOGIT["nan_count"]] > 0) | (logits[:, _LOGIT["inf_count"]] > 0)
        self._set_nonfinite(rows, layer_nonfinite.any(axis=1) | logit_nonfinite)
        return layer_nonfinite

    def _set_nonfinite(self, rows: np.ndarray, nonfinite: np.ndarray) -> None:
        self.nonfinite[:] = False
        self.nonfinite[rows] = nonfinite
        self.any_nonfinite |= self.nonfinite

    def _add_hidden(self, rows: np.ndarray, t: int, hidden: np.ndarray, layer_nonfinite: np.ndarray) -> np.ndarray:
        """Update the hidden-state statistics; returns the step's mean L2 over the layers (the norm window's value)."""
        self.middle_nonfinite[rows] |= layer_nonfinite[:, self.middle].any(axis=1)
        if t < NORM_SPREAD_STEPS and self.num_layers:
            self.spread_l2[rows, t] = hidden[:, middle_layer(self.num_layers), _L2]
        if self.num_layers:
            self._add_call_spread(rows, hidden[:, middle_layer(self.num_layers), _L2])
        if t == 0:  # a causal model's step 0 carries the whole prompt: no norm, no L2 baseline
            return np.full(rows.size, np.nan)
        l2 = hidden[..., _L2]
        finite = np.isfinite(l2)
        norm = per_count(np.where(finite, l2, 0.0).sum(axis=1), finite.sum(axis=1))
        middle = l2[:, self.middle]
        self.middle_l2_max[rows] = np.fmax(self.middle_l2_max[rows], np.where(finite[:, self.middle], middle, -np.inf))
        for row, values in zip(rows.tolist(), middle.tolist()):
            for median, value in zip(self.middle_l2_medians[row], values):
                if math.isfinite(value):
                    median.add(value)
        return norm

    def _add_call_spread(self, rows: np.ndarray, l2: np.ndarray) -> None:
        finite = np.isfinite(l2)
        rows, l2 = rows[finite], l2[finite]
        logs = np.log(np.maximum(l2, NORM_FLOOR))
        first = self.call_counts[rows] == 0
        self.call_shift[rows[first]] = logs[first]
        deviations = logs - self.call_shift[rows]
        self.call_sums[rows] += deviations
        self.call_squares[rows] += deviations * deviations
        self.call_counts[rows] += 1

    def _add_collapsed_heads(self, rows: np.ndarray, counts: np.ndarray) -> None:
        observed = np.isfinite(counts)
        whole = np.where(observed, counts, 0.0)
        if (whole < 0).any() or (whole != np.round(whole)).any():
            raise ValueError("collapsed-head counts must be whole numbers of heads")
        bins = int(max(self.num_heads, whole.max(initial=0.0))) + 1
        if self.collapse_counts is None:
            self.collapse_counts = np.zeros((self.nonfinite.size, counts.shape[1], bins), np.int64)
        elif bins > self.collapse_counts.shape[2]:
            grown = np.zeros((*self.collapse_counts.shape[:2], bins), np.int64)
            grown[..., : self.collapse_counts.shape[2]] = self.collapse_counts
            self.collapse_counts = grown
        row_index, layer = np.nonzero(observed)
        self.collapse_fraction = None
        np.add.at(self.collapse_counts, (rows[row_index], layer, whole[row_index, layer].astype(np.int64)), 1)

    # -- the values at the newest step -----------------------------------------------------

    def _mid_layer_anomaly(self) -> np.ndarray:
        exploded = np.zeros(self.nonfinite.size, bool)
        if self.steps - 1 < MIN_BASELINE_STEPS or self.middle.start == self.middle.stop:
            return self.middle_nonfinite.copy()
        running = self.running
        baseline = np.array([[median.median() for median in self.middle_l2_medians[row]] for row in running.tolist()])
        baseline = baseline.reshape(running.size, self.middle_l2_max.shape[1])
        with np.errstate(invalid="ignore"):
            exploded[running] = ((self.middle_l2_max[running] > self.profile.l2_explosion_multiplier * baseline)
                                 & (baseline > 0)).any(axis=1)
        return self.middle_nonfinite | exploded

    def _collapse_fraction(self) -> np.ndarray:
        # attention is observed on some steps only: between them the histogram, and so this, stays
        if self.collapse_fraction is None:
            self.collapse_fraction = self._collapse_fraction_of_counts()
        return self.collapse_fraction

    def _collapse_fraction_of_counts(self) -> np.ndarray:
        if self.collapse_counts is None:
            return np.zeros(self.nonfinite.size)
        histogram = self.collapse_counts
        observed = histogram.sum(axis=-1)  # [N, L]
        cumulative = histogram.cumsum(axis=-1)
        low = (cumulative > ((observed - 1) // 2)[..., None]).argmax(axis=-1)
        high = (cumulative > (observed // 2)[..., None]).argmax(axis=-1)
        median = (low.astype(np.float64) + high) / 2
        excess = max(1.0, self.profile.blame_collapse_excess_fraction * self.num_heads)
        values = np.arange(histogram.shape[-1], dtype=np.float64)
        at_least = (histogram * (values >= (median + excess)[..., None])).sum(axis=-1)
        share = per_count(at_least, observed, 0.0)
        blamed = (observed >= 2) & (share >= self.profile.collapse_persistence)
        return blamed.sum(axis=1) / max(self.num_layers, 1)

    def _norm_spread(self) -> np.ndarray:
        if self.frozen_spread is not None:
            return self.frozen_spread
        spread = np.full(self.nonfinite.size, np.nan)
        if self.num_layers:
            seen = self.spread_l2[:, : min(self.steps, NORM_SPREAD_STEPS)]
            for row in self.running.tolist():
                spread[row] = log_norm_spread(seen[row])
        if self.steps >= NORM_SPREAD_STEPS:
            self.frozen_spread = spread
        return spread

    def features(self, names: Sequence[str] = (NAN_OR_INF, *RISK_FEATURE_NAMES)) -> dict[int, dict[str, float]]:
        """Per sequence running at the newest step, the features `names` as risk_features_of gives
        them for its steps so far (a live step asks only for those its risk model reads)."""
        if not self.risk_and_signals and not set(names) <= set(LOOP_AND_NONFINITE_FEATURES):
            raise ValueError(f"this RunningHealth keeps {LOOP_AND_NONFINITE_FEATURES} only, not {tuple(names)}")
        steps = self.steps
        means = functools.cache(lambda: self.means.means(_MEAN_DEFAULTS))
        runs = functools.cache(lambda: self.runs.fraction(steps))
        loops = functools.cache(self._loop_columns)
        column_of = {
            NAN_OR_INF: lambda: self.any_nonfinite.astype(np.float64),
            "entropy_mean": lambda: means()[:, _MEANS["entropy"]],
            "entropy_max": lambda: np.where(np.isfinite(self.entropy_max), self.entropy_max, 0.0),
            "surprisal_mean": lambda: means()[:, _MEANS["surprisal"]],
            "high_entropy_fraction": lambda: self.high_entropy / steps,
            "low_margin_fraction": lambda: self.low_margin / steps,
            "low_entropy_run_fraction": lambda: runs()[:, _RUNS["low_entropy"]],
            "repetition_loop": lambda: loops()[0],
            "repetition_fraction": lambda: loops()[1],
            "mid_layer_anomaly": lambda: self._mid_layer_anomaly().astype(np.float64),
            "attention_collapse_fraction": self._collapse_fraction,
            "entropy_rise": self._entropy_rise,
            "confidence_mean": lambda: means()[:, _MEANS["confidence"]],
            "answer_uncertainty": lambda: 1.0 - means()[:, _MEANS["answer_confidence"]],
            "chosen_probability_mean": lambda: means()[:, _MEANS["chosen_probability"]],
            "confident_run_fraction": lambda: runs()[:, _RUNS["confident"]],
            "hidden_norm_spread": self._norm_spread,
            "hidden_norm_spread_call": lambda: spread_of_sums(self.call_sums, self.call_squares, self.call_counts),
        }
        clipped = np.clip(np.stack([column_of[name]() for name in names]), -FEATURE_LIMIT, FEATURE_LIMIT)
        running = self.running.tolist()
        return {row: dict(zip(names, values)) for row, values in zip(running, clipped[:, running].T.tolist())}

    def _loop_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """[N] twice: whether each sequence has a loop in its steps so far, and the loop's share of them."""
        found, share = np.zeros(self.nonfinite.size), np.zeros(self.nonfinite.size)
        start, end = self.repetition.loops(self.running)
        found[self.running] = start >= 0
        share[self.running] = np.where(start >= 0, (end - start + 1) / self.steps, 0.0)
        return found, share

    def _entropy_rise(self) -> np.ndarray:
        recent, earlier = self.windows.recent_and_earlier()
        entropy = _WINDOWS["entropy"]
        with np.errstate(invalid="ignore"):
            rise = recent[:, entropy] - earlier[:, entropy]
        return np.where(np.isfinite(rise), np.maximum(0.0, rise), 0.0)

    def signals(self) -> dict[int, tuple[str, ...]]:
        """Per sequence running at the newest step, its early-warning signals there (early_warning_of, live)."""
        if not self.risk_and_signals:
            raise ValueError("this RunningHealth keeps no early-warning signals (risk_and_signals=False)")
        profile = self.profile
        recent, earlier = self.windows.recent_and_earlier()
        earlier_std = self.windows.earlier_std()
        entropy, margin, norm = _WINDOWS["entropy"], _WINDOWS["margin"], _WINDOWS["norm"]
        entropy_recent, entropy_earlier = recent[:, entropy], earlier[:, entropy]
        margin_recent, margin_earlier = recent[:, margin], earlier[:, margin]
        norm_recent, norm_earlier = recent[:, norm], earlier[:, norm]
        with np.errstate(invalid="ignore"):
            rise, drop = entropy_recent - entropy_earlier, margin_earlier - margin_recent
            fired = {
                "entropy_rising": (rise >= profile.entropy_rise_bits)
                & (rise >= profile.trend_spread * earlier_std[:, entropy]),
                "margin_collapsing": (margin_earlier > 0)
                & (margin_recent <= profile.margin_collapse_ratio * margin_earlier)
                & (drop >= profile.trend_spread * earlier_std[:, margin]),
                "repetition_building": self.repetition.building,
                "surprisal_spike": self.surprisal_ring.max(axis=1) > profile.surprisal_spike_bits,
                "hidden_norm_growth": (norm_earlier > 0) & (norm_recent >= profile.norm_growth_ratio * norm_earlier),
                NAN_OR_INF: self.any_nonfinite,
            }
        order = (NAN_OR_INF, *WARNING_SIGNAL_NAMES)
        return {row: tuple(name for name in order if fired[name][row]) for row in self.running.tolist()}
