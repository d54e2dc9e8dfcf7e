"""A fault raised at any stage of CoreVital's own code never reaches the caller.

Each case makes one of our functions raise (capture probes, the per-step reductions, the
host copy, analysis, the telemetry builders, the SDK's instruments and exporter), then runs
generate twice and checks: the tokens are bit-identical to uninstrumented generate, nothing
is raised, the span names the fault in `corevital.error`, and the fault is logged once.
"""

from __future__ import annotations

import logging

import pytest
import torch
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics._internal.instrument import _Histogram
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opentelemetry_instrumentation_corevital import generate_call, handler
from opentelemetry_instrumentation_corevital.capture import session as capture_session
from opentelemetry_instrumentation_corevital.capture import stats
from opentelemetry_instrumentation_corevital.capture.buffers import StepBuffers
from opentelemetry_instrumentation_corevital.telemetry import events, payload
from opentelemetry_instrumentation_corevital.telemetry import health as health_telemetry
from tests.conftest import build_gpt2, build_llama, prompt_ids
from tests.support.reliability import probe_count, no_eos, our_warnings

ERROR = "corevital.error"
RISK = "corevital.risk.score"
STEPS = 6


class InjectedFault(RuntimeError):
    pass


def _raise(*args, **kwargs):
    raise InjectedFault("injected by the reliability suite")


# (case id, object to patch, attribute, stage named on the span, capture mode)
FAULTS = [
    ("attach: layout discovery", capture_session, "find_layout", "attach", "summary"),
    ("probe: forward pre-hook", capture_session, "decoder_step_ids", "step", "summary"),
    ("probe: buffer allocation", capture_session, "StepBuffers", "step", "summary"),
    ("probe: layer output", StepBuffers, "record_hidden_output", "hidden", "summary"),
    ("probe: logits", StepBuffers, "record_logits", "logits", "summary"),
    ("probe: attention call", StepBuffers, "defer_attention", "attention", "full"),
    ("probe: chosen tokens", StepBuffers, "record_chosen_tokens", "step", "summary"),
    ("probe: prompt telemetry", capture_session, "PromptProbe", "step", "full"),
    ("reduction: logits", stats, "logit_stats", "logits", "summary"),
    ("reduction: hidden states", stats, "hidden_stats", "hidden", "summary"),
    ("reduction: attention heads", stats, "head_stats", "attention", "full"),
    ("summary: host copy", StepBuffers, "to_host", "summary", "summary"),
    ("summary: sequence paths", capture_session, "resolve_paths", "summary", "summary"),
    ("analysis: analyze", health_telemetry, "analyze", "analysis", "summary"),
    ("telemetry: span attributes", health_telemetry, "span_attributes", "analysis", "summary"),
    ("telemetry: step events", events, "step_event", "analysis", "summary"),
    ("telemetry: evaluation event", events, "evaluation_event", "analysis", "summary"),
    ("telemetry: payload encoder", payload, "payload_events", "analysis", "full"),
    ("telemetry: result parsing", handler.GenerateResult, "from_output", "telemetry", "summary"),
    ("telemetry: profile lookup", handler.HealthRecorder, "profile_for", "profile", "summary"),
    ("telemetry: capture thresholds", handler.HealthRecorder, "capture_thresholds", "options", "summary"),
    ("telemetry: request attributes", handler.GenerationHandler, "_request_attributes", "request", "summary"),
    ("telemetry: metric instrument", _Histogram, "record", "telemetry", "summary"),
]


@pytest.fixture(scope="module")
def model():
    return build_llama()


def reference(model, ids, **kwargs):
    torch.manual_seed(7)
    return model.generate(ids, max_new_tokens=STEPS, **no_eos(model), **kwargs)


@pytest.mark.parametrize("kwargs", [{"do_sample": False}, {"do_sample": True, "top_k": 20}], ids=["greedy", "sampled"])
@pytest.mark.parametrize("case, target, name, stage, mode", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_never_reaches_the_caller(
    model, telemetry, instrument, monkeypatch, caplog, case, target, name, stage, mode, kwargs
):
    ids = prompt_ids(length=7, seed=3)
    expected = reference(model, ids, **kwargs)
    hooks_before = probe_count(model)
    instrument(capture_mode=mode)
    monkeypatch.setattr(target, name, _raise)
    with caplog.at_level(logging.WARNING):
        outputs = [reference(model, ids, **kwargs) for _ in range(2)]
    for output in outputs:
        assert torch.equal(output, expected)
    assert probe_count(model) == hooks_before
    spans = telemetry.finished()
    assert len(spans) == 2
    for span in spans:
        assert span.attributes[ERROR].startswith(f"{stage}: InjectedFault"), span.attributes.get(ERROR)
        if stage != "request":
            assert span.attributes["gen_ai.usage.input_tokens"] == 7
        assert span.status.is_ok
    faults = [r for r in our_warnings(caplog) if "fault" in r.getMessage()]
    assert len(faults) == 1, [r.getMessage() for r in faults]  # once, not once per step or per call
    assert isinstance(faults[0].exc_info[1], InjectedFault)


def test_a_fault_in_one_call_does_not_disable_the_next(model, telemetry, instrument, monkeypatch):
    """A probe fault is confined to its own call: the next call is captured in full again."""
    instrument()
    with monkeypatch.context() as patch:
        patch.setattr(StepBuffers, "record_logits", _raise)
        reference(model, prompt_ids())
    reference(model, prompt_ids())
    faulty, healthy = telemetry.finished()
    assert ERROR in faulty.attributes and RISK not in faulty.attributes
    assert ERROR not in healthy.attributes and RISK in healthy.attributes


def test_the_span_names_the_first_of_several_faults(model, telemetry, instrument, monkeypatch, caplog):
    """A later fault of the same call (often a consequence of the first) does not hide the first."""
    order = []

    def raising(stage):
        def fail(*args, **kwargs):
            order.append(stage)
            raise InjectedFault(f"injected at {stage}")
        return fail

    instrument()
    monkeypatch.setattr(handler.GenerationHandler, "_describe_content", raising("content"))
    monkeypatch.setattr(health_telemetry, "span_attributes", raising("analysis"))
    with caplog.at_level(logging.WARNING):
        output = reference(model, prompt_ids())
    assert torch.equal(output, reference(model, prompt_ids()))
    span = telemetry.finished()[0]
    assert order[:2] == ["content", "analysis"]
    assert span.attributes[ERROR] == "content: InjectedFault: injected at content"
    assert {r.exc_info[1].args[0] for r in our_warnings(caplog) if r.exc_info} == {
        "injected at content", "injected at analysis"
    }  # every fault is still logged


def test_failing_exporter_never_reaches_the_caller(model, telemetry, instrument, monkeypatch, caplog):
    """The export stage belongs to the SDK: a raising exporter is logged by the SDK, generate goes on."""
    ids = prompt_ids(seed=5)
    expected = reference(model, ids)
    broken = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    monkeypatch.setattr(broken, "export", _raise)
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(broken))
    instrument()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert torch.equal(reference(model, ids), expected)
    assert len(telemetry.finished()) == 3  # the healthy processor beside it still gets every span
    assert any(isinstance(r.exc_info and r.exc_info[1], InjectedFault) for r in caplog.records)


class _RaisingOnEnd(SpanProcessor):
    def on_end(self, span):
        raise InjectedFault("a span processor that raises when a span ends")


@pytest.mark.parametrize("fails", [False, True], ids=["call succeeds", "call raises"])
def test_a_span_processor_raising_on_end_never_reaches_the_caller(model, telemetry, instrument, monkeypatch, fails):
    """The caller gets generate's own result, or generate's own exception, whatever a processor does."""
    ids = prompt_ids(seed=7)
    expected = reference(model, ids)
    telemetry.tracer_provider.add_span_processor(_RaisingOnEnd())
    instrument()
    if not fails:
        assert torch.equal(reference(model, ids), expected)
        return
    with monkeypatch.context() as patch:
        patch.setattr(type(model), "forward", _raise)
        with pytest.raises(InjectedFault, match="injected"):
            reference(model, ids)


def test_fault_while_parsing_the_call_falls_back_to_plain_generate(telemetry, instrument, monkeypatch, caplog):
    model = build_gpt2()
    ids = prompt_ids(seed=6)
    expected = reference(model, ids)
    instrument()
    monkeypatch.setattr(generate_call.GenerateCall, "parse", classmethod(_raise))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert torch.equal(reference(model, ids), expected)
    assert telemetry.finished() == []  # nothing to name the span by: the call runs untraced
    assert len([r for r in our_warnings(caplog) if "fault" in r.getMessage()]) == 1


def test_generate_errors_still_reach_the_caller_unchanged(model, telemetry, instrument, monkeypatch):
    """The guards catch our faults only: an error raised by the model itself propagates as is."""

    class ModelError(ValueError):
        pass

    error = ModelError("raised inside forward")

    def broken_forward(*args, **kwargs):
        raise error

    instrument()
    monkeypatch.setattr(model.model.layers[0].mlp, "forward", broken_forward)
    with pytest.raises(ModelError) as raised:
        reference(model, prompt_ids())
    assert raised.value is error
    span = telemetry.only_span()
    assert span.attributes["error.type"].endswith("ModelError")
    assert ERROR not in span.attributes
