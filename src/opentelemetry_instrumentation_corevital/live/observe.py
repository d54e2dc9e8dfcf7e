"""`observe()`: watch the generate calls made inside a `with` block, live and afterwards.

    with corevital.observe(on_step=print, rag=RagContext(document_ids=("doc-7",))) as run:
        model.generate(**inputs)
    run.risk, run.flags, run.narrative, run.should_intervene(), run.report

The observer is held in a ContextVar, so it follows the code that entered the block (and
asyncio tasks started inside it) but not plain threads: run a streaming generate thread with
`contextvars.copy_context().run`, or use `run.thread(...)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from contextvars import ContextVar
from typing import Callable

from ..analysis import RunAnalysis
from ..health_vocabulary import at_risk
from ..rag import RagContext
from .monitor import Intervention, StepListener
from .step import StepSummary

_OBSERVER: ContextVar["Run | None"] = ContextVar("corevital_observer", default=None)


def current_run() -> "Run | None":
    return _OBSERVER.get()


class Run:
    """What `observe()` saw: the step summaries as they came, then the finished call's health.

    With several generate calls in the block, the finished-call properties describe the last one.
    """

    def __init__(self, on_step: StepListener | None, rag: RagContext | None, tokenizer=None):
        self.on_step = on_step
        self.rag = rag
        self.tokenizer = tokenizer  # decodes content of the block's calls (see tokenizer_source)
        self.steps: list[StepSummary] = []  # appended by the generating thread, step by step
        self.interventions: list[Intervention] = []
        self.calls = 0
        self._span = None
        self._risk_threshold: float | None = None  # the instrumentor's, given with each call's analysis
        # the last call's analysis, computed once by the handler for the span and this run alike
        self.analysis: RunAnalysis | None = None
        self.finish_reasons: list[str] = []

    # -- live -----------------------------------------------------------------------------

    @property
    def latest(self) -> StepSummary | None:
        return self.steps[-1] if self.steps else None

    def _record_step(self, summary: StepSummary) -> None:
        self.steps.append(summary)

    def listeners(self) -> list[Callable[[StepSummary], object]]:
        """The run records each step first, then the user's `on_step` sees it."""
        return [self._record_step] if self.on_step is None else [self._record_step, self.on_step]

    def thread(self, target: Callable, *args, **kwargs) -> threading.Thread:
        """A started thread running `target(*args, **kwargs)` inside this observe block (e.g. a
        streaming `model.generate`)."""
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(target, *args), kwargs=kwargs, daemon=True)
        worker.start()
        return worker

    # -- set by the handler when a call ends -----------------------------------------------

    def _finish_call(self, span, analysis, risk_threshold: float, interventions, finish_reasons) -> None:
        self.calls += 1
        self._span, self.analysis = span, analysis
        self._risk_threshold = risk_threshold
        self.interventions.extend(interventions)
        self.finish_reasons = list(finish_reasons)

    # -- after the call ---------------------------------------------------------------------

    @property
    def risk(self) -> float | None:
        """Risk score of the last call (max over its sequences); None before a call ends or without capture."""
        return None if self.analysis is None else self.analysis.aggregate.risk_score

    @property
    def label(self) -> str | None:
        return None if self.analysis is None else self.analysis.aggregate.label

    @property
    def flags(self) -> tuple[str, ...]:
        """Names of the raised health flags (any sequence)."""
        return () if self.analysis is None else self.analysis.aggregate.flags.raised()

    @property
    def narrative(self) -> str | None:
        analysis = self.analysis
        if analysis is None or analysis.aggregate.worst_sequence is None:
            return None
        return analysis.sequences[analysis.aggregate.worst_sequence].narrative

    @property
    def report(self):
        """The finished span's `Report`, or None when no SDK span was recorded."""
        span = self._span
        if span is None or getattr(span, "end_time", None) is None:
            return None
        from ..report import Report

        return Report.from_span(span)

    def should_intervene(self) -> bool:
        """True when a sequence was stopped, a critical flag was raised (`HealthFlags.critical`)
        or the risk reached the instrumentor's `risk_threshold`."""
        if self.interventions:
            return True
        analysis = self.analysis
        if analysis is None:
            return False
        return bool(at_risk(analysis.aggregate.risk_score, analysis.aggregate.flags.critical, self._risk_threshold))


@contextlib.contextmanager
def observe(on_step: StepListener | None = None, rag: RagContext | None = None, tokenizer=None):
    """Watch the generate calls made inside the block; yields the `Run`. `tokenizer` decodes the
    block's prompts and completions when content capture is on and a call brings none."""
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be a callable taking a StepSummary, got {type(on_step).__name__}")
    if rag is not None and not isinstance(rag, RagContext):
        raise TypeError(
            f"rag must be a RagContext (RagContext.from_dict(...) builds one from a dict), got {type(rag).__name__}"
        )
    run = Run(on_step, rag, tokenizer)
    token = _OBSERVER.set(run)
    try:
        yield run
    finally:
        _OBSERVER.reset(token)
