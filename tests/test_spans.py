"""The generate span: name, kind, semconv attributes with exact values and types, errors,
context propagation, pipelines and content capture (real tiny models, real SDK)."""

from __future__ import annotations

import pytest
import torch
import transformers
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from tests.conftest import build_gpt2, build_llama, prompt_ids
from tests.support.spans import messages, span_strings
from tests.support.tokenizers import tiny_tokenizer

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
MODEL = "gen_ai.request.model"
MAX_TOKENS = "gen_ai.request.max_tokens"
TEMPERATURE = "gen_ai.request.temperature"
TOP_P = "gen_ai.request.top_p"
TOP_K = "gen_ai.request.top_k"
CHOICE_COUNT = "gen_ai.request.choice.count"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
SAMPLING_KEYS = (TEMPERATURE, TOP_P, TOP_K)
PAD, EOS = 0, 2  # the tiny decoder-only models' pad and eos ids (conftest)


# -- helpers ---------------------------------------------------------------------------


def expected_counts(generated: torch.Tensor, eos: set[int]) -> list[int]:
    """Generated tokens per row up to and including the first EOS (what follows is padding)."""
    counts = []
    for row in generated.tolist():
        hits = [i for i, token in enumerate(row) if token in eos]
        counts.append(hits[0] + 1 if hits else len(row))
    return counts


def left_padded_batch(seed=1, length=6, pads=2):
    """Two rows; row 1 has `pads` padding positions on the left (mask 0 there)."""
    ids = prompt_ids(batch=2, length=length, seed=seed)
    mask = torch.ones_like(ids)
    ids[1, :pads] = PAD
    mask[1, :pads] = 0
    return ids, mask


def span_values(span) -> list:
    values = list(span.attributes.values())
    for event in span.events:
        values.extend((event.attributes or {}).values())
    return values


class RecordCurrentSpan(LogitsProcessor):
    def __init__(self):
        self.contexts = []

    def __call__(self, input_ids, scores):
        self.contexts.append(trace.get_current_span().get_span_context())
        return scores


class Failures:
    class GenerationInterrupted(RuntimeError):
        """Nested so that its __qualname__ differs from its __name__."""


class RaiseAtStep(StoppingCriteria):
    def __init__(self, exc: BaseException):
        self.exc = exc

    def __call__(self, input_ids, scores, **kwargs):
        raise self.exc


# -- name, kind and request attributes ---------------------------------------------------


def test_span_name_kind_and_base_attributes(models, telemetry, instrument):
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=3)
    span = telemetry.only_span()
    assert span.name == "text_completion GPT2LMHeadModel"
    assert span.kind is SpanKind.INTERNAL
    attributes = span.attributes
    assert attributes[OPERATION] == "text_completion"
    assert attributes[PROVIDER] == "huggingface"
    assert attributes[MODEL] == "GPT2LMHeadModel"
    assert attributes[MAX_TOKENS] == 3 and type(attributes[MAX_TOKENS]) is int
    assert attributes[INPUT_TOKENS] == 6 and type(attributes[INPUT_TOKENS]) is int
    assert attributes[OUTPUT_TOKENS] == 3 and type(attributes[OUTPUT_TOKENS]) is int
    assert attributes[FINISH_REASONS] == ("length",)
    assert isinstance(attributes[FINISH_REASONS], tuple)
    assert all(type(reason) is str for reason in attributes[FINISH_REASONS])
    assert span.status.status_code is not StatusCode.ERROR
    assert ERROR_TYPE not in attributes
    for key in (*SAMPLING_KEYS, CHOICE_COUNT):
        assert key not in attributes, key


def test_span_name_uses_name_or_path(telemetry, instrument):
    model = build_gpt2()
    model.name_or_path = "acme/tiny-gpt2"
    instrument()
    model.generate(prompt_ids(), max_new_tokens=1)
    span = telemetry.only_span()
    assert span.name == "text_completion acme/tiny-gpt2"
    assert span.attributes[MODEL] == "acme/tiny-gpt2"


def test_span_name_falls_back_to_config_name_or_path(telemetry, instrument):
    model = build_llama()
    assert not model.name_or_path
    model.config._name_or_path = "acme/tiny-llama"
    instrument()
    model.generate(prompt_ids(), max_new_tokens=1)
    span = telemetry.only_span()
    assert span.name == "text_completion acme/tiny-llama"
    assert span.attributes[MODEL] == "acme/tiny-llama"


def test_max_tokens_from_generation_config_and_kwarg_precedence(telemetry, instrument):
    model = build_gpt2()
    model.generation_config.max_new_tokens = 2
    instrument()
    model.generate(prompt_ids(), max_new_tokens=4)  # explicit kwarg wins
    model.generate(prompt_ids())  # from model.generation_config
    explicit, configured = telemetry.finished()
    assert explicit.attributes[MAX_TOKENS] == 4
    assert explicit.attributes[OUTPUT_TOKENS] == 4
    assert configured.attributes[MAX_TOKENS] == 2
    assert configured.attributes[OUTPUT_TOKENS] == 2
    assert configured.attributes[FINISH_REASONS] == ("length",)


def test_max_tokens_from_generation_config_max_length(telemetry, instrument):
    """For a decoder-only model max_length counts the prompt: 9 - 6 prompt tokens = 3 new."""
    model = build_gpt2()
    model.generation_config.max_length = 9
    instrument()
    output = model.generate(prompt_ids(length=6))
    assert output.shape[-1] == 9
    attributes = telemetry.only_span().attributes
    assert attributes[MAX_TOKENS] == 3
    assert attributes[OUTPUT_TOKENS] == 3
    assert attributes[FINISH_REASONS] == ("length",)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_default_length_limit_is_reported_as_length(models, telemetry, instrument):
    model = models["gpt2"]
    ids = prompt_ids()
    instrument()
    output = model.generate(ids)  # transformers' default limit: 20 new tokens
    generated = output[:, ids.shape[-1]:]
    assert EOS not in generated.tolist()[0]
    attributes = telemetry.only_span().attributes
    assert attributes[OUTPUT_TOKENS] == generated.shape[-1]
    assert attributes[FINISH_REASONS] == ("length",)


def test_greedy_call_has_no_sampling_attributes_even_if_config_sets_them(telemetry, instrument):
    model = build_gpt2()
    model.generation_config.temperature = 0.6
    model.generation_config.top_k = 7
    model.generation_config.top_p = 0.8
    instrument()
    model.generate(prompt_ids(), max_new_tokens=2, do_sample=False)
    attributes = telemetry.only_span().attributes
    for key in SAMPLING_KEYS:
        assert key not in attributes, key


def test_sampling_attributes_from_kwargs_with_types(models, telemetry, instrument):
    instrument()
    torch.manual_seed(0)
    models["gpt2"].generate(prompt_ids(), max_new_tokens=2, do_sample=True, temperature=0.7, top_p=0.9, top_k=20)
    attributes = telemetry.only_span().attributes
    assert attributes[TEMPERATURE] == pytest.approx(0.7) and type(attributes[TEMPERATURE]) is float
    assert attributes[TOP_P] == pytest.approx(0.9) and type(attributes[TOP_P]) is float
    assert attributes[TOP_K] == 20 and type(attributes[TOP_K]) is int
    assert CHOICE_COUNT not in attributes


def test_sampling_attributes_from_generation_config(telemetry, instrument):
    model = build_gpt2()
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.top_k = 7
    model.generation_config.top_p = 0.8
    instrument()
    torch.manual_seed(0)
    model.generate(prompt_ids(), max_new_tokens=2)
    attributes = telemetry.only_span().attributes
    assert attributes[TEMPERATURE] == pytest.approx(0.6)
    assert attributes[TOP_P] == pytest.approx(0.8)
    assert attributes[TOP_K] == 7


def test_integer_temperature_is_recorded_as_double(models, telemetry, instrument):
    instrument()
    torch.manual_seed(0)
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1, do_sample=True, temperature=1, top_p=1, top_k=5)
    attributes = telemetry.only_span().attributes
    assert type(attributes[TEMPERATURE]) is float
    assert type(attributes[TOP_P]) is float


# -- usage and finish reasons -------------------------------------------------------------


def _forced_eos_case(model):
    """A left-padded batch and a token that row 0 first produces at step 3 (index 2) and row 1
    never produces, found on an uninstrumented greedy run. Used as eos_token_id it makes row 0
    stop after 3 tokens while row 1 runs to the limit."""
    for seed in range(1, 30):
        ids, mask = left_padded_batch(seed=seed)
        reference = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
        row0, row1 = reference[:, ids.shape[-1]:].tolist()
        if len(row0) != 5 or EOS in row0 + row1:
            continue
        eos = row0[2]
        if eos not in row0[:2] and eos not in row1 and eos != PAD:
            return ids, mask, eos
    pytest.fail("no seed gave a usable forced-EOS case")


@pytest.fixture(scope="module")
def forced_eos(models):
    """(model, ids, mask, eos) from one uninstrumented reference run, shared by the tests below."""
    model = models["qwen2"]
    return (model, *_forced_eos_case(model))


def test_left_padded_batch_usage_and_forced_eos(forced_eos, telemetry, instrument):
    model, ids, mask, eos = forced_eos
    instrument()
    output = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, eos_token_id=eos)
    generated = output[:, ids.shape[-1]:]
    assert generated[0, 2].item() == eos
    assert generated.shape[-1] == 5
    attributes = telemetry.only_span().attributes
    assert attributes[INPUT_TOKENS] == int(mask.sum()) == 10  # not the padded 12
    assert attributes[OUTPUT_TOKENS] == 3 + 5  # row 0's post-EOS padding is not counted
    assert attributes[FINISH_REASONS] == ("stop", "length")


def test_input_tokens_exclude_padding_without_attention_mask(models, telemetry, instrument):
    ids, mask = left_padded_batch()
    instrument()
    models["gpt2"].generate(ids, max_new_tokens=1)  # transformers infers the mask from pad_token_id
    assert telemetry.only_span().attributes[INPUT_TOKENS] == int(mask.sum())


def test_sampling_with_num_return_sequences(models, telemetry, instrument):
    model = models["gpt2"]
    ids = prompt_ids()
    instrument()
    torch.manual_seed(0)
    output = model.generate(ids, max_new_tokens=3, do_sample=True, num_return_sequences=3, top_k=50)
    assert output.shape[0] == 3
    attributes = telemetry.only_span().attributes
    assert attributes[CHOICE_COUNT] == 3 and type(attributes[CHOICE_COUNT]) is int
    assert attributes[INPUT_TOKENS] == 6  # the prompt, counted once
    counts = expected_counts(output[:, ids.shape[-1]:], {EOS})
    assert attributes[OUTPUT_TOKENS] == sum(counts)
    assert len(attributes[FINISH_REASONS]) == 3
    assert set(attributes[FINISH_REASONS]) <= {"stop", "length"}


def test_beam_search_returns_two_of_three_beams(models, telemetry, instrument):
    model = models["llama"]
    ids = prompt_ids()
    instrument()
    output = model.generate(ids, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
    assert output.shape[0] == 2
    attributes = telemetry.only_span().attributes
    assert attributes[CHOICE_COUNT] == 2
    assert attributes[INPUT_TOKENS] == 6
    generated = output[:, ids.shape[-1]:]
    counts = expected_counts(generated, {EOS})
    assert attributes[OUTPUT_TOKENS] == sum(counts)
    reasons = tuple("stop" if EOS in row[:count] else "length" for row, count in zip(generated.tolist(), counts))
    assert attributes[FINISH_REASONS] == reasons
    for key in SAMPLING_KEYS:
        assert key not in attributes


def test_t5_counts_exclude_decoder_start_token(models, telemetry, instrument):
    model = models["t5"]
    ids = prompt_ids(length=7)
    instrument()
    output = model.generate(ids, max_new_tokens=4)
    assert output.shape[-1] == 5  # decoder start token + 4 new tokens
    assert 1 not in output[0, 1:].tolist()  # T5's eos (1) not produced: the limit ended it
    span = telemetry.only_span()
    assert span.name == "text_completion T5ForConditionalGeneration"
    assert span.attributes[INPUT_TOKENS] == 7
    assert span.attributes[OUTPUT_TOKENS] == 4
    assert span.attributes[MAX_TOKENS] == 4
    assert span.attributes[FINISH_REASONS] == ("length",)


def test_t5_max_length_counts_decoder_start_token(models, telemetry, instrument):
    model = models["t5"]
    instrument()
    output = model.generate(prompt_ids(), max_length=4)
    assert output.shape[-1] == 4 and 1 not in output[0, 1:].tolist()
    attributes = telemetry.only_span().attributes
    assert attributes[OUTPUT_TOKENS] == 3
    assert attributes[FINISH_REASONS] == ("length",)
    assert attributes[MAX_TOKENS] == 3


def test_return_dict_output_is_counted(models, telemetry, instrument):
    instrument()
    output = models["gpt2"].generate(prompt_ids(), max_new_tokens=2, return_dict_in_generate=True, output_scores=True)
    assert isinstance(output, transformers.generation.utils.GenerateDecoderOnlyOutput)
    assert len(output.scores) == 2
    assert telemetry.only_span().attributes[OUTPUT_TOKENS] == 2


# -- errors ----------------------------------------------------------------------------


def test_generate_error_propagates_unchanged(models, telemetry, instrument):
    model = models["gpt2"]
    with pytest.raises(ValueError) as reference:
        model.generate(prompt_ids(), max_new_tokens=-1)
    instrument()
    with pytest.raises(ValueError) as raised:
        model.generate(prompt_ids(), max_new_tokens=-1)
    assert type(raised.value) is type(reference.value)
    assert str(raised.value) == str(reference.value)
    span = telemetry.only_span()
    assert span.attributes[ERROR_TYPE] == "ValueError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.end_time is not None
    assert OUTPUT_TOKENS not in span.attributes
    assert trace.get_current_span() is trace.INVALID_SPAN  # context restored


def test_exception_object_is_reraised_and_typed_by_qualname(telemetry, instrument):
    model = build_gpt2()
    probes_before = [(m._forward_hooks.copy(), m._forward_pre_hooks.copy(), m.__dict__.get("forward")) for m in model.modules()]
    boom = Failures.GenerationInterrupted("stopped by the caller")
    instrument()
    with pytest.raises(Failures.GenerationInterrupted) as raised:
        model.generate(
            prompt_ids(), max_new_tokens=3, stopping_criteria=StoppingCriteriaList([RaiseAtStep(boom)])
        )
    assert raised.value is boom
    span = telemetry.only_span()
    assert span.attributes[ERROR_TYPE] == "Failures.GenerationInterrupted"
    assert span.status.status_code is StatusCode.ERROR
    # no probe survives the failed call
    assert [(m._forward_hooks, m._forward_pre_hooks, m.__dict__.get("forward")) for m in model.modules()] == probes_before


# -- context propagation ------------------------------------------------------------------


def test_span_is_current_during_generate(models, telemetry, instrument):
    recorder = RecordCurrentSpan()
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=3, logits_processor=LogitsProcessorList([recorder]))
    span = telemetry.only_span()
    assert len(recorder.contexts) == 3
    for context in recorder.contexts:
        assert context.is_valid
        assert context.trace_id == span.context.trace_id
        assert context.span_id == span.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_span_is_child_of_callers_span(models, telemetry, instrument):
    instrument()
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handle request") as parent:
        models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
        assert trace.get_current_span() is parent
    generate_span, parent_span = telemetry.finished()
    assert generate_span.name.startswith("text_completion")
    assert generate_span.parent is not None
    assert generate_span.parent.span_id == parent_span.context.span_id
    assert generate_span.context.trace_id == parent_span.context.trace_id


# -- pipeline -----------------------------------------------------------------------------


def test_pipeline_gives_one_span_per_generate(telemetry, instrument):
    model = build_gpt2()
    tokenizer = tiny_tokenizer()
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompts = ["zq11 zq12 zq13 zq14", "zq21 zq22"]
    reference = pipe(prompts, max_new_tokens=3, do_sample=False)
    instrument()
    result = pipe(prompts, max_new_tokens=3, do_sample=False)
    assert result == reference
    spans = telemetry.finished()
    assert len(spans) == len(prompts)  # batch_size 1: one generate per prompt
    for span, prompt in zip(spans, prompts):
        assert span.name == "text_completion GPT2LMHeadModel"
        assert span.attributes[INPUT_TOKENS] == len(prompt.split())
        assert span.attributes[OUTPUT_TOKENS] == 3
        assert span.attributes[MAX_TOKENS] == 3


# -- content capture ---------------------------------------------------------------------


@pytest.mark.parametrize("capture_mode", ["summary", "full", "on_risk"])
def test_no_content_by_default(models, telemetry, instrument, monkeypatch, capture_mode):
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    tokenizer = tiny_tokenizer()
    ids = prompt_ids()
    instrument(capture_mode=capture_mode)
    models["gpt2"].generate(ids, max_new_tokens=3, tokenizer=tokenizer)
    span = telemetry.only_span()
    assert INPUT_MESSAGES not in span.attributes
    assert OUTPUT_MESSAGES not in span.attributes
    leaked = [text for text in span_strings(span) if "zq" in text]
    assert not leaked, leaked
    prompt = tuple(ids[0].tolist())
    assert all(not (isinstance(value, tuple) and value == prompt) for value in span_values(span))


def test_content_capture_kwarg_with_tokenizer_gives_text(models, telemetry, instrument, monkeypatch):
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    tokenizer = tiny_tokenizer()
    ids = prompt_ids()
    instrument(capture_message_content=True)
    output = models["gpt2"].generate(ids, max_new_tokens=3, tokenizer=tokenizer)
    attributes = telemetry.only_span().attributes
    prompt_text = " ".join(f"zq{i}" for i in ids[0].tolist())
    completion_text = tokenizer.decode(output[0, ids.shape[-1]:], skip_special_tokens=True)
    assert completion_text.startswith("zq")
    assert isinstance(attributes[INPUT_MESSAGES], str)  # a JSON string: see telemetry/content.on_span
    assert messages(attributes[INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": prompt_text}]}
    ]
    assert messages(attributes[OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": completion_text}], "finish_reason": "length"}
    ]
    # what Phoenix shows in its Input / Output columns
    assert attributes["input.value"] == prompt_text and attributes["input.mime_type"] == "text/plain"
    assert attributes["output.value"] == completion_text and attributes["output.mime_type"] == "text/plain"


def test_content_capture_env_without_tokenizer_gives_token_ids(forced_eos, telemetry, instrument, monkeypatch):
    """A batch of two independent prompts: the span holds the first conversation, each
    corevital.sequence event its own sequence's messages (never one merged conversation)."""
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    model, ids, mask, eos = forced_eos
    instrument()
    output = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, eos_token_id=eos)
    span = telemetry.only_span()
    generated = output[:, ids.shape[-1]:].tolist()
    prompts = [ids[0].tolist(), ids[1, 2:].tolist()]  # no padding
    outputs = [generated[0][:3], generated[1]]
    assert messages(span.attributes[INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "token_ids", "content": prompts[0]}]}
    ]
    assert messages(span.attributes[OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "token_ids", "content": outputs[0]}], "finish_reason": "stop"}
    ]
    sequences = [event.attributes for event in span.events if event.name == "corevital.sequence"]
    assert [messages(e[INPUT_MESSAGES])[0]["parts"][0]["content"] for e in sequences] == prompts
    assert [messages(e[OUTPUT_MESSAGES])[0]["parts"][0]["content"] for e in sequences] == outputs
    assert [messages(e[OUTPUT_MESSAGES])[0]["finish_reason"] for e in sequences] == ["stop", "length"]


def test_content_capture_kwarg_false_overrides_env(models, telemetry, instrument, monkeypatch):
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    instrument(capture_message_content=False)
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1, tokenizer=tiny_tokenizer())
    attributes = telemetry.only_span().attributes
    assert INPUT_MESSAGES not in attributes and OUTPUT_MESSAGES not in attributes


def test_span_instrumentation_scope(models, telemetry, instrument):
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    span = telemetry.only_span()
    assert span.instrumentation_scope.name == "opentelemetry_instrumentation_corevital"
