"""Preallocated device buffers that hold one generate call's summaries.

Sized by steps x layers x rows x a few statistics, never by prompt length or hidden size
times steps. Writes are asynchronous tensor ops: nothing here waits for the device.

Without beams, the logits of a few consecutive steps wait in a pending block (at most
`PENDING_SHARE` of the model's weights), and so do the layers' newest hidden states: each
block is summarised together, in one set of launches for the block instead of one per step,
so a step costs one copy into each. Anyone who reads the statistics or `log_probs` before the
end of the call calls `flush()` first; one who reads them at every step calls
`summarise_each_step()` instead, which ends the blocks for the rest of the call. A reader of
the stop rules' inputs only (`stop_inputs`) keeps the blocks: each step then writes, as it is
recorded, whether its logits and layer states were all finite (`finite_rows`) and its repetition
cosine, which the block's summary does not compute again. With beams, rows are reordered between
steps: every step is summarised at once (blocks of one step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..summaries import HIDDEN_STATS
from . import attention_kernel, hashing, stats
from .layout import ModelLayout

REPETITION_LAGS = 32
# each pending block's share of the model's weights (at least PENDING_FLOOR_BYTES); summarising
# it takes as much again
PENDING_SHARE = 2.5e-3
PENDING_FLOOR_BYTES = 1 << 20
MAX_PENDING_STEPS = 16
# an extra forward may run before generate notices it has finished (deferred stop checks)
_EXTRA_STEPS = 2
# the device buffer holds these; surprisal, known a step later, has its own buffer
DEVICE_LOGIT_STATS = ("entropy", "margin", "topk_mass", "max_prob", "nan_count", "inf_count")


@dataclass
class HostSummaries:
    """The buffers copied to the host, still indexed by forward step and device row."""

    forwards: int
    rows: int
    prompt_width: int
    logits: np.ndarray  # [F, R, len(DEVICE_LOGIT_STATS)]
    surprisal: np.ndarray  # [F, R] surprisal of the token chosen at step t, by the row holding it at t+1
    last_token_log_probs: np.ndarray | None  # [R, N] log-prob of each returned sequence's last token
    hidden: np.ndarray  # [F, L, R, len(HIDDEN_STATS)]
    heads: np.ndarray | None  # [F, L, 2, R, H]
    cross_heads: np.ndarray | None
    repetition_cosine: np.ndarray  # [F, R, K]: cosine of the last layer's state with the one k + 1 steps back
    row_hashes: np.ndarray | None  # [F, R], beam search only
    eos_log_probs: np.ndarray | None  # [F, R, E], beam search only: a beam ending in EOS leaves the rows
    eos_token_ids: tuple[int, ...] = ()


def pending_bytes(model: torch.nn.Module) -> int:
    """How many bytes each pending block (logits, layer states) of a call on `model` may hold."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(int(weights * PENDING_SHARE), PENDING_FLOOR_BYTES)


def _block_steps(budget: int, step_bytes: int, max_steps: int) -> int:
    return max(1, min(budget // max(1, step_bytes), MAX_PENDING_STEPS, max_steps))


class _PendingSteps:
    """Consecutive steps waiting to be summarised together: step `first + k` in `block[k]`, k < count."""

    __slots__ = ("block", "first", "count")

    def __init__(self, block: torch.Tensor):
        self.block, self.first, self.count = block, 0, 0

    @property
    def steps(self) -> int:
        return int(self.block.shape[0])

    @property
    def full(self) -> bool:
        return self.count == self.steps

    def holds(self, step: int) -> bool:
        return self.first <= step < self.first + self.count

    def follows(self, step: int) -> bool:
        """`step` may join: nothing waits, or it comes right after the waiting steps."""
        return not self.count or step == self.first + self.count

    def slot(self, step: int) -> torch.Tensor:
        """Where `step` goes (it follows the waiting steps)."""
        if not self.count:
            self.first = step
        self.count += 1
        return self.block[self.count - 1]

    def take(self) -> tuple[int, torch.Tensor] | None:
        """(first step, their rows) of the waiting steps, which no longer wait; None when none do."""
        count, self.count = self.count, 0
        return (self.first, self.block[:count]) if count else None


class StepBuffers:
    def __init__(self, layout: ModelLayout, options, prompt_ids: torch.Tensor, pending_bytes: int = 0,
                 stop_inputs: bool = False):
        self.device = prompt_ids.device
        self.rows = int(prompt_ids.shape[0])
        self.prompt_width = int(prompt_ids.shape[1])
        self.max_steps = options.max_steps + _EXTRA_STEPS
        self.num_layers = layout.num_layers
        nan = float("nan")
        steps, rows = self.max_steps, self.rows
        self.logits = torch.full((steps, rows, len(DEVICE_LOGIT_STATS)), nan, device=self.device)
        self.surprisal = torch.full((steps, rows), nan, device=self.device)
        self.hidden = torch.full((steps, self.num_layers, rows, len(HIDDEN_STATS)), nan, device=self.device)
        self.cosine = torch.full((steps, rows, REPETITION_LAGS), nan, device=self.device)
        # [F, R, 2]: whether the logits (0) and every layer's newest state (1) were all finite;
        # written at each step for a reader of the stop rules' inputs only (no beams)
        self.finite_rows: torch.Tensor | None = None
        if stop_inputs and options.num_beams == 1:
            self.finite_rows = torch.ones((steps, rows, 2), dtype=torch.bool, device=self.device)
        self.heads: torch.Tensor | None = None
        self.cross_heads: torch.Tensor | None = None
        self.hidden_rows: list = [None] * self.num_layers
        self._hidden_rows_filled = 0  # how many of hidden_rows hold this step's state
        # unit last-layer states of the REPETITION_LAGS steps before the pending layer block, oldest first
        self.recent_states: torch.Tensor | None = None
        self.log_probs: torch.Tensor | None = None  # [R, V] of step `log_probs_step`
        self.log_probs_step = -1
        # beams reorder rows between steps, so each of their steps is summarised at once
        self._pending_bytes = pending_bytes if options.num_beams == 1 else 0
        self._pending_logits: _PendingSteps | None = None  # block [K, R, V]; None: each step summarised at once
        self._pending_tokens: dict[int, torch.Tensor] = {}  # step -> the tokens chosen at it [R]
        self._pending_layers: _PendingSteps | None = None  # block [K, L, R, D]: the layers' newest states
        self._lag_index: dict[int, torch.Tensor] = {}  # block length -> where each lag sits in the block's Gram matrix
        # (cross, key length) -> [(layer, query, key, mask, scaling, softcap)], reduced at step end
        self.pending_attention: dict[tuple[bool, int], list] = {}
        self._fused_attention = options.fused_attention
        self._surprisal_ahead: tuple[int, torch.Tensor] | None = None  # (step, surprisal) computed before its forward
        self._layer_indices: dict[tuple[int, ...], torch.Tensor] = {}  # layers written apart from their neighbours
        self.row_hashes = None
        self.eos_log_probs = None
        self.eos_token_ids = tuple(options.eos_token_ids)
        if options.num_beams > 1:
            self.row_hashes = torch.zeros((steps, rows), dtype=torch.int64, device=self.device)
            self.row_hashes[0] = hashing.fold_torch(prompt_ids)
            self.eos_log_probs = torch.full((steps, rows, len(self.eos_token_ids)), nan, device=self.device)
            self._eos_index = torch.tensor(self.eos_token_ids, dtype=torch.long, device=self.device)

    def in_range(self, step: int) -> bool:
        return 0 <= step < self.max_steps

    def record_hidden_output(self, layer: int, output: torch.Tensor) -> None:
        """A layer's output [R, T, D]. A decode step's (T = 1) is never reused in place: keep a
        reference, at no device cost. The prompt's: copy the newest position so the rest can be freed."""
        if self.hidden_rows[layer] is None:
            self._hidden_rows_filled += 1
        self.hidden_rows[layer] = output[:, -1:, :].clone() if output.shape[1] > 1 else output

    def record_heads(self, step: int, layer: int, cross: bool, per_head: torch.Tensor) -> None:
        self._heads_buffer(cross, per_head)[step, layer] = per_head

    def _heads_buffer(self, cross: bool, per_head: torch.Tensor) -> torch.Tensor:
        buffer = self.cross_heads if cross else self.heads
        if buffer is None:
            shape = (self.max_steps, self.num_layers, 2, self.rows, per_head.shape[-1])
            buffer = torch.full(shape, float("nan"), device=per_head.device)
            if cross:
                self.cross_heads = buffer
            else:
                self.heads = buffer
        return buffer

    def defer_attention(self, layer: int, cross: bool, query, key, mask, scaling, softcap) -> None:
        """Keep references only: the keys are this step's cache entries, alive until the next step anyway."""
        group = self.pending_attention.setdefault((cross, int(key.shape[-2])), [])
        group.append((layer, query, key, mask, scaling, softcap))

    def _reduce_pending_attention(self, step: int) -> None:
        for (cross, _), group in self.pending_attention.items():
            for layers, per_layer in self._reduce_attention_group(group):
                buffer = self._heads_buffer(cross, per_layer)
                if layers == list(range(layers[0], layers[0] + len(layers))):
                    buffer[step, layers[0] : layers[0] + len(layers)] = per_layer
                else:
                    buffer[step, self._layer_index(layers, per_layer.device)] = per_layer
        self.pending_attention = {}

    def _reduce_attention_group(self, group: list) -> list[tuple[list[int], torch.Tensor]]:
        """(layers, [L, 2, R, H]) for deferred layers whose keys share one length: one fused kernel
        launch per mask they share (sliding-window and full-attention layers get masks of their
        own) where the kernel applies, else the torch reduction of them all."""
        if self._fused_attention and attention_kernel.available(group[0][1].device):
            by_mask: dict[int, list] = {}
            for entry in group:
                by_mask.setdefault(id(entry[3]), []).append(entry)
            reduced = []
            for part in by_mask.values():
                per_layer = attention_kernel.fused_newest_query_attention([entry[1:] for entry in part])
                if per_layer is None:
                    break
                reduced.append(([entry[0] for entry in part], per_layer))
            else:
                return reduced
        return [([entry[0] for entry in group], stats.newest_query_attention_layers([entry[1:] for entry in group]))]

    def _layer_index(self, layers: list[int], device: torch.device) -> torch.Tensor:
        """The device tensor of `layers`, made once per call: a copy from the host at every step
        would wait for the device."""
        key = tuple(layers)
        index = self._layer_indices.get(key)
        if index is None:
            index = self._layer_indices[key] = torch.tensor(layers, device=device)
        return index

    def record_logits(self, step: int, logits: torch.Tensor) -> None:
        """The logits generate samples from at `step` ([R, V]): summarise them now, or keep them
        with the pending steps when they follow those and a block of them fits the budget."""
        if self._pending_logits is None and self._pending_bytes:
            steps = _block_steps(self._pending_bytes, logits.numel() * 4, self.max_steps)
            if steps > 1:
                block = torch.empty((steps, *logits.shape), dtype=torch.float32, device=logits.device)
                self._pending_logits = _PendingSteps(block)
            else:
                self._pending_bytes = 0
        if self.finite_rows is not None:
            self.finite_rows[step, :, 0] = torch.isfinite(logits).all(-1)
        pending = self._pending_logits
        if pending is None:
            _, self.log_probs = stats.logit_stats(logits, out=self.logits[step])
            self.log_probs_step = step
            if self.eos_log_probs is not None and self.eos_token_ids:
                self.eos_log_probs[step] = self.log_probs.index_select(1, self._eos_index)
            return
        if not pending.follows(step):
            self.flush_logits()
        pending.slot(step).copy_(logits)
        if pending.full:
            self.flush_logits()

    @property
    def logit_block_steps(self) -> int:
        """How many steps' logits are summarised together (1: each at its own step)."""
        return 1 if self._pending_logits is None else self._pending_logits.steps

    @property
    def layer_block_steps(self) -> int:
        """How many steps' layer states are summarised together (1: each at its own step)."""
        return 1 if self._pending_layers is None else self._pending_layers.steps

    def flush(self) -> None:
        """Summarise everything pending: after it every buffer holds every recorded step."""
        self.flush_logits()
        self.flush_layers()

    def summarise_each_step(self) -> None:
        """Flush, then summarise every later step when it is recorded: for a reader at every step,
        blocks would only add a copy into them. Called again, it only flushes: the layer block,
        now of one step, stays allocated."""
        self.flush()
        if self._pending_bytes:
            self._pending_bytes = 0
            self._pending_logits = self._pending_layers = None

    def flush_logits(self) -> None:
        """Summarise the pending steps' logits: their statistics, the surprisal of every pending
        step whose token is known, and `log_probs` of the newest step."""
        taken = None if self._pending_logits is None else self._pending_logits.take()
        if taken is None:
            return
        first, waiting = taken
        count, rows, vocab = waiting.shape
        flat_stats = self.logits[first : first + count].view(count * rows, -1)
        flat_logits = waiting.view(count * rows, vocab)
        _, log_probs = stats.logit_stats(flat_logits, out=flat_stats, overwrite=True)
        log_probs = log_probs.view(count, rows, vocab)
        known = []
        for step in range(first, first + count):
            if step not in self._pending_tokens:
                break
            known.append(self._pending_tokens[step])
        self._pending_tokens.clear()
        if known:
            chosen = torch.stack(known).reshape(-1)
            flat_surprisal = self.surprisal[first : first + len(known)].view(-1)
            stats.chosen_surprisal_bits(log_probs[: len(known)].reshape(-1, vocab), chosen, out=flat_surprisal)
        # a row of a block is copied so that the block's memory is freed
        self.log_probs = log_probs[-1] if count == 1 else log_probs[-1].clone()
        self.log_probs_step = first + count - 1

    def record_layers(self, step: int) -> None:
        """Every layer ran: reduce this step's attention, and add the layers' newest states to the pending block."""
        if self.pending_attention:
            self._reduce_pending_attention(step)
        if self._hidden_rows_filled < self.num_layers:
            return
        if self._pending_layers is None:
            reference = self.hidden_rows[-1]
            # checked once, when the block is sized: a model's layers keep their layout for the call
            if reference.dim() != 3 or reference.shape[:2] != (self.rows, 1):
                # e.g. XLNet's layers run position-first: [positions, batch, hidden]
                raise ValueError(
                    f"decoder layer outputs of shape {tuple(reference.shape)} are not [batch, positions, hidden]"
                )
            # the block, then its float copy and the reduction's temporaries
            step_bytes = self.num_layers * reference.numel() * (reference.element_size() + 8)
            steps = _block_steps(self._pending_bytes, step_bytes, self.max_steps)
            shape = (steps, self.num_layers, self.rows, reference.shape[-1])
            self._pending_layers = _PendingSteps(torch.empty(shape, dtype=reference.dtype, device=reference.device))
        pending = self._pending_layers
        if not pending.follows(step):
            self.flush_layers()
        slot = pending.slot(step)
        torch.stack(self.hidden_rows, out=slot.view(self.num_layers, self.rows, 1, -1))
        self.hidden_rows = [None] * self.num_layers
        self._hidden_rows_filled = 0
        if self.finite_rows is not None:
            self.finite_rows[step, :, 1] = torch.isfinite(slot).all(-1).all(0)
            self._repetition_cosine(step, slot[None])
        if pending.full:
            self.flush_layers()

    def flush_layers(self) -> None:
        """Summarise the pending steps' layer states: per-layer statistics, and (unless each step
        wrote its own) the repetition cosine."""
        taken = None if self._pending_layers is None else self._pending_layers.take()
        if taken is None:
            return
        first, block = taken  # [C, L, R, D]
        stats.hidden_stats(block, out=self.hidden[first : first + block.shape[0]])
        if self.finite_rows is None:
            self._repetition_cosine(first, block)

    def _repetition_cosine(self, first: int, block: torch.Tensor) -> None:
        """The cosine of each step's last-layer state in `block` [C, L, R, D] (steps first..) with
        those of the REPETITION_LAGS steps before it: one Gram matrix of the block against the
        block and the steps before it."""
        count = block.shape[0]
        last = block[:, -1].float()
        units = last / torch.linalg.vector_norm(last, dim=-1, keepdim=True).clamp_min(1e-12)  # [C, R, D]
        if self.recent_states is None:
            self.recent_states = torch.zeros((REPETITION_LAGS, *units.shape[1:]), device=units.device)
        states = torch.cat((self.recent_states, units))  # [LAGS + C, R, D], oldest first
        gram = torch.einsum("crd,srd->crs", units, states)
        index = self._lag_index.get(count)
        if index is None:
            steps = torch.arange(count, device=units.device)[:, None]
            lags = torch.arange(1, REPETITION_LAGS + 1, device=units.device)[None, :]
            index = self._lag_index[count] = (REPETITION_LAGS + steps - lags)[:, None, :]  # [C, 1, LAGS]
        torch.gather(gram, 2, index.expand(count, self.rows, REPETITION_LAGS), out=self.cosine[first : first + count])
        self.recent_states = states[-REPETITION_LAGS:]

    def surprisal_ahead(self, step: int, tokens: torch.Tensor) -> torch.Tensor:
        """The surprisal of `tokens`, chosen at `step`, for a reader who cannot wait for the next
        forward (the live mirror); that forward takes it instead of computing it again."""
        surprisal = stats.chosen_surprisal_bits(self.log_probs, tokens)
        self._surprisal_ahead = (step, surprisal)
        return surprisal

    def record_chosen_tokens(self, step: int, tokens: torch.Tensor, parents: torch.Tensor | None) -> None:
        """At the start of `step`, the token chosen at `step - 1` is the rows' newest input."""
        tokens = tokens.to(self.device)
        if self._pending_logits is not None and self._pending_logits.holds(step - 1):
            self._pending_tokens[step - 1] = tokens
            return
        log_probs = self.log_probs if self.log_probs_step == step - 1 else None
        if parents is not None:
            parents = parents.to(self.device)
            log_probs = log_probs.index_select(0, parents)
            if self.recent_states is not None:
                self.recent_states = self.recent_states.index_select(1, parents)
        if log_probs is not None:
            ahead = self._surprisal_ahead
            if parents is None and ahead is not None and ahead[0] == step - 1:
                self.surprisal[step - 1] = ahead[1]
            else:
                stats.chosen_surprisal_bits(log_probs, tokens, out=self.surprisal[step - 1])
        if self.row_hashes is not None:
            previous = self.row_hashes[step - 1]
            if parents is not None:
                previous = previous.index_select(0, parents)
            self.row_hashes[step] = hashing.extend_torch(previous, tokens)

    def to_host(self, forwards: int, sequences: torch.Tensor) -> HostSummaries:
        forwards = min(forwards, self.max_steps)
        self.flush()
        last_token_log_probs = None
        if self.log_probs is not None:
            last_tokens = sequences[:, -1].to(self.device).long()
            last_token_log_probs = self.log_probs[:, last_tokens].cpu().numpy()

        def host(tensor):
            return None if tensor is None else tensor[:forwards].cpu().numpy()

        return HostSummaries(
            forwards=forwards,
            rows=self.rows,
            prompt_width=self.prompt_width,
            logits=host(self.logits),
            surprisal=host(self.surprisal),
            last_token_log_probs=last_token_log_probs,
            hidden=host(self.hidden),
            heads=host(self.heads),
            cross_heads=host(self.cross_heads),
            repetition_cosine=host(self.cosine),
            row_hashes=host(self.row_hashes),
            eos_log_probs=host(self.eos_log_probs),
            eos_token_ids=self.eos_token_ids,
        )
