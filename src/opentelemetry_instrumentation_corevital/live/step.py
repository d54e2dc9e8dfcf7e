"""Per-step health while generate runs: what a step listener and the health stop see.

A `StepComputer` belongs to one generate call (through its `LiveMonitor`). It costs nothing
until someone asks for a step (a listener is attached or a `CoreVitalStoppingCriteria` is in
the call). At each step it is asked for (every step, or every n-th with `live_every`) the
summaries and chosen tokens of the steps since the last ask cross from the device buffers to a
host mirror in one packed copy (one sync), are turned into each sequence's row the way
`CaptureSession.resolve` would, and update a `RunningHealth`: constant work per step, numpy over
the batch. Asked at every step, the device buffers summarise each step as it is recorded
(blocks of steps would only add a copy); asked every n-th, they keep their blocks. Its values
are the final report's values for the steps so far (analysis/running.py says how exactly), so
a recalibrated risk model or profile applies here too. When only the stop rules read the
steps (no listener, no risk threshold), the buffers keep their blocks and each step writes just
what those rules read, whether its logits and layer states were finite and its repetition
cosine; the mirror copies those and the running state keeps the loop and NaN/Inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.health import NAN_OR_INF
from ..analysis.risk import risk_score
from ..analysis.running import RunningHealth, StepRows
from ..capture.buffers import DEVICE_LOGIT_STATS
from ..capture.paths import collapsed_head_counts, repetition_by_lag
from ..summaries import LOGIT_STATS

_MIRRORED = ("logits", "surprisal", "hidden", "cosine", "heads")
# what the loop and NaN/Inf decisions read: written by each step as it is recorded
_MIRRORED_FOR_STOP_RULES = ("finite_rows", "cosine")
_DEVICE_LOGIT_COLUMNS = [LOGIT_STATS.index(name) for name in DEVICE_LOGIT_STATS]
_SURPRISAL = LOGIT_STATS.index("surprisal")
_ENTROPY, _MARGIN = LOGIT_STATS.index("entropy"), LOGIT_STATS.index("margin")


@dataclass(frozen=True)
class StepSummary:
    """One sequence's health right after decoding step `step` chose `token_id`.

    entropy and surprisal in bits and margin in probability, from the raw logits; `risk` is
    the risk score of this sequence's steps so far; `signals` the early-warning signals active
    at this step; `repetition_loop` whether a loop is confirmed in the steps so far;
    `nonfinite` whether this step saw NaN/Inf in the logits or a layer's hidden state. In a call
    whose only reader is a `CoreVitalStoppingCriteria` without a risk threshold, entropy,
    surprisal, margin and risk are NaN and signals empty (nobody sees those summaries).
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
    """Host copies of the device buffers and the generated tokens, extended one step at a time:
    the rows new since the last step, packed into one device tensor, cross to the host in one
    copy (one sync per step). The buffers named in `mirrored` are copied; the surprisal only
    when named there."""

    def __init__(self, mirrored: tuple[str, ...] = _MIRRORED):
        self.mirrored = mirrored
        # the stop rules' inputs are written as each step is recorded: nothing to summarise first
        self.summarised_first = mirrored != _MIRRORED_FOR_STOP_RULES
        self.arrays: dict[str, np.ndarray] = {}
        self.filled: dict[str, int] = {}
        self.tokens: np.ndarray | None = None  # int64 [R, max_steps]
        self.tokens_filled = 0

    def extend(self, buffers, step: int, input_ids: torch.Tensor) -> None:
        if self.summarised_first:
            if step == self.tokens_filled:  # read at every step: blocks would only add a copy
                buffers.summarise_each_step()
            else:
                buffers.flush()
        pieces, targets = [], []
        for name in self.mirrored:
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
                pieces.append(tensor[start:end].reshape(-1))
                targets.append(self.arrays[name][start:end])
                self.filled[name] = end
        if "surprisal" in self.mirrored:
            # the next forward records this in the buffers (without beams, this very tensor)
            pieces.append(buffers.surprisal_ahead(step, input_ids[:, -1]))
            targets.append(self.arrays["surprisal"][step])
        if self.tokens is None:
            self.tokens = np.zeros((buffers.rows, buffers.max_steps), np.int64)
        new_tokens = input_ids[:, buffers.prompt_width + self.tokens_filled : buffers.prompt_width + step + 1]
        # token ids travel as float32, exact below 2**24: far above any vocabulary's size; cat
        # promotes every piece to one dtype, never below this float32
        pieces.append(new_tokens.float().reshape(-1))
        packed = torch.cat(pieces).cpu().numpy()
        offset = 0
        for target in targets:
            target[...] = packed[offset : offset + target.size].reshape(target.shape)
            offset += target.size
        self.tokens[:, self.tokens_filled : step + 1] = packed[offset:].reshape(new_tokens.shape)
        self.tokens_filled = step + 1


class StepComputer:
    """Turns a capture session's buffers into per-sequence StepSummaries after each step.

    Without `risk_and_signals` (nobody reads more than a health stop without a risk threshold)
    a summary carries the loop and NaN/Inf decisions, entropy and margin only: risk and
    surprisal NaN, no signals; the surprisal and attention never leave the device.
    """

    def __init__(self, session, profile, eos_token_ids, risk_and_signals: bool = True):
        self.session = session
        self.profile = profile
        self.eos_token_ids = np.array(sorted(eos_token_ids), np.int64)
        self.risk_and_signals = risk_and_signals
        self.mirror = _HostMirror(_MIRRORED if risk_and_signals else _MIRRORED_FOR_STOP_RULES)
        session.stop_inputs_only = not risk_and_signals
        self.health: RunningHealth | None = None
        self.feature_names: tuple[str, ...] = ()  # what a StepSummary reads: the risk model's inputs and the loop
        self.finished: np.ndarray | None = None  # bool [R]: chose EOS at an earlier step
        self.failed = False  # an update raised: the running state is incomplete from there on

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

    def advance(self, input_ids: torch.Tensor) -> list[StepSummary]:
        """The StepSummary of every sequence still running at session.step (its EOS step included);
        none for the rest of the call once an update failed (the caller recorded that fault)."""
        if self.failed:
            return []
        buffers, step = self.session.buffers, self.session.step
        try:
            self.mirror.extend(buffers, step, input_ids)
            if self.health is None:
                self.health = RunningHealth(self.profile, buffers.rows, buffers.num_layers,
                                            self.session.layout.num_heads, buffers.max_steps,
                                            risk_and_signals=self.risk_and_signals)
                self.finished = np.zeros(buffers.rows, bool)
                risk_features = self.profile.risk_model.features if self.risk_and_signals else ()
                self.feature_names = tuple(dict.fromkeys((NAN_OR_INF, "repetition_loop", *risk_features)))
            for t in range(self.health.steps, step + 1):
                rows = self._rows_at(t)
                self.health.add_step(rows)
        except Exception:
            self.failed = True
            raise
        features = self.health.features(self.feature_names)
        signals = self.health.signals() if self.risk_and_signals else {}
        logits = np.full((len(rows.token_ids), len(LOGIT_STATS)), np.nan) if rows.logits is None else rows.logits
        return [
            StepSummary(
                step=step,
                sequence=row,
                token_id=int(rows.token_ids[row]),
                entropy=float(logits[row, _ENTROPY]),
                surprisal=float(logits[row, _SURPRISAL]),
                margin=float(logits[row, _MARGIN]),
                risk=risk_score(features[row], self.profile) if self.risk_and_signals else math.nan,
                signals=signals.get(row, ()),
                repetition_loop=features[row]["repetition_loop"] > 0,
                nonfinite=bool(self.health.nonfinite[row]),
            )
            for row in self.health.running.tolist()
        ]

    def _rows_at(self, t: int) -> StepRows:
        """Step t of every sequence, as capture.paths resolves it (one row per sequence: no beams)."""
        arrays, rows = self.mirror.arrays, self.mirror.tokens.shape[0]
        tokens = self.mirror.tokens[:, t]
        valid = ~self.finished
        self.finished = self.finished | (tokens[:, None] == self.eos_token_ids).any(axis=1)
        cosine = repetition_by_lag(arrays["cosine"], t, slice(None))
        if "finite_rows" in arrays:
            return StepRows(token_ids=tokens, valid=valid, logits=None, hidden=None, collapsed_heads=None,
                            repetition_cosine=cosine, nonfinite=(arrays["finite_rows"][t] < 1).any(axis=-1))
        logits = np.empty((rows, len(LOGIT_STATS)), np.float32)
        logits[:, _DEVICE_LOGIT_COLUMNS] = arrays["logits"][t]
        logits[:, _SURPRISAL] = arrays["surprisal"][t] if "surprisal" in arrays else np.nan
        heads = arrays.get("heads")  # [F, L, 2, R, H]
        if heads is not None and np.isnan(heads[t, :, 0]).all():
            heads = None  # attention was not observed at this step: no collapsed-head count to add
        return StepRows(
            token_ids=tokens,
            valid=valid,
            logits=logits,
            hidden=arrays["hidden"][t].transpose(1, 0, 2),
            collapsed_heads=None if heads is None else collapsed_head_counts(
                heads[t, :, 0].transpose(1, 0, 2), self.session.options
            ),
            repetition_cosine=cosine,
        )
