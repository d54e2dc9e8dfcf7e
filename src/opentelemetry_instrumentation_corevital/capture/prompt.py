"""Prompt telemetry for full traces, taken while the model processes the prompt (step 0).

Each layer is handled as its attention runs, in chunks of queries, so at most one layer's
attention for one chunk exists at any time: never the (layers x heads x prompt^2) tensor.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..summaries import PromptSummaries
from .stats import LN2

SPARSE_THRESHOLD = 0.01
SPARSE_CAP_PER_HEAD = 256
# prompt attention is recomputed for at most this many evenly spaced query rows (the last one
# always included): the basin score is a mean over queries and the sparse profile keeps a few
# hundred entries per head, so long prompts need not pay for a second full prefill attention
MAX_PROMPT_QUERIES = 512
_KEYS_PER_QUERY = 8
_CHUNK_BYTES = 16 * 1024 * 1024  # bounds the transient per-chunk tensors (logits and scores, float32)


class PromptProbe:
    """Collects prompt telemetry on the device; copied to the host once at the end."""

    def __init__(self, num_layers: int, rows: slice, attention_mask, length: int):
        # a strided slice (one row per input prompt): indexing with it makes views, never copies
        self.rows = rows
        # [rows, P] True for real prompt tokens; left padding is excluded from every statistic
        self.real = real_prompt_tokens(attention_mask, rows, length)
        self.transformation: list[torch.Tensor | None] = [None] * num_layers
        self.basin: list[torch.Tensor | None] = [None] * num_layers
        self.sparse: list[tuple | None] = [None] * num_layers
        self.surprisal: torch.Tensor | None = None

    def observe_layer(self, layer: int, layer_input: torch.Tensor, layer_output: torch.Tensor) -> None:
        cosine = torch.nn.functional.cosine_similarity(
            layer_input[self.rows].float(), layer_output[self.rows].float(), dim=-1
        )
        real = self._real_tokens(cosine.shape[1]).to(cosine.device)
        self.transformation[layer] = 1.0 - (cosine * real).sum(-1) / real.sum(-1).clamp_min(1.0)

    def observe_attention(self, layer: int, query, key, mask, scaling, softcap=None) -> None:
        """Recompute prompt attention from q and k (SDPA, flash, flex), a chunk of queries at a time."""
        query, key = query[self.rows], key[self.rows]
        heads, length, dim = query.shape[1], query.shape[2], query.shape[3]
        keys_length = key.shape[2]
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
        positions = sampled_queries(length, query.device)

        def chunks():
            step = max(1, _CHUNK_BYTES // max(1, self._row_count() * heads * keys_length * 4))
            for start in range(0, len(positions), step):
                chosen = positions[start : start + step]
                scores = torch.matmul(query[:, :, chosen], key.transpose(-1, -2)).float() * scale
                if softcap:
                    scores = torch.tanh(scores / softcap) * softcap
                scores = scores + _mask_rows(mask, self.rows, chosen, length, keys_length)
                yield chosen, torch.softmax(scores, dim=-1).nan_to_num(0.0)

        self._summarise(layer, chunks(), keys_length)

    def observe_weights(self, layer: int, weights: torch.Tensor) -> None:
        """Eager attention already returned its weights [R, H, P, P]."""
        positions = sampled_queries(weights.shape[2], weights.device)
        probs = weights[self.rows][:, :, positions].float().nan_to_num(0.0)
        self._summarise(layer, [(positions, probs)], probs.shape[3])

    def _summarise(self, layer: int, chunks, keys_length: int) -> None:
        real = self._real_tokens(keys_length)
        middle = _middle_third(real)[:, None, None, :]
        middle_sum = boundary_sum = 0.0
        best = None
        for positions, probs in chunks:
            probs = probs * real[:, None, positions, None]
            mass_middle = (probs * middle).sum(-1)
            middle_sum = middle_sum + mass_middle.sum(-1)
            boundary_sum = boundary_sum + (probs.sum(-1) - mass_middle).sum(-1)
            best = _keep_strongest(best, probs, positions)
        self.basin[layer] = middle_sum / (boundary_sum + 1e-10)
        self.sparse[layer] = best

    def _row_count(self) -> int:
        return len(range(*self.rows.indices(self.rows.stop)))

    def _real_tokens(self, keys_length: int) -> torch.Tensor:
        real = self.real
        if real is not None and real.shape[1] < keys_length:
            # a static cache's keys span the whole cache; the slots after the prompt are unfilled
            real = torch.nn.functional.pad(real, (0, keys_length - real.shape[1]), value=False)
        if real is None or real.shape[1] != keys_length:
            device = real.device if real is not None else None
            return torch.ones((self._row_count(), keys_length), device=device)
        return real.float()

    def observe_final_hidden(self, hidden: torch.Tensor, lm_head: torch.nn.Module, prompt_ids: torch.Tensor) -> None:
        if not isinstance(lm_head, torch.nn.Linear) or hidden.shape[1] < 2:
            return
        rows = self.rows
        hidden, targets = hidden[rows, :-1], prompt_ids[rows, 1:].long()
        vocab = lm_head.weight.shape[0]
        chunk = max(1, _CHUNK_BYTES // max(1, self._row_count() * vocab * 4))
        parts = []
        for start in range(0, hidden.shape[1], chunk):
            logits = torch.nn.functional.linear(hidden[:, start : start + chunk], lm_head.weight, lm_head.bias)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            parts.append(-log_probs.gather(-1, targets[:, start : start + chunk, None]).squeeze(-1) / LN2)
        self.surprisal = torch.cat(parts, dim=1)

    def to_host(self) -> PromptSummaries:
        """One packed device-to-host copy per dtype, then split per prompt row."""
        sparse_parts = [part for parts in self.sparse if parts is not None for part in parts]
        host = iter(_host_arrays([self.surprisal, *self.transformation, *self.basin, *sparse_parts]))
        surprisal = next(host)
        transformation = [next(host) for _ in self.transformation]
        basin = [next(host) for _ in self.basin]
        sparse = [tuple(next(host) for _ in parts) if parts is not None else None for parts in self.sparse]
        out = PromptSummaries()
        for index in range(self._row_count()):
            if surprisal is not None:
                out.surprisal.append(surprisal[index])
            out.layer_transformation.append(_stack_rows(transformation, index))
            out.basin.append(_stack_rows(basin, index))
            out.sparse.append([tuple(part[index] for part in layer) if layer is not None else None for layer in sparse])
        return out


def _host_arrays(tensors: list) -> list:
    """Host copies of the tensors (None stays None), in one transfer per dtype instead of one per tensor."""
    out: list = [None] * len(tensors)
    by_dtype: dict = {}
    for index, tensor in enumerate(tensors):
        if tensor is not None:
            by_dtype.setdefault(tensor.dtype, []).append(index)
    for indices in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices]).cpu().numpy()
        offset = 0
        for i in indices:
            size = tensors[i].numel()
            out[i] = flat[offset : offset + size].reshape(tuple(tensors[i].shape))
            offset += size
    return out


def real_prompt_tokens(attention_mask, rows: slice, length: int) -> torch.Tensor | None:
    """[rows, P] True for real prompt tokens, from the mask the prefill forward received.

    That is the 2-D padding mask, or under a static cache the model's prepared 4-D mask, or a
    dict of them per layer type: the newest query of a causal prefill may attend exactly the
    real prompt tokens, so the last row of the full-attention mask is the padding mask.
    """
    if isinstance(attention_mask, dict):
        attention_mask = attention_mask.get("full_attention", next(iter(attention_mask.values()), None))
    if not isinstance(attention_mask, torch.Tensor):
        return None
    if attention_mask.dim() == 2:
        return attention_mask[rows, -length:].bool()
    if attention_mask.dim() != 4:
        return None
    newest = attention_mask[rows, 0, -1, :length]
    return newest.bool() if newest.dtype == torch.bool else newest == 0


def _stack_rows(per_layer: list, index: int) -> np.ndarray:
    """Row `index` of each layer's host array, stacked [L, ...]; NaN for a layer never observed."""
    present = [layer[index] for layer in per_layer if layer is not None]
    if not present:
        return np.zeros((0,), np.float32)
    filler = np.full_like(present[0], np.nan)
    return np.stack([layer[index] if layer is not None else filler for layer in per_layer]).astype(np.float32)


def _middle_third(real: torch.Tensor) -> torch.Tensor:
    """[rows, K] weights: 1 on the middle third of each row's real tokens (padding and unfilled slots excluded)."""
    count = real.sum(-1, keepdim=True)
    rank = real.cumsum(-1) - 1  # position among the row's real tokens
    return ((real > 0) & (rank >= count // 3) & (rank < 2 * count // 3)).float()


def sampled_queries(length: int, device) -> torch.Tensor:
    """All query positions, or MAX_PROMPT_QUERIES evenly spaced ones ending with the last."""
    if length <= MAX_PROMPT_QUERIES:
        return torch.arange(length, device=device)
    return torch.linspace(length - 1, 0, MAX_PROMPT_QUERIES, device=device).round().long().flip(0)


def _mask_rows(mask, rows, positions, length, keys_length) -> torch.Tensor:
    """Additive mask for the chosen queries: the model's own 4-D mask, else causal plus padding."""
    if mask is not None and mask.dim() == 4:
        part = mask[rows].index_select(2, positions)[..., :keys_length]
        if not part.dtype.is_floating_point:
            return torch.where(part.bool(), 0.0, float("-inf"))
        return part.float()
    query_positions = positions[:, None] + (keys_length - length)
    future = torch.arange(keys_length, device=positions.device)[None, :] > query_positions
    additive = torch.where(future, float("-inf"), 0.0)[None, None]
    if mask is not None:
        keep = mask[rows][:, None, None, :keys_length].bool()
        additive = additive + torch.where(keep, 0.0, float("-inf"))
    return additive


def _keep_strongest(best, probs: torch.Tensor, positions: torch.Tensor):
    """Merge this chunk's weights above the threshold into the strongest SPARSE_CAP_PER_HEAD per head.

    Two stages keep the selection cheap on long prompts: the strongest keys of each query
    first, then the strongest of those per head.
    """
    rows, heads, chunk, keys = probs.shape
    per_query = min(_KEYS_PER_QUERY, keys)
    weights, key_index = probs.masked_fill(probs <= SPARSE_THRESHOLD, 0.0).topk(per_query, dim=-1)
    queries = positions[None, None, :, None].expand(rows, heads, chunk, per_query)
    weights = weights.reshape(rows, heads, -1)
    key_index = key_index.reshape(rows, heads, -1).int()
    queries = queries.reshape(rows, heads, -1).int()
    if best is not None:
        queries = torch.cat((best[0], queries), -1)
        key_index = torch.cat((best[1], key_index), -1)
        weights = torch.cat((best[2], weights), -1)
    weights, order = weights.topk(min(SPARSE_CAP_PER_HEAD, weights.shape[-1]), dim=-1)
    return queries.gather(-1, order), key_index.gather(-1, order), weights
