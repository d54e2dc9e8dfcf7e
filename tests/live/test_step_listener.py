"""Step listeners: called once per decoding step, during generate, with the final report's values."""

from __future__ import annotations

import logging

import pytest
import torch

from opentelemetry_instrumentation_corevital import StepSummary, observe
from opentelemetry_instrumentation_corevital.report import Report
from tests.conftest import prompt_ids

NEW_TOKENS = 12


def step_events(span) -> dict[int, dict]:
    return {e.attributes["corevital.step.index"]: e.attributes for e in span.events if e.name == "corevital.step"}


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_listener_sees_every_step_with_the_final_reports_values(models, telemetry, instrument, name):
    instrument()
    model = models[name]
    seen: list[StepSummary] = []
    generating_steps: list[int] = []

    def on_step(summary: StepSummary) -> None:
        seen.append(summary)
        # called while generate runs: the capture session of this call is still active
        from opentelemetry_instrumentation_corevital.capture.session import active_session

        generating_steps.append(active_session().step)

    with observe(on_step=on_step) as run:
        output = model.generate(prompt_ids(), max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS)

    generated = output[0, -NEW_TOKENS:].tolist()
    assert [s.step for s in seen] == list(range(NEW_TOKENS))  # once per step, in order
    assert generating_steps == list(range(NEW_TOKENS))
    assert [s.token_id for s in seen] == generated
    assert run.steps == seen

    span = telemetry.only_span()
    report = Report.from_span(span)
    events = step_events(span)
    assert sorted(events) == list(range(NEW_TOKENS))
    for summary in seen:
        event = events[summary.step]
        assert "corevital.step.token_id" not in event  # content capture off: ids stay in-process
        assert summary.entropy == pytest.approx(event["corevital.step.entropy"], rel=1e-6)
        assert summary.surprisal == pytest.approx(event["corevital.step.surprisal"], rel=1e-6)
        assert summary.margin == pytest.approx(event["corevital.step.margin"], rel=1e-6)
    # the running risk of the last step is the run's risk; signals seen live are the run's
    assert seen[-1].risk == pytest.approx(report.risk.score, rel=1e-6)
    live_signals = {signal for s in seen for signal in s.signals}
    assert live_signals == set(report.early_warning.signals)
    assert seen[-1].repetition_loop == report.health.repetition_loop_detected
    # the Run after the block: the same finished health as the span
    assert run.risk == pytest.approx(report.risk.score)
    assert run.narrative == report.narrative
    assert set(run.flags) == {
        name for name, raised in report.health.model_dump().items() if raised and name != "high_entropy_steps"
    } | ({"high_entropy_steps"} if report.health.high_entropy_steps else set())
    assert run.report.risk.score == report.risk.score


def test_global_listener_and_observe_listener_both_see_each_step(models, telemetry, instrument):
    global_steps, block_steps = [], []
    instrument(on_step=global_steps.append)
    with observe(on_step=block_steps.append):
        models["llama"].generate(prompt_ids(batch=2), max_new_tokens=6, do_sample=False, min_new_tokens=6)
    models["llama"].generate(prompt_ids(), max_new_tokens=3, do_sample=False, min_new_tokens=3)
    assert [(s.step, s.sequence) for s in block_steps] == [(t, i) for t in range(6) for i in range(2)]
    assert global_steps[: len(block_steps)] == block_steps
    assert [(s.step, s.sequence) for s in global_steps[len(block_steps):]] == [(0, 0), (1, 0), (2, 0)]


def test_instrument_refuses_a_listener_that_is_not_callable(instrument):
    with pytest.raises(TypeError, match="on_step must be a callable"):
        instrument(on_step="print")
    with pytest.raises(TypeError, match="on_step must be a callable"):
        with observe(on_step=42):
            pass


def test_a_failing_listener_is_reported_once_and_generation_goes_on(models, telemetry, instrument, caplog):
    model = models["llama"]
    expected = model.generate(prompt_ids(), max_new_tokens=NEW_TOKENS, do_sample=False)  # not instrumented
    instrument()
    calls = []

    def broken(summary):
        calls.append(summary.step)
        raise ValueError("listener bug")

    with caplog.at_level(logging.WARNING), observe(on_step=broken) as run:
        output = model.generate(prompt_ids(), max_new_tokens=NEW_TOKENS, do_sample=False)

    assert torch.equal(output, expected)
    assert calls == list(range(output.shape[1] - prompt_ids().shape[1]))  # still called every step
    span = telemetry.only_span()
    assert span.attributes["corevital.listener.error"] == "ValueError: listener bug"
    assert "corevital.error" not in span.attributes  # not a CoreVital fault
    exceptions = [e for e in span.events if e.name == "exception"]
    assert len(exceptions) == 1 and exceptions[0].attributes["exception.type"] == "ValueError"
    assert sum("listener" in r.getMessage() for r in caplog.records) == 1
    assert run.risk is not None  # the health of the run is still recorded


def test_listener_does_not_change_what_generate_returns_or_the_callers_criteria(models, instrument):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class CountCalls(StoppingCriteria):
        calls = 0

        def __call__(self, input_ids, scores, **kwargs):
            CountCalls.calls += 1
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    model = models["llama"]
    theirs = StoppingCriteriaList([CountCalls()])
    expected = model.generate(prompt_ids(), max_new_tokens=8, do_sample=False, min_new_tokens=8)
    CountCalls.calls = 0
    instrument()
    with observe(on_step=lambda s: None):
        output = model.generate(prompt_ids(), max_new_tokens=8, do_sample=False, min_new_tokens=8,
                                stopping_criteria=theirs)
    assert torch.equal(output, expected)
    assert len(theirs) == 1 and isinstance(theirs[0], CountCalls)  # their list is not altered
    assert CountCalls.calls == 8


def test_capture_off_calls_no_listener_and_generates_normally(models, telemetry, instrument):
    instrument(capture_mode="off")
    seen = []
    with observe(on_step=seen.append) as run:
        output = models["llama"].generate(prompt_ids(), max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert output.shape[1] == prompt_ids().shape[1] + 4
    assert seen == [] and run.risk is None


@pytest.mark.parametrize("every", [1, 8])  # 8: no computed step in a 6-token call, still said
def test_beam_search_gets_no_live_health_and_the_span_says_why(models, telemetry, instrument, every):
    model = models["llama"]
    expected = model.generate(prompt_ids(), max_new_tokens=6, num_beams=2, do_sample=False)
    instrument(live_every=every)
    seen = []
    with observe(on_step=seen.append):
        output = model.generate(prompt_ids(), max_new_tokens=6, num_beams=2, do_sample=False)
    assert torch.equal(output, expected) and seen == []
    assert "beam search" in telemetry.only_span().attributes["corevital.live.unavailable_reason"]
