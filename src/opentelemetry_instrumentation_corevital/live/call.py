"""The handler's side of live health for one generate call.

Creates the call's monitor, adds the step hook to the call's stopping criteria when a
listener is attached (a new StoppingCriteriaList: the caller's own list is never changed),
records the RAG context of an enclosing `observe()` on the span, and at the end applies the
early stops to the call's result and hands the outcome to the `Run`. When nothing but
`CoreVitalStoppingCriteria` itself without a risk threshold reads the steps (no listener, no
`observe()`, the criteria passed by keyword), the steps carry the loop and NaN/Inf decisions
only. `NO_LIVE_CALL` stands in when creating one failed, so the handler never asks whether a
live call exists.
"""

from __future__ import annotations

import contextlib
import inspect

from transformers import StoppingCriteriaList

from .monitor import LiveMonitor, StepHook, StepListener
from .observe import current_run
from .step import StepComputer
from .stopping import CoreVitalStoppingCriteria

_STOPPING_CRITERIA = "stopping_criteria"


class LiveCall:
    def __init__(self, session, profile, eos_token_ids, span, faults, global_listener: StepListener | None,
                 every: int = 1, generate_kwargs: dict | None = None):
        self.run = current_run()
        listeners = [global_listener] if global_listener is not None else []
        if self.run is not None:
            listeners.extend(self.run.listeners())
            if self.run.rag is not None and span.is_recording():
                span.set_attributes(self.run.rag.span_attributes())
        stopping_criteria = (generate_kwargs or {}).get(_STOPPING_CRITERIA)
        risk_and_signals = bool(listeners) or not _stop_rules_only(stopping_criteria)
        computer = StepComputer(session, profile, eos_token_ids, risk_and_signals=risk_and_signals)
        self.monitor = LiveMonitor(computer, listeners, span, faults, every)
        # only a user's callback pays the per-step sync; a Run records the steps someone else asked for
        self.someone_listens = global_listener is not None or (self.run is not None and self.run.on_step is not None)

    @contextlib.contextmanager
    def active(self):
        with self.monitor.active():
            yield self

    def arguments(self, wrapped, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The call's arguments, with the step hook added to its stopping criteria when someone listens."""
        if not self.someone_listens or not self.monitor.computer.session.options.probes:
            return args, kwargs
        signature = inspect.signature(wrapped)
        if _STOPPING_CRITERIA not in signature.parameters:
            return args, kwargs
        bound = signature.bind_partial(*args, **kwargs)
        theirs = bound.arguments.get(_STOPPING_CRITERIA)
        bound.arguments[_STOPPING_CRITERIA] = StoppingCriteriaList([*(theirs or []), StepHook(self.monitor)])
        return bound.args, bound.kwargs

    def apply_to_result(self, result) -> None:
        self.monitor.apply_to_result(result)

    def stops(self) -> dict[int, int]:
        return self.monitor.stops()

    def finish(self, span, analysis, risk_threshold: float, result) -> None:
        if self.run is not None:
            self.run._finish_call(
                span, analysis, risk_threshold,
                list(self.monitor.interventions.values()), list(getattr(result, "finish_reasons", [])),
            )


def _stop_rules_only(stopping_criteria) -> bool:
    """The call's criteria include ours, and none of ours reads the risk (a subclass may read
    anything a step summary holds)."""
    if not isinstance(stopping_criteria, (list, tuple)):
        return False
    ours = [c for c in stopping_criteria if isinstance(c, CoreVitalStoppingCriteria)]
    return bool(ours) and all(type(c) is CoreVitalStoppingCriteria and c.risk_threshold is None for c in ours)


class NoLiveCall:
    """Stands in for a `LiveCall` that could not be created: no hook, no stop, no observed run."""

    @contextlib.contextmanager
    def active(self):
        yield self

    def arguments(self, wrapped, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, kwargs

    def apply_to_result(self, result) -> None:
        pass

    def stops(self) -> dict[int, int]:
        return {}

    def finish(self, span, analysis, risk_threshold: float, result) -> None:
        pass


NO_LIVE_CALL = NoLiveCall()
