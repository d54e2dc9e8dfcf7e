"""Models whose forward changes the output head's result (Gemma 2 softcaps it, Cohere and Granite
scale it): the logit signals describe the logits generate samples from, not the head's output."""

import numpy as np
import pytest
import torch
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
)

from tests.support.capture import capture, entropy_bits
from tests.conftest import VOCAB, prompt_ids

STEPS = 5
SHAPE = dict(
    num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, vocab_size=VOCAB, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
# each model's own knob, set far enough from 1 that the head's output and generate's logits disagree
HEADS = {
    "gemma2 softcap": (Gemma2ForCausalLM, Gemma2Config, dict(final_logit_softcapping=0.5)),
    "cohere logit_scale": (CohereForCausalLM, CohereConfig, dict(logit_scale=0.05)),
    "granite logits_scaling": (GraniteForCausalLM, GraniteConfig, dict(logits_scaling=40.0)),
}


def build(name):
    model_class, config_class, head = HEADS[name]
    torch.manual_seed(0)
    model = model_class(config_class(**SHAPE, **head)).eval()
    model.generation_config.pad_token_id = 0
    with torch.no_grad():  # random weights give near-uniform logits: make the head's output peaked
        model.get_output_embeddings().weight.mul_(50.0)
    return model


def head_output_entropy(model, ids) -> np.ndarray:
    """Entropy of the output head's newest row at each step, as a probe on the head would see it."""
    rows = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: rows.append(out[:, -1].detach()))
    try:
        model.generate(ids, max_new_tokens=STEPS, do_sample=False)
    finally:
        handle.remove()
    return np.stack([entropy_bits(row) for row in rows], axis=1)


@pytest.mark.parametrize("name", list(HEADS))
def test_entropy_is_the_entropy_of_the_logits_generate_samples_from(name):
    model = build(name)
    ids = prompt_ids(batch=2)
    reference = model.generate(
        ids, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    sampled_from = np.stack([entropy_bits(raw) for raw in reference.logits], axis=1)
    assert np.abs(head_output_entropy(model, ids) - sampled_from).max() > 0.5  # the head's output is not it
    output, summaries, _ = capture(model, ids, max_new_tokens=STEPS, do_sample=False)
    assert torch.equal(output, reference.sequences)
    np.testing.assert_allclose(summaries.logit("entropy"), sampled_from, atol=1e-4)
