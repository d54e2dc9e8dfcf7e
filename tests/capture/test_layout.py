"""Layer discovery across architectures, and the reason given when attention cannot be seen."""

import torch
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb

from opentelemetry_instrumentation_corevital.capture.layout import find_layout
from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from tests.conftest import build_llama, prompt_ids
from tests.families.zoo import models


class OwnSdpaAttention(LlamaAttention):
    """Attention that calls SDPA itself instead of through transformers' attention registry, as
    some architectures do (Falcon did until transformers 5.25) and as a user's own module may."""

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query, key, value = (proj(hidden_states).view(shape).transpose(1, 2)
                             for proj in (self.q_proj, self.k_proj, self.v_proj))
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        output = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=self.scaling,
            is_causal=attention_mask is None and query.shape[2] > 1, enable_gqa=True,
        )
        return self.o_proj(output.transpose(1, 2).flatten(2)), None


def test_a_hybrid_stack_of_several_layer_classes_is_found_whole():
    model = models("jamba")[0]
    layout = find_layout(model)
    assert layout.decoder_layers == list(model.model.layers)
    assert {index for index, _ in layout.attention_modules.values()} == {1}  # only layer 1 attends


def test_attention_run_outside_the_registry_is_named_with_the_fix(telemetry, instrument):
    model, ids = build_llama(), prompt_ids()
    assert find_layout(model).unregistered_attention == ""  # Llama goes through the registry
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=4, do_sample=False)
        for layer in model.model.layers:
            layer.self_attn.__class__ = OwnSdpaAttention
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected)
        instrument()
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected)
    reason = telemetry.only_span().attributes[attrs.ATTENTION_UNAVAILABLE_REASON]
    assert reason.startswith("OwnSdpaAttention runs its 'sdpa' attention itself") and "attn_implementation='eager'" in reason
