"""Phrase-loop detection: find a period p at which the run keeps repeating itself.

A step s "repeats at period p" when s and s-p are both valid, the same token was chosen at
both, and (where capture kept that lag) the last layer's hidden state at s is closer to the
one at s-p (`repetition_cosine[s, p-1]`) than the call's own typical pair of states: its
*relative* cosine (c - b) / (1 - b), with b the median cosine over all the call's steps and
lags, exceeds `repetition_relative_cosine`, and the plain cosine exceeds the
`repetition_cosine` floor. Models differ wildly in how parallel their unrelated states are
(the median is near 0.5 on SmolLM2, near 0.93 on Gemma 3), so only the relative value transfers.
Requiring the token match keeps a near-parallel but different continuation out; requiring
the cosine keeps a coincidental token repeat out.

A loop is a run of consecutive repeating steps that covers two full periods (the phrase
stands there three times) and at least `repetition_min_steps`: natural text repeats a short
phrase once ("The dog runs fast. The dog runs fast.") far more often than twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..profiles import Profile
from ..summaries import RunSummaries
from .sequence import SequenceView, once_per_view, run_lengths, sequence_view


@dataclass(frozen=True)
class Repetition:
    start_step: int  # first step of the first copy of the repeated phrase
    end_step: int  # last step that still repeats it
    period: int

    @property
    def num_steps(self) -> int:
        return self.end_step - self.start_step + 1


@dataclass(frozen=True)
class PeriodMatches:
    periods: np.ndarray  # int [P], 1..P
    repeats: np.ndarray  # bool [P, S]: step s repeats at periods[p]
    required_run: np.ndarray  # int [P]: consecutive repeating steps that make a loop
    runs: np.ndarray  # int [P, S]: length of the repeating run ending at each step (uses steps <= s only)


def relative_cosine(view: SequenceView) -> np.ndarray | None:
    """float [S, R]: (c - b) / (1 - b) against the call's median cosine b (NaN where unobserved)."""
    if view.repetition_cosine is None:
        return None
    cosine = view.repetition_cosine.astype(np.float64)
    observed = cosine[view.valid][np.isfinite(cosine[view.valid])]
    baseline = float(np.median(observed)) if observed.size else 0.0
    baseline = min(max(baseline, 0.0), 1.0 - 1e-6)
    return (cosine - baseline) / (1.0 - baseline)


@once_per_view
def period_matches(view: SequenceView, profile: Profile) -> PeriodMatches:
    steps = view.num_steps
    periods = np.arange(1, min(profile.repetition_max_period, max(steps - 1, 0)) + 1)
    repeats = np.zeros((periods.size, steps), bool)
    lags_with_cosine = 0 if view.repetition_cosine is None else view.repetition_cosine.shape[1]
    relative = relative_cosine(view)
    for row, period in enumerate(periods):
        same = (view.token_ids[period:] == view.token_ids[:-period]) & view.valid[period:] & view.valid[:-period]
        if period <= lags_with_cosine:
            cosine = view.repetition_cosine[period:, period - 1].astype(np.float64)
            same &= (cosine > profile.repetition_cosine) & (relative[period:, period - 1] > profile.repetition_relative_cosine)
        repeats[row, period:] = same
    required = np.maximum(profile.repetition_min_steps, 2 * periods)
    matches = PeriodMatches(periods=periods, repeats=repeats, required_run=required, runs=run_lengths(repeats))
    for array in (matches.periods, matches.repeats, matches.required_run, matches.runs):
        array.flags.writeable = False
    return matches


@once_per_view
def repetition_loop_of(view: SequenceView, profile: Profile) -> Repetition | None:
    """The earliest-starting loop (shortest period on a tie), or None."""
    matches = period_matches(view, profile)
    runs = matches.runs
    found: Repetition | None = None
    for row, period in enumerate(matches.periods):
        qualifying = np.flatnonzero(runs[row] >= matches.required_run[row])
        if qualifying.size == 0:
            continue
        confirmed_at = int(qualifying[0])
        start = confirmed_at - int(runs[row, confirmed_at]) + 1 - int(period)
        breaks = np.flatnonzero(~matches.repeats[row, confirmed_at:])
        end = confirmed_at + int(breaks[0]) - 1 if breaks.size else view.num_steps - 1
        if found is None or start < found.start_step:
            found = Repetition(start_step=start, end_step=end, period=int(period))
    return found


def repetition_loop(summaries: RunSummaries, i: int, profile: Profile) -> Repetition | None:
    return repetition_loop_of(sequence_view(summaries, i), profile)


def repetition_building(view: SequenceView, profile: Profile) -> np.ndarray:
    """bool [S]: at step s, some period's repeating run ending at s is at least half a loop (and >= 2)."""
    matches = period_matches(view, profile)
    halfway = np.maximum(2, -(-matches.required_run // 2))
    return (matches.runs >= halfway[:, None]).any(axis=0)
