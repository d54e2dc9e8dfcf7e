"""Inputs that are not token ids: embeddings and audio features are counted and captured."""

import math

import pytest
import torch
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from tests.families.zoo import PROMPT_LENGTH, STEPS, family, inputs, models


def _token_usage(telemetry) -> dict[str, int]:
    points = telemetry.metric_points("gen_ai.client.token.usage")
    return {p.attributes[gen_ai.GEN_AI_TOKEN_TYPE]: int(p.sum) for p in points}


def test_inputs_embeds_without_a_mask_count_their_positions_and_get_health(telemetry, instrument):
    model = models("llama")[0]
    embeds = model.get_input_embeddings()(inputs(family("llama"))["input_ids"]).detach()
    instrument()
    with torch.no_grad():
        output = model.generate(inputs_embeds=embeds, max_new_tokens=STEPS, do_sample=False)
    a = telemetry.only_span().attributes
    assert attrs.ERROR not in a
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_LENGTH
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == output.shape[1]  # only new tokens are returned
    assert _token_usage(telemetry) == {"input": PROMPT_LENGTH, "output": output.shape[1]}
    steps = [e for e in telemetry.only_span().events if e.name == attrs.STEP_EVENT]
    assert len(steps) == output.shape[1]


def test_left_padded_inputs_embeds_count_real_tokens(telemetry, instrument):
    model = models("llama")[0]
    ids = torch.cat([inputs(family("llama"))["input_ids"]] * 2)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    embeds = model.get_input_embeddings()(ids).detach()
    instrument()
    with torch.no_grad():
        model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=STEPS, do_sample=False)
    a = telemetry.only_span().attributes
    assert attrs.ERROR not in a
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 2 * PROMPT_LENGTH - 2


def test_whisper_audio_features_are_not_counted_as_tokens(telemetry, instrument):
    model = models("whisper")[0]
    instrument()
    with torch.no_grad():
        output = model.generate(inputs(family("whisper"))["input_features"], max_new_tokens=STEPS)
    a = telemetry.only_span().attributes
    assert attrs.ERROR not in a
    assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in a
    assert _token_usage(telemetry) == {"output": a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]}
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == output.shape[1]  # Whisper returns the new tokens only
    assert any(e.name == attrs.STEP_EVENT for e in telemetry.only_span().events)


def test_inputs_embeds_next_to_input_ids_describe_the_new_tokens(telemetry, instrument):
    """generate returns the ids followed by the new tokens; the steps must be the new tokens."""
    model = models("llama")[0]
    given = inputs(family("llama"))
    embeds = model.get_input_embeddings()(given["input_ids"]).detach()
    kwargs = dict(inputs_embeds=embeds, attention_mask=given["attention_mask"], max_new_tokens=STEPS, do_sample=False)
    with torch.no_grad():
        reference = model.generate(given["input_ids"], output_logits=True, return_dict_in_generate=True, **kwargs)
        instrument(capture_message_content=True)  # token ids go on step events only with content capture
        output = model.generate(given["input_ids"], **kwargs)
    assert torch.equal(output, reference.sequences)
    span = telemetry.only_span()
    assert attrs.ERROR not in span.attributes
    steps = [e.attributes for e in span.events if e.name == attrs.STEP_EVENT]
    assert [s[attrs.STEP_TOKEN_ID] for s in steps] == output[0, PROMPT_LENGTH:].tolist()
    for step, logits in zip(steps, reference.logits):
        log_probs = torch.log_softmax(logits[0].double(), -1)
        entropy = float(-(log_probs.exp() * log_probs).sum() / math.log(2))
        assert step[attrs.STEP_ENTROPY] == pytest.approx(entropy, abs=1e-4)


@pytest.mark.parametrize(
    "expansion",
    [dict(num_beams=2, do_sample=False), dict(num_return_sequences=2, do_sample=True)],
    ids=["beams", "returned sequences"],
)
def test_inputs_embeds_next_to_input_ids_with_rows_expanded_by_generate(telemetry, instrument, expansion):
    """generate repeats each input's row for its beams or returned sequences; each returned
    sequence still starts with its input ids, and its steps are its new tokens."""
    model = models("llama")[0]
    given = inputs(family("llama"))
    ids = torch.cat([given["input_ids"], given["input_ids"].flip(1)])
    embeds = model.get_input_embeddings()(ids).detach()
    kwargs = dict(inputs_embeds=embeds, max_new_tokens=STEPS, min_new_tokens=STEPS, **expansion)
    instrument(capture_message_content=True)
    with torch.no_grad():
        torch.manual_seed(0)
        output = model.generate(ids, **kwargs)
    span = telemetry.only_span()
    assert attrs.ERROR not in span.attributes
    assert span.attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == output.shape[0] * STEPS
    steps = [e.attributes for e in span.events if e.name == attrs.STEP_EVENT]
    described = {s[attrs.STEP_SEQUENCE] for s in steps}
    assert described
    for sequence in described:
        tokens = [s[attrs.STEP_TOKEN_ID] for s in steps if s[attrs.STEP_SEQUENCE] == sequence]
        assert tokens == output[sequence, PROMPT_LENGTH:].tolist()
