"""Attention probes for implementations that never return weights (SDPA, flash, flex).

transformers looks the attention function up in a shared registry on every call, so a
wrapper placed there while instrumented sees each layer's query, key and mask. With no
active capture session on the calling thread it is a plain pass-through.

Invariant: the session receives the keys and the additive mask the kernel actually applies,
not the raw arguments: a relative position bias (T5) joins the mask, and a causal prefill
with no mask into a longer static cache attends only the first query-length slots (SDPA's
causal mask is top-left aligned; the other slots are unfilled).
"""

from __future__ import annotations

import functools

import torch
from transformers.modeling_utils import AttentionInterface

from .session import _is_compiling, active_session

_ORIGINALS: dict[str, object] = {}


def _probed(attention_function):
    @functools.wraps(attention_function)
    def probed(module, query, key, value, attention_mask, *args, **kwargs):
        # every layer of every step passes here: inside a compiled region the session reads no
        # ContextVar (it captures no attention there); outside, the thread's session says at once
        # whether it records this step
        session = None if _is_compiling() else active_session()
        if session is not None and session.recording_attention:
            where = session.layout.attention_modules.get(id(module))
            if where is not None:
                try:  # a fault here is the session's, never the caller's
                    attended_key, mask = attended(module, query, key, attention_mask, kwargs)
                    session.observe_attention(where, query, attended_key, mask, kwargs)
                except Exception as exc:
                    session.record_fault("attention", exc)
        return attention_function(module, query, key, value, attention_mask, *args, **kwargs)

    probed.__corevital_original__ = attention_function
    return probed


def attended(module, query, key, attention_mask, kwargs):
    """(keys, mask) as the attention kernel applies them; no copy unless a position bias must join the mask."""
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    queries = query.shape[2]
    causal = bool(is_causal) and queries > 1 and attention_mask is None
    position_bias = kwargs.get("position_bias")
    if causal and key.shape[2] > queries:
        key = key[:, :, :queries]
        if position_bias is not None:
            position_bias = position_bias[..., :queries]
    if position_bias is None:
        return key, attention_mask
    bias = position_bias.float()
    if attention_mask is None:
        if causal:
            keys = key.shape[2]
            positions = torch.arange(max(keys, queries), device=bias.device)
            future = positions[None, :keys] > positions[:queries, None]
            bias = bias.masked_fill(future, float("-inf"))
        return key, bias
    if attention_mask.dtype == torch.bool:
        return key, bias.masked_fill(~attention_mask, float("-inf"))
    return key, bias + attention_mask.float()


def install() -> None:
    registry = AttentionInterface._global_mapping
    for name, function in list(registry.items()):
        if name in _ORIGINALS or name.startswith("paged|"):
            continue
        _ORIGINALS[name] = function
        registry[name] = _probed(function)


def uninstall() -> None:
    registry = AttentionInterface._global_mapping
    for name, original in _ORIGINALS.items():
        if getattr(registry.get(name), "__corevital_original__", None) is original:
            registry[name] = original
    _ORIGINALS.clear()
