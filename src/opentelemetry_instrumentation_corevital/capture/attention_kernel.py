"""Newest-query attention statistics of every layer in one GPU launch (Triton).

On a decoding step the host's dispatch is the cost of the attention statistics: the torch
reduction (`stats.newest_query_attention_layers`) needs a view and a matmul per layer and some
twenty shared operators. Here one kernel reads each layer's newest query and keys where they
already are (their addresses travel in one small table), streams the keys once per key-value
head, and keeps a running maximum, normaliser and probability-weighted score per query head
(an online softmax), so it writes the entropy and the largest weight without ever holding the
probabilities.

Invariant: `fused_newest_query_attention` returns what `stats.newest_query_attention_layers`
returns for the same layers ([L, 2, R, H]: entropy bits, largest weight), up to float32
rounding (the scores are never rounded to the inputs' dtype here), or None where it does not
apply (not CUDA, no Triton, layers that differ in layout, dtype, device, scaling, soft cap or
mask, per-head masks, offsets past 32 bits); the caller then uses the torch reduction. It never
synchronises with the host. A kernel that fails to build or launch (no compiler for this GPU,
say) is not tried again in the process.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import torch

_logger = logging.getLogger(__name__)
_BLOCK_KEYS = 64
_MIN_QUERY_BLOCK = 16  # tl.dot's smallest tile
_INT32_OFFSETS = 1 << 31  # the kernel's offsets from a tensor's address are 32-bit


@functools.lru_cache(maxsize=1)
def _kernel():
    """The compiled kernel's launcher, or None when Triton cannot be imported."""
    try:
        import triton
        import triton.language as tl
    except Exception:  # no Triton, or one that does not load: the torch reduction runs
        return None

    @triton.jit(do_not_specialize=["keys", "key_row_stride", "key_head_stride", "mask_row_stride"])
    def newest_query_attention_kernel(
        addresses,  # int64 [2, L]: each layer's query, then key, base address
        mask,
        out,  # float32 [L, 2, R, H]
        rows,
        heads,
        keys,
        layers,
        query_row_stride,
        query_head_stride,
        query_offset,
        key_row_stride,
        key_head_stride,
        key_position_stride,
        mask_row_stride,
        mask_position_stride,
        scale,
        softcap,
        DTYPE: tl.constexpr,
        GROUP: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK_GROUP: tl.constexpr,
        BLOCK_DIM: tl.constexpr,
        BLOCK_KEYS: tl.constexpr,
        MASK_KIND: tl.constexpr,  # 0 none, 1 additive, 2 boolean keep-mask
        HAS_SOFTCAP: tl.constexpr,
    ):
        program = tl.program_id(0)  # one per (layer, row, key-value head)
        kv_heads = heads // GROUP
        kv_head = program % kv_heads
        row = (program // kv_heads) % rows
        layer = program // (kv_heads * rows)
        query_base = tl.load(addresses + layer).to(tl.pointer_type(DTYPE))
        key_base = tl.load(addresses + layers + layer).to(tl.pointer_type(DTYPE))

        group = tl.arange(0, BLOCK_GROUP)
        dim = tl.arange(0, BLOCK_DIM)
        in_group = group < GROUP
        in_dim = dim < DIM
        head = kv_head * GROUP + group
        query = tl.load(
            query_base + row * query_row_stride + head[:, None] * query_head_stride + query_offset + dim[None, :],
            mask=in_group[:, None] & in_dim[None, :],
            other=0.0,
        ).to(tl.float32)
        key_row = key_base + row * key_row_stride + kv_head * key_head_stride

        running_max = tl.full((BLOCK_GROUP,), float("-inf"), tl.float32)
        normaliser = tl.zeros((BLOCK_GROUP,), tl.float32)
        weighted = tl.zeros((BLOCK_GROUP,), tl.float32)  # sum of exp(score - max) * score
        for start in range(0, keys, BLOCK_KEYS):
            position = start + tl.arange(0, BLOCK_KEYS)
            in_keys = position < keys
            key = tl.load(
                key_row + position[:, None] * key_position_stride + dim[None, :],
                mask=in_keys[:, None] & in_dim[None, :],
                other=0.0,
            ).to(tl.float32)
            score = tl.dot(query, tl.trans(key), input_precision="ieee") * scale  # [group, keys]
            if HAS_SOFTCAP:
                score = softcap * (2.0 / (1.0 + tl.exp(-2.0 * score / softcap)) - 1.0)  # tanh
            if MASK_KIND == 1:
                bias = tl.load(mask + row * mask_row_stride + position * mask_position_stride, mask=in_keys, other=0.0)
                score = score + bias.to(tl.float32)[None, :]
            if MASK_KIND == 2:
                keep = tl.load(mask + row * mask_row_stride + position * mask_position_stride, mask=in_keys, other=0)
                score = tl.where(keep[None, :] != 0, score, float("-inf"))
            score = tl.where(in_keys[None, :], score, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(score, 1))
            # rows whose every score so far is -inf keep a zero normaliser (exp(-inf - -inf) is NaN)
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            rescale = tl.exp(running_max - safe_max)
            weight = tl.exp(score - safe_max[:, None])
            finite = score != float("-inf")
            normaliser = normaliser * rescale + tl.sum(weight, 1)
            weighted = weighted * rescale + tl.sum(tl.where(finite, weight * score, 0.0), 1)
            running_max = new_max

        log_normaliser = running_max + tl.log(normaliser)
        entropy_bits = tl.maximum(log_normaliser - weighted / normaliser, 0.0) / 0.6931471805599453
        largest = tl.where(normaliser > 0, 1.0 / normaliser, float("nan"))
        entropy_bits = tl.where(normaliser > 0, entropy_bits, float("nan"))
        where = out + layer * 2 * rows * heads + row * heads + head
        tl.store(where, entropy_bits, mask=in_group)
        tl.store(where + rows * heads, largest, mask=in_group)

    dtypes = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
    return newest_query_attention_kernel, dtypes


_failed: list[BaseException] = []  # the first build or launch failure: the kernel is not tried again


def available(device: torch.device) -> bool:
    """The kernel runs on CUDA devices, and on the CPU under Triton's interpreter (TRITON_INTERPRET=1, as the tests run it)."""
    if _failed or not (device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")):
        return False
    return _kernel() is not None


def _mask_row(mask: torch.Tensor, keys: int):
    """The newest query's mask row as (tensor, row stride, position stride, kind), or None when it
    is not one row per batch row (per-head masks)."""
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            return None
        row = mask[:, 0, -1, -keys:]
    elif mask.dim() == 2:
        row = mask[:, -keys:]
    else:
        return None
    if row.shape[-1] != keys:
        return None
    kind = 1 if row.dtype.is_floating_point else 2
    if kind == 2 and row.dtype != torch.bool:
        return None
    return row, (row.stride(0) if row.shape[0] > 1 else 0), row.stride(1), kind


def fused_newest_query_attention(pending: list) -> torch.Tensor | None:
    """[L, 2, R, H] for layers whose keys share one length, as stats.newest_query_attention_layers
    (pending: (query [R, H, Q, D], key [R, Hkv, T, D], mask, scaling, softcap) per layer), in one
    launch; None when the kernel does not apply to these layers."""
    if not available(pending[0][0].device):
        return None
    try:
        return launch(pending)
    except Exception as exc:
        _failed.append(exc)
        _logger.warning("CoreVital's fused attention kernel failed (%r); the torch reduction runs instead.", exc)
        return None


def launch(pending: list) -> torch.Tensor | None:
    """fused_newest_query_attention once the kernel is known to be available; raises what Triton raises."""
    query, key = pending[0][0], pending[0][1]
    kernel, dtypes = _kernel()
    dtype = dtypes.get(query.dtype)
    mask, scaling, softcap = pending[0][2], pending[0][3], pending[0][4]
    # one address table serves every layer: each must have the first layer's layout, dtype and device
    shapes, strides = (query.shape, key.shape), (query.stride(), key.stride())
    element_types, devices = (query.dtype, query.dtype), (query.get_device(), query.get_device())
    for q, k, m, s, c in pending:
        if m is not mask or s != scaling or c != softcap:
            return None
        if (q.stride(), k.stride()) != strides or (q.shape, k.shape) != shapes:
            return None
        if (q.dtype, k.dtype) != element_types or (q.get_device(), k.get_device()) != devices:
            return None
    rows, heads, queries, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    if dtype is None or query.stride(-1) != 1 or key.stride(-1) != 1:
        return None
    if kv_heads == 0 or heads % kv_heads or key.shape[0] != rows or key.shape[-1] != dim:
        return None
    if max(query.numel(), key.numel(), 0 if mask is None else mask.numel()) >= _INT32_OFFSETS:
        return None
    mask_kind, mask_row, mask_strides = 0, query, (0, 0)
    if mask is not None:
        found = _mask_row(mask, keys)
        if found is None:
            return None
        mask_row, row_stride, position_stride, mask_kind = found
        if mask_row.shape[0] not in (1, rows) or mask_row.device != query.device:
            return None
        mask_strides = (row_stride, position_stride)
    device = query.device
    addresses = torch.tensor(
        [q.data_ptr() for q, *_ in pending] + [k.data_ptr() for _, k, *_ in pending], dtype=torch.int64
    ).to(device, non_blocking=True)
    out = torch.empty((len(pending), 2, rows, heads), dtype=torch.float32, device=device)
    group = heads // kv_heads
    kernel[(len(pending) * rows * kv_heads,)](
        addresses, mask_row, out,
        rows, heads, keys, len(pending),
        query.stride(0), query.stride(1), (queries - 1) * query.stride(2),
        key.stride(0), key.stride(1), key.stride(2),
        *mask_strides,
        float(scaling if scaling is not None else 1.0 / math.sqrt(dim)),
        float(softcap or 0.0),
        DTYPE=dtype,
        GROUP=group,
        DIM=dim,
        BLOCK_GROUP=max(_MIN_QUERY_BLOCK, 1 << (group - 1).bit_length()),
        BLOCK_DIM=max(_MIN_QUERY_BLOCK, 1 << (dim - 1).bit_length()),
        BLOCK_KEYS=_BLOCK_KEYS,
        MASK_KIND=mask_kind,
        HAS_SOFTCAP=bool(softcap),
    )
    return out
