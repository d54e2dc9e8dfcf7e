"""A tiny Llama, built from a config, whose next token is a fixed function of the current one.

Attention and MLP outputs are zeroed, so every layer's hidden state is the current token's
embedding; one-hot embeddings and an output head that maps token k to `successor[k]` make
greedy decoding follow the successor map exactly. A map with a cycle loops at the cycle's
period (hidden states repeat exactly, as in a real degenerate loop); a long path without a
cycle is a fluent, never-repeating run. The attention probes still see real attention.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 256
HIDDEN = 64
EOS, PAD = 2, 0
# confidence of the chosen token: about 2.2 bits of entropy over the other 255 tokens
NEXT_TOKEN_LOGIT = 7.0


def chain(start: int, length: int) -> dict[int, int]:
    """start -> start+1 -> ... -> start+length: no token repeats."""
    return {token: token + 1 for token in range(start, start + length)}


def cycle_after(start: int, lead: int, period: int) -> dict[int, int]:
    """`lead` distinct tokens, then a cycle of `period` tokens repeated forever."""
    tokens = list(range(start, start + lead + period))
    successor = {a: b for a, b in zip(tokens, tokens[1:])}
    successor[tokens[-1]] = tokens[lead]
    return successor


def build_successor_llama(successor: dict[int, int], nonfinite_token: int | None = None) -> LlamaForCausalLM:
    config = LlamaConfig(
        num_hidden_layers=3, hidden_size=HIDDEN, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = PAD
    tokens = sorted(set(successor) | set(successor.values()))
    assert len(tokens) <= HIDDEN, "one-hot embeddings need a dimension per token"
    dimension = {token: d for d, token in enumerate(tokens)}
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        head = model.lm_head.weight
        head.zero_()
        for token, d in dimension.items():
            embeddings[token] = 0.0
            embeddings[token, d] = 1.0
        scale = NEXT_TOKEN_LOGIT / HIDDEN**0.5  # the final RMSNorm scales a one-hot row by sqrt(HIDDEN)
        for token, following in successor.items():
            head[following, dimension[token]] = scale
        if nonfinite_token is not None:
            embeddings[nonfinite_token] = float("nan")
    return model
