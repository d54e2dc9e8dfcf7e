"""Models whose layers or attention do not look like Llama's: CoreVital either captures them
right or says on the span what it could not capture, and never reports numbers it misread.
(Found by running transformers' own generation tests with the instrumentation on.)"""

import torch
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from transformers import ReformerConfig, ReformerModelWithLMHead, XLNetConfig, XLNetLMHeadModel

from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs


def _reformer(attention: str):
    torch.manual_seed(0)
    config = ReformerConfig(
        vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, attention_head_size=16,
        feed_forward_size=32, is_decoder=True, axial_pos_shape=[4, 8], axial_pos_embds_dim=[16, 16],
        attn_layers=[attention, attention], num_buckets=2, lsh_attn_chunk_length=4, local_attn_chunk_length=4,
        lsh_num_chunks_before=1, lsh_num_chunks_after=0, pad_token_id=0, eos_token_id=2, max_position_embeddings=512,
    )
    return ReformerModelWithLMHead(config).eval()


def test_an_attention_module_returning_no_per_head_weights_leaves_attention_out_and_the_rest_captured(
    telemetry, instrument
):
    model = _reformer("local")  # its local attention returns chunked 5-D probabilities, or none
    ids = torch.randint(3, 32, (2, 10), generator=torch.Generator().manual_seed(1))
    instrument()
    with torch.no_grad():
        model.generate(ids, do_sample=False, max_new_tokens=3, output_attentions=True, return_dict_in_generate=True)
    a = telemetry.only_span().attributes
    assert attrs.ERROR not in a
    assert attrs.RISK_SCORE in a
    assert "[batch, heads, query, key]" in a[attrs.ATTENTION_UNAVAILABLE_REASON]


def test_a_mask_wider_than_the_ids_does_not_count_as_the_prompt(telemetry, instrument):
    """generate lets Reformer take a mask wider than the ids; the prompt is still the ids."""
    model = _reformer("lsh")
    ids = torch.randint(3, 32, (2, 10), generator=torch.Generator().manual_seed(1))
    instrument()
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones((2, 32), dtype=torch.long), do_sample=False, max_new_tokens=3)
    a = telemetry.only_span().attributes
    assert attrs.ERROR not in a
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 20
    assert attrs.RISK_SCORE in a


def test_position_first_layer_outputs_are_reported_as_a_fault_not_misread(telemetry, instrument):
    """XLNet's layers return [positions, batch, hidden]; reading them as batch-first gives numbers for
    the wrong axis, so the span says the capture could not read them."""
    torch.manual_seed(0)
    model = XLNetLMHeadModel(XLNetConfig(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=64,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=5)).eval()
    ids = torch.randint(6, 99, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model.generate(ids, max_new_tokens=3, do_sample=False)
        instrument()
        output = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert torch.equal(output, reference)
    error = telemetry.only_span().attributes[attrs.ERROR]
    assert error.startswith("hidden:") and "not [batch, positions, hidden]" in error
