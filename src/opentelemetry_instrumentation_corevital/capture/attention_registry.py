"""Attention probes for implementations that never return weights (SDPA, flash, flex).

transformers looks the attention function up in a shared registry on every call, so a
wrapper placed there while instrumented sees each layer's query, key and mask. With no
active capture session on the calling thread it is a plain pass-through.
"""

from __future__ import annotations

import functools

import torch

from transformers.modeling_utils import AttentionInterface

from .session import active_session

_ORIGINALS: dict[str, object] = {}


def _probed(attention_function):
    @functools.wraps(attention_function)
    def probed(module, query, key, value, attention_mask, *args, **kwargs):
        # inside a compiled region the session reads no ContextVar: it captures no attention there
        session = None if torch.compiler.is_compiling() else active_session()
        if session is not None:
            session.observe_attention(module, query, key, attention_mask, kwargs)
        return attention_function(module, query, key, value, attention_mask, *args, **kwargs)

    probed.__corevital_original__ = attention_function
    return probed


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
