"""Health-aware decoding: a transformers StoppingCriteria that ends unhealthy sequences early.

    from opentelemetry_instrumentation_corevital import CoreVitalStoppingCriteria

    model.generate(**inputs, stopping_criteria=[CoreVitalStoppingCriteria()])

After each step it reads the step's health from the call's live monitor (so the model must be
instrumented, with a capture mode other than `off`) and stops, per sequence of the batch, a
sequence that entered a repetition loop, produced NaN/Inf, or whose running risk reached
`risk_threshold`. The span gets a `corevital.intervention` event (step, reason, sequence) and
the stopped sequence's finish reason is `corevital.repetition_loop`, `corevital.nonfinite` or
`corevital.risk`. Other sequences of the batch go on. Without an active monitor it never stops.
Without a risk threshold, in a call with no step listener and no `observe()` block, the call
keeps only the state these rules read (live/call.py), which costs less per step.
"""

from __future__ import annotations

import logging

import torch
from transformers import StoppingCriteria

from .monitor import active_monitor
from .step import StepSummary

_logger = logging.getLogger(__name__)

REPETITION_LOOP, NONFINITE, RISK = "repetition_loop", "nonfinite", "risk"


class CoreVitalStoppingCriteria(StoppingCriteria):
    """Stops a sequence on a repetition loop, NaN/Inf, or running risk >= `risk_threshold`.

    Args:
        stop_on_repetition_loop: stop once a phrase loop is confirmed (profile thresholds).
        stop_on_nonfinite: stop at the first step with NaN/Inf in the logits or hidden states.
        risk_threshold: stop when the risk score of the steps so far reaches it; None (the
            default) leaves risk alone. Early steps carry little evidence, see `min_steps`.
        min_steps: the risk rule applies from this many generated tokens on.
    """

    def __init__(
        self,
        *,
        stop_on_repetition_loop: bool = True,
        stop_on_nonfinite: bool = True,
        risk_threshold: float | None = None,
        min_steps: int = 8,
    ):
        if risk_threshold is not None and not 0.0 <= float(risk_threshold) <= 1.0:
            raise ValueError(f"risk_threshold must be a number in [0, 1] or None, got {risk_threshold!r}")
        if int(min_steps) < 1:
            raise ValueError(f"min_steps must be an int >= 1, got {min_steps!r}")
        self.stop_on_repetition_loop = bool(stop_on_repetition_loop)
        self.stop_on_nonfinite = bool(stop_on_nonfinite)
        self.risk_threshold = None if risk_threshold is None else float(risk_threshold)
        self.min_steps = int(min_steps)
        self._warned = False

    def reason_to_stop(self, summary: StepSummary) -> str | None:
        if self.stop_on_nonfinite and summary.nonfinite:
            return NONFINITE
        if self.stop_on_repetition_loop and summary.repetition_loop:
            return REPETITION_LOOP
        risk_counts = self.risk_threshold is not None and summary.step + 1 >= self.min_steps
        if risk_counts and summary.risk >= self.risk_threshold:
            return RISK
        return None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        # made on the ids' device: a host tensor would cost a copy to it at every step
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        monitor = active_monitor()
        if monitor is None:
            self._warn_inactive()
            return done
        stopped = []
        try:
            for summary in monitor.advance(input_ids):
                reason = self.reason_to_stop(summary)
                if reason is not None and summary.sequence < done.shape[0]:
                    monitor.stop(summary, reason)
                    stopped.append(summary.sequence)
        except Exception as exc:  # our fault never stops or breaks generation
            monitor.faults.record(monitor.span, "stopping", exc)
        if stopped:
            done[stopped] = True
        return done

    def _warn_inactive(self) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning(
                "CoreVitalStoppingCriteria found no CoreVital capture for this generate call; it will not stop "
                "anything. Call CoreVitalInstrumentor().instrument() with a capture mode other than 'off'."
            )
