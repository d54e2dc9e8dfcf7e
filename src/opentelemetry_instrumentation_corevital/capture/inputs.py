"""The token ids a decoder forward consumes, as the model's forward pre-hook sees them.

Invariant: the result is [rows, new tokens] int ids on the model's device. A decoder-only
prefill driven by `inputs_embeds` alone has no ids: it counts as an empty prompt, which is
what generate's returned sequences start from in that case (they hold the new tokens only).
"""

from __future__ import annotations

import torch


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
