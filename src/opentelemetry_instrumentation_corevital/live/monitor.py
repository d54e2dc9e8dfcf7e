"""One generate call's live state: step summaries, listeners, and the sequences stopped early.

The handler creates a monitor for every captured call and makes it active for the call's
thread (a ContextVar, like the capture session). Nothing runs until `advance` is called,
by the step hook (when a listener is attached) or by a `CoreVitalStoppingCriteria`: both
run in transformers' stopping-criteria slot, after each step's token is chosen. With
`every` = n it computes after every n-th generated token only (steps n-1, 2n-1, ...) and
answers nothing in between, so the steps between copy nothing to the host.
"""

from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import StoppingCriteria

from ..telemetry import attributes as attrs
from ..telemetry import events
from .step import StepComputer, StepSummary

_logger = logging.getLogger(__name__)
_ACTIVE: ContextVar["LiveMonitor | None"] = ContextVar("corevital_live_monitor", default=None)

StepListener = Callable[[StepSummary], object]
FINISH_REASON_PREFIX = "corevital."


def active_monitor() -> "LiveMonitor | None":
    return _ACTIVE.get()


@dataclass(frozen=True)
class Intervention:
    sequence: int
    step: int
    reason: str  # repetition_loop | nonfinite | risk

    @property
    def finish_reason(self) -> str:
        return FINISH_REASON_PREFIX + self.reason


class LiveMonitor:
    def __init__(self, computer: StepComputer, listeners: list[StepListener], span, faults, every: int = 1):
        self.computer = computer
        self.every = every
        self.listeners = listeners
        self.span = span
        self.faults = faults
        self.interventions: dict[int, Intervention] = {}
        self._step = -1
        self._current: list[StepSummary] = []
        self._listener_errors: set[tuple[int, str]] = set()

    @contextlib.contextmanager
    def active(self):
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def advance(self, input_ids: torch.Tensor) -> list[StepSummary]:
        """Summaries of the still-running sequences at the current step; computed once per step,
        on the steps `every` selects (none on the others)."""
        step = self.computer.session.step
        if step == self._step:
            return self._current
        self._step, self._current = step, []
        try:
            reason = self.computer.unavailable_reason(input_ids)
            if reason is not None:  # said at every step, so a call shorter than `every` says it too
                if self.span.is_recording():
                    self.span.set_attribute(attrs.LIVE_UNAVAILABLE_REASON, reason)
                return self._current
            if (step + 1) % self.every:
                return self._current
            self._current = [
                summary for summary in self.computer.advance(input_ids) if summary.sequence not in self.interventions
            ]
        except Exception as exc:  # our fault: no live health this step, generation goes on
            self.faults.record(self.span, "live", exc)
            return self._current
        for summary in self._current:
            self._notify(summary)
        return self._current

    def _notify(self, summary: StepSummary) -> None:
        for listener in self.listeners:
            try:
                listener(summary)
            except Exception as exc:  # a user callback's fault is reported, generation goes on
                self._record_listener_error(listener, summary, exc)

    def _record_listener_error(self, listener, summary: StepSummary, exc: Exception) -> None:
        description = f"{type(exc).__name__}: {exc}"
        key = (id(listener), type(exc).__name__)
        if key in self._listener_errors:
            return
        self._listener_errors.add(key)
        _logger.warning("CoreVital step listener %r raised at step %d; generation continues",
                        listener, summary.step, exc_info=exc)
        if self.span.is_recording():
            self.span.set_attribute(attrs.LISTENER_ERROR, description)
            self.span.record_exception(
                exc, {attrs.STEP_INDEX: summary.step, attrs.STEP_SEQUENCE: summary.sequence}
            )

    def stop(self, summary: StepSummary, reason: str) -> None:
        if summary.sequence in self.interventions:
            return
        intervention = Intervention(sequence=summary.sequence, step=summary.step, reason=reason)
        self.interventions[summary.sequence] = intervention
        if self.span.is_recording():
            self.span.add_event(*events.intervention_event(step=summary.step, reason=reason, sequence=summary.sequence))

    # -- end of call: the stopped sequences' results ------------------------------------------

    def apply_to_result(self, result) -> None:
        """Finish reason, token count and completion of each stopped sequence end at its stop."""
        for row, intervention in self.interventions.items():
            if row >= len(result.finish_reasons):
                continue
            kept = intervention.step + 1
            if result.output_token_counts[row] > kept:
                result.output_token_counts[row] = kept
                if row < len(result.completions):
                    result.completions[row] = result.completions[row][:kept]
            result.finish_reasons[row] = intervention.finish_reason

    def stops(self) -> dict[int, int]:
        """The last step of each stopped sequence: the padding generate appends after it is not part of it."""
        return {row: intervention.step for row, intervention in self.interventions.items()}


class StepHook(StoppingCriteria):
    """Injected into the call when a listener is attached: advances the monitor, never stops."""

    def __init__(self, monitor: LiveMonitor):
        self.monitor = monitor

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        self.monitor.advance(input_ids)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
