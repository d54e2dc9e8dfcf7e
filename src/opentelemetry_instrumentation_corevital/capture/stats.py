"""Torch reductions from raw tensors to summary statistics, on the tensors' own device.

Every function returns a small tensor and never synchronises with the host.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)  # nats -> bits
TOP_K_MASS = 10


def entropy_bits(probs: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Shannon entropy in bits over the last dimension; `in_place` leaves the terms in `probs`."""
    return torch.special.entr(probs, out=probs if in_place else None).sum(-1) / LN2


def chosen_surprisal_bits(
    log_probs: torch.Tensor, tokens: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probs [R, V] and each row's chosen token [R] -> the token's surprisal in bits [R], into `out` if given."""
    chosen = log_probs.gather(1, tokens.to(log_probs.device)[:, None].long()).squeeze(1)
    return torch.mul(chosen, -1.0 / LN2, out=out) if out is not None else chosen * (-1.0 / LN2)


# Top-k over a whole vocabulary of one row makes CUDA's top-k take its multi-block radix
# select, a dozen launches; top-k of short chunks then of the chunks' winners takes the
# one-block kernel twice. The k largest values are the same either way.
_TOPK_CHUNK = 256


def top_values(values: torch.Tensor, k: int) -> torch.Tensor:
    """[R, V] -> the k largest values of each row, in descending order [R, k]."""
    vocab = values.shape[-1]
    k = min(k, vocab)
    if not values.is_cuda or vocab <= 4 * _TOPK_CHUNK:
        return values.topk(k, dim=-1).values
    return chunked_top_values(values, k)


def chunked_top_values(values: torch.Tensor, k: int, chunk: int = _TOPK_CHUNK) -> torch.Tensor:
    """top_values in two rounds: the k largest of each chunk of `chunk` columns, then of those."""
    rows, vocab = values.shape
    pad = -vocab % chunk
    if pad:
        values = torch.nn.functional.pad(values, (0, pad), value=float("-inf"))
    winners = values.reshape(-1, chunk).topk(min(k, chunk), dim=-1, sorted=False).values
    return winners.reshape(rows, -1).topk(k, dim=-1).values


def logit_stats(
    logits: torch.Tensor, out: torch.Tensor | None = None, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits [R, V] -> (stats [R, 6], log-probs [R, V]); the stats go into `out` if given.

    Columns follow LOGIT_STATS without surprisal: entropy, margin, top-k mass, max prob,
    NaN count, Inf count. Surprisal needs the chosen token, known only a step later.
    One log-softmax, one top-k of the probabilities and one stack: every column is a small
    reduction of these, so the step costs few device launches. `overwrite` lets the
    probabilities, then the entropy terms, take the logits' memory (the caller's own float32
    copy): the call then needs one more tensor of the logits' size, the log-probs.
    """
    overwrite = overwrite and logits.dtype == torch.float32
    logits = logits.float()
    nonfinite = torch.stack((torch.isnan(logits), torch.isinf(logits))).sum(-1, dtype=torch.float32)
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = torch.exp(log_probs, out=logits) if overwrite else log_probs.exp()
    top = top_values(probs, TOP_K_MASS)
    second = top[:, 1] if top.shape[-1] > 1 else torch.zeros_like(top[:, 0])
    columns = (entropy_bits(probs, in_place=overwrite), top[:, 0] - second, top.sum(-1), top[:, 0], nonfinite[0], nonfinite[1])
    stats = torch.stack(columns, dim=-1, out=out) if out is not None else torch.stack(columns, dim=-1)
    return stats, log_probs


def hidden_stats(rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Newest-position hidden states [..., D] -> [..., 6] (HIDDEN_STATS order), into `out` if given."""
    x = rows.float()
    std, mean = torch.std_mean(x, dim=-1, correction=0)
    columns = (
        mean,
        std,
        torch.linalg.vector_norm(x, dim=-1),
        x.abs().amax(-1),
        torch.isnan(x).sum(-1, dtype=torch.float32),
        torch.isinf(x).sum(-1, dtype=torch.float32),
    )
    return torch.stack(columns, dim=-1, out=out) if out is not None else torch.stack(columns, dim=-1)


def head_stats(weights: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of the newest query [R, H, T] -> per-head [2, R, H]: entropy bits, max weight."""
    probs = weights.float()
    return torch.stack((entropy_bits(probs), probs.amax(-1)))


def newest_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention probabilities of the newest query row, recomputed from q and k.

    query [R, H, Q, D], key [R, Hkv, T, D] (grouped-query heads are broadcast),
    mask additive float or boolean keep-mask broadcastable to [R, 1, Q, T], or 2-D [R, T].
    Returns [R, H, T].
    """
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
    q = query[:, :, -1, :].reshape(rows, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float().reshape(rows, heads, -1) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    return torch.softmax(_apply_mask(scores, mask), dim=-1)


def newest_query_attention_layers(pending: list) -> torch.Tensor:
    """Batched newest-query attention for layers whose keys share one length.

    pending: (query [R, H, Q, D], key [R, Hkv, T, D], mask, scaling, softcap) per layer.
    The layers' newest queries are stacked and laid out once; each layer then costs one view of
    its keys and one batched matmul into its slice of a shared result (keys times queries: the
    keys stay where the cache holds them); one softmax and the reductions cover all layers:
    [L, 2, R, H]. On a decoding step the host's dispatch of these few operators per layer is
    the cost, so each layer gets no more of them than that.
    """
    query, key = pending[0][0], pending[0][1]
    rows, heads, _, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads
    newest = torch.stack([q for q, *_ in pending])[:, :, :, -1]  # [L, R, H, D]
    per_layer = newest.reshape(len(pending), rows * kv_heads, group, dim).transpose(-1, -2).contiguous()
    by_key = torch.empty((len(pending), rows * kv_heads, keys, group), dtype=newest.dtype, device=newest.device)
    for (_, k, *_), q, out in zip(pending, per_layer.unbind(0), by_key.unbind(0)):
        torch.bmm(k.reshape(rows * kv_heads, keys, dim), q, out=out)
    scores = by_key.view(len(pending), rows, kv_heads, keys, group).transpose(-1, -2)
    scores = scores.reshape(len(pending), rows, heads, -1).float()
    scales = [s if s is not None else 1.0 / math.sqrt(dim) for *_, s, _ in pending]
    if len(set(scales)) == 1:
        scores = scores * scales[0]
    else:
        scores = scores * torch.tensor(scales, device=scores.device)[:, None, None, None]
    softcaps = {c for *_, c in pending}
    if softcaps != {None}:
        caps = torch.tensor([c or float("inf") for *_, c in pending], device=scores.device)[:, None, None, None]
        scores = torch.where(torch.isinf(caps), scores, torch.tanh(scores / caps) * caps)
    masks = [m for _, _, m, *_ in pending]
    if all(m is masks[0] for m in masks):
        scores = _apply_mask(scores, masks[0])
    else:
        scores = torch.stack([_apply_mask(scores[i], m) for i, m in enumerate(masks)])
    probs = torch.softmax(scores, dim=-1)
    return torch.stack((entropy_bits(probs), probs.amax(-1)), dim=1)


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """scores [..., R, H, T]; mask additive or boolean keep-mask, 4-D [R, 1, Q, T] or 2-D [R, T]."""
    if mask is None:
        return scores
    row = mask[:, None, :] if mask.dim() == 2 else mask[:, :, -1, :]
    row = row[..., -scores.shape[-1]:]
    if not row.dtype.is_floating_point:
        return scores.masked_fill(~row.bool(), float("-inf"))
    return scores + row.float()
