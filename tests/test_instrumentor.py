"""CoreVitalInstrumentor lifecycle and configuration: wrapping and unwrapping generate,
suppression, idempotence, settings validation, capture_mode="off" (real tiny models, real SDK)."""

from __future__ import annotations

import logging

import pytest
import torch
from opentelemetry.instrumentation.utils import suppress_instrumentation
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.utils import GenerationMixin
from transformers.modeling_utils import AttentionInterface

from tests.conftest import build_gpt2, prompt_ids

CAPTURE_MODE_ENV = "OTEL_INSTRUMENTATION_COREVITAL_CAPTURE_MODE"
CAPTURE_MODE = "corevital.capture.mode"
CAPTURE_MODES = ("off", "summary", "full", "on_risk")
DURATION = "gen_ai.client.operation.duration"


def original_generate():
    return GenerationMixin.__dict__["generate"]


def attention_functions() -> dict:
    return dict(AttentionInterface._global_mapping)


def forward_hooks(model) -> dict[str, tuple]:
    """Every module's forward hooks and `forward` of its own (a layer probe), by module name
    (only modules that have any)."""
    return {
        name: (tuple(module._forward_hooks), module.__dict__.get("forward"))
        for name, module in model.named_modules()
        if module._forward_hooks or "forward" in module.__dict__
    }


def all_hooks(model) -> dict[str, tuple]:
    """Forward and forward-pre hooks and `forward` of its own by module name. transformers itself
    may keep hooks of its own on a model (output capturing), so tests compare against a
    snapshot, not against {}."""
    return {
        name: (tuple(module._forward_hooks), tuple(module._forward_pre_hooks), module.__dict__.get("forward"))
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__
    }


class RecordForwardHooks(StoppingCriteria):
    """A caller's stopping criterion that looks at the model's forward hooks at every step."""

    def __init__(self, model):
        self.model = model
        self.seen: list[dict[str, tuple]] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.seen.append(forward_hooks(self.model))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


# -- wrapping and unwrapping ---------------------------------------------------------------


def test_uninstrument_restores_generate_exactly(models, telemetry, instrument):
    original = original_generate()
    originals = attention_functions()
    instrumentor = instrument()
    assert GenerationMixin.__dict__["generate"] is not original
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    assert len(telemetry.finished()) == 1
    instrumentor.uninstrument()
    assert GenerationMixin.__dict__["generate"] is original
    assert GenerationMixin.generate is original
    after = attention_functions()
    assert after.keys() == originals.keys()
    for name, function in originals.items():
        assert after[name] is function, name
    probed = [name for name, function in after.items() if hasattr(function, "__corevital_original__")]
    assert probed == []  # whatever state the registry was in, no CoreVital probe is left
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    assert len(telemetry.finished()) == 1  # no span after uninstrument
    assert sum(p.count for p in telemetry.metric_points(DURATION)) == 1


def test_uninstrument_restores_pipeline_forward_exactly(telemetry, instrument):
    """instrument() wraps Pipeline.forward (to find a pipeline's tokenizer); uninstrument() undoes it,
    and instrumenting again wraps it once, not twice."""
    from transformers.pipelines.base import Pipeline

    original = Pipeline.__dict__["forward"]
    instrumentor = instrument()
    wrapped = Pipeline.__dict__["forward"]
    assert wrapped is not original and wrapped.__wrapped__ is original
    instrumentor.uninstrument()
    assert Pipeline.__dict__["forward"] is original
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    assert Pipeline.__dict__["forward"].__wrapped__ is original


def test_instrument_twice_gives_one_span_per_call(models, telemetry, instrument):
    original = original_generate()
    instrumentor = instrument()
    assert instrument() is instrumentor
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    assert len(telemetry.finished()) == 2
    assert sum(p.count for p in telemetry.metric_points(DURATION)) == 2
    instrumentor.uninstrument()
    assert GenerationMixin.__dict__["generate"] is original


def test_reinstrument_after_uninstrument(models, telemetry, instrument):
    original = original_generate()
    instrumentor = instrument()
    instrumentor.uninstrument()
    instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    assert len(telemetry.finished()) == 1
    instrumentor.uninstrument()
    assert GenerationMixin.__dict__["generate"] is original


def test_suppress_instrumentation(models, telemetry, instrument):
    model = models["gpt2"]
    ids = prompt_ids()
    reference = model.generate(ids, max_new_tokens=3)
    hooks_before = all_hooks(model)
    instrument()
    with suppress_instrumentation():
        output = model.generate(ids, max_new_tokens=3)
    assert torch.equal(output, reference)
    assert telemetry.finished() == []
    assert telemetry.metric_points(DURATION) == []
    assert all_hooks(model) == hooks_before
    model.generate(ids, max_new_tokens=1)  # suppression ended with the block
    assert len(telemetry.finished()) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=4, do_sample=False),
        dict(max_new_tokens=4, do_sample=True, top_k=20, num_return_sequences=2),
        dict(max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False),
    ],
    ids=["greedy", "seeded-sampling", "beam"],
)
def test_output_is_unchanged(models, telemetry, instrument, kwargs):
    model = models["llama"]
    ids = prompt_ids(batch=2)
    torch.manual_seed(5)
    reference = model.generate(ids, **kwargs)
    instrument()
    torch.manual_seed(5)
    output = model.generate(ids, **kwargs)
    assert type(output) is type(reference)
    assert torch.equal(output, reference)
    assert len(telemetry.finished()) == 1


# -- settings -------------------------------------------------------------------------------


def test_unknown_setting_is_refused(telemetry, instrument):
    original = original_generate()
    with pytest.raises(ValueError) as raised:
        instrument(unknown_setting=1)
    message = str(raised.value)
    assert "unknown_setting" in message
    for allowed in ("capture_mode", "risk_threshold", "max_step_events", "payload_max_bytes",
                    "capture_message_content"):
        assert allowed in message, allowed
    assert GenerationMixin.__dict__["generate"] is original  # nothing half-installed


@pytest.mark.parametrize("value", ["bogus", "", "summaries"])
def test_bad_capture_mode_is_refused(telemetry, instrument, value):
    original = original_generate()
    originals = attention_functions()
    with pytest.raises(ValueError) as raised:
        instrument(capture_mode=value)
    message = str(raised.value)
    assert "capture_mode" in message
    for mode in CAPTURE_MODES:
        assert mode in message, mode
    assert GenerationMixin.__dict__["generate"] is original
    assert all(attention_functions()[name] is fn for name, fn in originals.items())


def test_bool_capture_mode_is_refused(telemetry, instrument):
    with pytest.raises(ValueError, match="capture_mode"):
        instrument(capture_mode=True)


@pytest.mark.parametrize("mode", CAPTURE_MODES)
def test_capture_mode_kwarg_is_on_the_span(models, telemetry, instrument, mode):
    instrument(capture_mode=mode.upper())
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    assert telemetry.only_span().attributes[CAPTURE_MODE] == mode


def test_invalid_env_value_is_logged_and_default_kept(models, telemetry, instrument, monkeypatch, caplog):
    monkeypatch.setenv(CAPTURE_MODE_ENV, "bogus")
    with caplog.at_level(logging.WARNING):
        instrument()
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    relevant = [message for message in messages if CAPTURE_MODE_ENV in message]
    assert relevant, messages
    assert "bogus" in relevant[0]
    for mode in CAPTURE_MODES:
        assert mode in relevant[0]
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)  # the host app keeps running
    assert telemetry.only_span().attributes[CAPTURE_MODE] == "summary"


def test_env_capture_mode_applies_and_kwarg_wins(models, telemetry, instrument, monkeypatch):
    monkeypatch.setenv(CAPTURE_MODE_ENV, "off")
    instrumentor = instrument()
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    instrumentor.uninstrument()
    instrument(capture_mode="full")
    models["gpt2"].generate(prompt_ids(), max_new_tokens=1)
    env_span, kwarg_span = telemetry.finished()
    assert env_span.attributes[CAPTURE_MODE] == "off"
    assert kwarg_span.attributes[CAPTURE_MODE] == "full"


# -- capture_mode="off" and probe lifetime ---------------------------------------------------


def test_capture_off_registers_no_forward_hooks(telemetry, instrument):
    model = build_gpt2()
    originals = attention_functions()
    hooks_before = all_hooks(model)
    forward_before = forward_hooks(model)
    recorder = RecordForwardHooks(model)
    instrument(capture_mode="off")
    model.generate(prompt_ids(), max_new_tokens=3, stopping_criteria=StoppingCriteriaList([recorder]))
    assert len(recorder.seen) == 3
    assert recorder.seen == [forward_before] * 3
    assert all(attention_functions()[name] is fn for name, fn in originals.items())  # no attention probe
    span = telemetry.only_span()
    assert span.attributes[CAPTURE_MODE] == "off"
    assert span.attributes["gen_ai.usage.output_tokens"] == 3
    assert sum(p.count for p in telemetry.metric_points(DURATION)) == 1
    assert all_hooks(model) == hooks_before


def test_summary_probes_live_only_during_the_call(telemetry, instrument):
    """Control for the test above: the same check does see the probes in summary mode."""
    model = build_gpt2()
    hooks_before = all_hooks(model)
    forward_before = forward_hooks(model)
    recorder = RecordForwardHooks(model)
    instrument(capture_mode="summary")
    assert all_hooks(model) == hooks_before
    model.generate(prompt_ids(), max_new_tokens=2, stopping_criteria=StoppingCriteriaList([recorder]))
    assert len(recorder.seen) == 2
    assert all(seen != forward_before for seen in recorder.seen)
    assert all_hooks(model) == hooks_before  # removed when the call ends

