"""The token ids a decoder forward consumes, as the model's forward pre-hook sees them.

Invariant: the result is [rows, new tokens] int ids on the model's device. A decoder-only
prefill driven by `inputs_embeds` receives no ids: its prompt is the ids the user passed to
generate next to the embeddings (the returned sequences start with them; each input's row
repeated for its beams or returned sequences, as generate expands it), else empty (the
returned sequences hold the new tokens only).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch

# the input ids of the generate call running in this context (the prefix of its returned sequences)
_CALL_PROMPT_IDS: ContextVar[torch.Tensor | None] = ContextVar("corevital_call_prompt_ids", default=None)


@contextlib.contextmanager
def call_prompt_ids(ids: torch.Tensor | None):
    token = _CALL_PROMPT_IDS.set(ids)
    try:
        yield
    finally:
        _CALL_PROMPT_IDS.reset(token)


class InputsNotVisible(Exception):
    """The forward received neither decoder token ids nor embeddings."""


def decoder_step_ids(model, args, kwargs) -> torch.Tensor:
    kwargs = kwargs or {}
    if getattr(model.config, "is_encoder_decoder", False):
        ids, embeds = kwargs.get("decoder_input_ids"), kwargs.get("decoder_inputs_embeds")
    else:
        ids, embeds = kwargs.get("input_ids", args[0] if args else None), kwargs.get("inputs_embeds")
    if ids is not None:
        return ids
    if isinstance(embeds, torch.Tensor):
        prefix = None if getattr(model.config, "is_encoder_decoder", False) else _CALL_PROMPT_IDS.get()
        if prefix is not None and prefix.shape[0] and embeds.shape[0] % prefix.shape[0] == 0:
            # generate repeats each input's row for its beams or returned sequences, one after another
            return prefix.to(embeds.device).repeat_interleave(embeds.shape[0] // prefix.shape[0], dim=0)
        return torch.empty((embeds.shape[0], 0), dtype=torch.long, device=embeds.device)
    raise InputsNotVisible("the forward received neither decoder input ids nor input embeddings")


# the names generate passes the decoding cache under (transformers 5 renamed past_key_values)
_CACHE_NAMES = ("cache", "past_key_values", "cache_params", "mems", "past_buckets_states")


def forward_cache(kwargs, output=None):
    """The cache object generate reorders between beam-search steps: from the forward's output, else its inputs.

    Some models (RecurrentGemma) keep their cache out of their output; generate still reorders
    the one it passed in.
    """
    for source in (output, kwargs or {}):
        for name in _CACHE_NAMES:
            cache = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
            if cache is not None and not isinstance(cache, torch.Tensor):
                return cache
    return None
