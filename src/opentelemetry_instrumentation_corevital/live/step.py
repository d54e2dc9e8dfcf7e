"""Per-step health while generate runs: what a step listener and the health stop see.

A `StepComputer` belongs to one generate call (through its `LiveMonitor`). It costs nothing
until someone asks for a step (a listener is attached or a `CoreVitalStoppingCriteria` is in
the call): then, once per decoding step, it copies that step's summaries from the device
buffers to a host mirror (one packed copy, one sync per step) and runs the same code as the
end of the call (`CaptureSession.resolve`, then the analysis functions over the steps so far), so the
live values are the final report's values and a recalibrated risk model or profile applies
here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.early_warning import early_warning_of
from ..analysis.health import nonfinite_steps
from ..analysis.risk import risk_features_of, risk_score
from ..analysis.sequence import sequence_view
from ..capture.buffers import HostSummaries
from ..capture.stats import chosen_surprisal_bits
from ..summaries import LOGIT_STATS, RunSummaries

_SURPRISAL = LOGIT_STATS.index("surprisal")
_MIRRORED = ("logits", "surprisal", "hidden", "cosine", "heads", "cross_heads")


@dataclass(frozen=True)
class StepSummary:
    """One sequence's health right after decoding step `step` chose `token_id`.

    entropy and surprisal in bits and margin in probability, from the raw logits; `risk` is
    the risk score of this sequence's steps so far; `signals` the early-warning signals active
    at this step; `repetition_loop` whether a loop is confirmed in the steps so far;
    `nonfinite` whether this step saw NaN/Inf in the logits or a layer's hidden state.
    """

    step: int
    sequence: int
    token_id: int
    entropy: float
    surprisal: float
    margin: float
    risk: float
    signals: tuple[str, ...]
    repetition_loop: bool
    nonfinite: bool


class _HostMirror:
    """Host copies of the device buffers, extended one step at a time: the rows new since the
    last step, packed into one device tensor, cross to the host in one copy (one sync per step)."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.filled: dict[str, int] = {}

    def extend(self, buffers, step: int, tokens: torch.Tensor) -> None:
        pieces, targets = [], []
        for name in _MIRRORED:
            tensor = getattr(buffers, name)
            if tensor is None:
                continue
            if name not in self.arrays:
                self.arrays[name] = np.full(tuple(tensor.shape), np.nan, dtype=np.float32)
                self.filled[name] = 0
            start = self.filled[name]
            # the surprisal of `step` is written by the next forward; it is computed below
            end = step if name == "surprisal" else step + 1
            if end > start:
                pieces.append(tensor[start:end].float().reshape(-1))
                targets.append(self.arrays[name][start:end])
                self.filled[name] = end
        # capture.buffers records this at the next forward, from the same log-probs
        pieces.append(chosen_surprisal_bits(buffers.log_probs, tokens).float())
        targets.append(self.arrays["surprisal"][step])
        packed = torch.cat(pieces).cpu().numpy()
        offset = 0
        for target in targets:
            target[...] = packed[offset : offset + target.size].reshape(target.shape)
            offset += target.size

    def host_summaries(self, buffers, forwards: int) -> HostSummaries:
        def take(name):
            array = self.arrays.get(name)
            return None if array is None else array[:forwards]

        return HostSummaries(
            forwards=forwards,
            rows=buffers.rows,
            prompt_width=buffers.prompt_width,
            logits=take("logits"),
            surprisal=take("surprisal"),
            last_token_log_probs=None,
            hidden=take("hidden"),
            heads=take("heads"),
            cross_heads=take("cross_heads"),
            cosine_by_slot=take("cosine"),
            row_hashes=None,
            eos_log_probs=None,
            eos_token_ids=buffers.eos_token_ids,
        )


class StepComputer:
    """Turns a capture session's buffers into per-sequence StepSummaries after each step."""

    def __init__(self, session, profile, eos_token_ids):
        self.session = session
        self.profile = profile
        self.eos_token_ids = set(eos_token_ids)
        self.mirror = _HostMirror()

    def unavailable_reason(self, input_ids: torch.Tensor) -> str | None:
        session = self.session
        if not session.capturing or session.buffers is None:
            return "CoreVital capture is off or failed for this call"
        if session.options.num_beams > 1:
            return "per-step health is not available with beam search"
        if not session.buffers.in_range(session.step):
            return "the call ran past the capture's step budget"
        if input_ids.shape[-1] - session.buffers.prompt_width != session.step + 1:
            return "per-step health needs one new token per forward (not assisted decoding)"
        return None

    def compute(self, input_ids: torch.Tensor) -> RunSummaries:
        """Summaries of every returned row for steps 0..session.step, as the end of the call would give."""
        buffers, step = self.session.buffers, self.session.step
        self.mirror.extend(buffers, step, input_ids[:, -1])
        host = self.mirror.host_summaries(buffers, step + 1)
        summaries = self.session.resolve(host, input_ids.detach().cpu().numpy(), self.eos_token_ids)
        # the paths take the newest step's surprisal from the next forward, which has not run yet
        summaries.logits[:, step, _SURPRISAL] = host.surprisal[step]
        return summaries

    def step_summary(self, summaries: RunSummaries, sequence: int, step: int) -> StepSummary:
        view = sequence_view(summaries, sequence)
        logits = summaries.logits[sequence, step]
        features = risk_features_of(view, self.profile)
        return StepSummary(
            step=step,
            sequence=sequence,
            token_id=int(summaries.token_ids[sequence, step]),
            entropy=float(logits[LOGIT_STATS.index("entropy")]),
            surprisal=float(logits[_SURPRISAL]),
            margin=float(logits[LOGIT_STATS.index("margin")]),
            risk=risk_score(features, self.profile),
            signals=early_warning_of(view, self.profile, live=True).signals,
            repetition_loop=features["repetition_loop"] > 0,
            nonfinite=bool(nonfinite_steps(view)[step]),
        )

