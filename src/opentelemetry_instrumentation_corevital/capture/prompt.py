"""Prompt telemetry for full traces, taken while the model processes the prompt (step 0).

Each layer is handled as its attention runs, in chunks of queries, so at most one layer's
attention for one chunk exists at any time: never the (layers x heads x prompt^2) tensor.
A chunk holds at most `chunk_bytes` of attention (a share of the model's weights, as the capture's
pending blocks) and costs a fixed handful of launches: its masses in one matmul, its strongest
keys per query in one top-k; the strongest per head are chosen once per layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..summaries import PromptSummaries
from .stats import LN2

SPARSE_THRESHOLD = 0.01
SPARSE_CAP_PER_HEAD = 256
# prompt attention is recomputed for at most this many evenly spaced query rows per call (the
# last one always included), shared among the batch's prompts but at least
# MIN_QUERIES_PER_PROMPT each: the basin score is a mean over queries and the sparse profile
# keeps a few hundred entries per head, so long prompts and large batches need not pay for a
# second full prefill attention
MAX_PROMPT_QUERIES = 512
MIN_QUERIES_PER_PROMPT = 64
_KEYS_PER_QUERY = 8
MIN_CHUNK_BYTES = 16 * 1024 * 1024  # the per-chunk transients (logits and scores, float32) may always be this large


class PromptProbe:
    """Collects prompt telemetry on the device; copied to the host once at the end."""

    def __init__(self, num_layers: int, rows: slice, attention_mask, length: int, chunk_bytes: int = MIN_CHUNK_BYTES):
        self.chunk_bytes = max(chunk_bytes, MIN_CHUNK_BYTES)
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
        rows, heads, length, dim = query.shape
        kv_heads, keys_length = key.shape[1], key.shape[2]
        # grouped-query heads share their key head: queries of a group go in one matmul with it
        keys_by_head = key.transpose(-1, -2)  # [rows, kv heads, D, K]
        scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
        positions = sampled_queries(length, self._queries_per_prompt(), query.device)

        def chunks():
            step = max(1, self.chunk_bytes // max(1, rows * heads * keys_length * 4))
            for start in range(0, len(positions), step):
                chosen = positions[start : start + step]
                grouped = query[:, :, chosen].reshape(rows, kv_heads, -1, dim)  # [rows, kv heads, G x chunk, D]
                scores = torch.matmul(grouped, keys_by_head).view(rows, heads, len(chosen), -1).float() * scale
                if softcap:
                    scores = torch.tanh(scores / softcap) * softcap
                scores = scores + _mask_rows(mask, self.rows, chosen, length, keys_length)
                yield chosen, torch.softmax(scores, dim=-1).nan_to_num(0.0)

        self._summarise(layer, chunks(), keys_length)

    def observe_weights(self, layer: int, weights: torch.Tensor) -> None:
        """Eager attention already returned its weights [R, H, P, P]."""
        positions = sampled_queries(weights.shape[2], self._queries_per_prompt(), weights.device)
        probs = weights[self.rows][:, :, positions].float().nan_to_num(0.0)
        self._summarise(layer, [(positions, probs)], probs.shape[3])

    def _summarise(self, layer: int, chunks, keys_length: int) -> None:
        real = self._real_tokens(keys_length)
        # per key: (in the middle third of the real tokens, any key): a query's two masses are its weights times these
        key_weights = torch.stack((_middle_third(real), torch.ones_like(real)), dim=-1)[:, None]  # [rows, 1, K, 2]
        masses = 0.0
        candidates = []
        for positions, probs in chunks:
            query_is_real = real[:, None, positions, None]  # padded queries count nowhere
            masses = masses + (torch.matmul(probs, key_weights) * query_is_real).sum(-2)  # [rows, heads, 2]
            candidates.append(_strongest_per_query(probs * query_is_real, positions))
        middle, total = masses.unbind(-1)
        self.basin[layer] = middle / (total - middle + 1e-10)
        self.sparse[layer] = _strongest_per_head(candidates)

    def _row_count(self) -> int:
        return len(range(*self.rows.indices(self.rows.stop)))

    def _queries_per_prompt(self) -> int:
        return max(MIN_QUERIES_PER_PROMPT, MAX_PROMPT_QUERIES // max(1, self._row_count()))

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
        chunk = max(1, self.chunk_bytes // max(1, self._row_count() * vocab * 4))
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


def sampled_queries(length: int, count: int, device) -> torch.Tensor:
    """All query positions, or `count` evenly spaced ones ending with the last."""
    if length <= count:
        return torch.arange(length, device=device)
    return torch.linspace(length - 1, 0, count, device=device).round().long().flip(0)


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


def _strongest_per_query(probs: torch.Tensor, positions: torch.Tensor):
    """A chunk's candidates for the sparse profile: each query's _KEYS_PER_QUERY strongest keys
    above the threshold, (query, key, weight) each [rows, heads, chunk x keys kept]."""
    rows, heads, chunk, keys = probs.shape
    per_query = min(_KEYS_PER_QUERY, keys)
    weights, key_index = probs.masked_fill(probs <= SPARSE_THRESHOLD, 0.0).topk(per_query, dim=-1)
    queries = positions[None, None, :, None].expand(rows, heads, chunk, per_query)
    return queries.reshape(rows, heads, -1), key_index.reshape(rows, heads, -1), weights.reshape(rows, heads, -1)


def _strongest_per_head(candidates: list):
    """The SPARSE_CAP_PER_HEAD strongest of a layer's candidates per head: (query, key, weight)."""
    queries, keys, weights = (torch.cat(parts, -1) for parts in zip(*candidates))
    weights, order = weights.topk(min(SPARSE_CAP_PER_HEAD, weights.shape[-1]), dim=-1)
    return queries.gather(-1, order).int(), keys.gather(-1, order).int(), weights
