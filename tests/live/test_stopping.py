"""CoreVitalStoppingCriteria: stops looping, non-finite or risky sequences, one by one, and says why."""

from __future__ import annotations

import logging

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalStoppingCriteria, observe
from opentelemetry_instrumentation_corevital.live import step as step_module
from opentelemetry_instrumentation_corevital.profiles import load_profile
from tests.conftest import prompt_ids
from tests.support.successor_model import build_successor_llama, chain

from .conftest import (
    FLUENT_START_TOKEN,
    LOOP_LEAD,
    LOOP_PERIOD,
    LOOP_START_TOKEN,
    NONFINITE_START_TOKEN,
    prompt_ending_in,
)

NEW_TOKENS = 28
PROMPT_WIDTH = 3


def interventions(span) -> list[dict]:
    return [dict(e.attributes) for e in span.events if e.name == "corevital.intervention"]


def generate(model, prompt, **kwargs):
    kwargs.setdefault("stopping_criteria", [CoreVitalStoppingCriteria()])
    with observe() as run:
        output = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)
    return output, run


def test_a_repetition_loop_is_stopped_soon_after_it_starts(successor_model, telemetry, instrument):
    instrument()
    output, run = generate(successor_model, prompt_ending_in(LOOP_START_TOKEN))
    generated = output[0, PROMPT_WIDTH:].tolist()

    first_repeat = LOOP_LEAD + LOOP_PERIOD  # the step that first repeats the phrase of period 4
    span = telemetry.only_span()
    (event,) = interventions(span)
    assert event["corevital.intervention.reason"] == "repetition_loop"
    stop = event["corevital.intervention.step"]
    # a loop needs `repetition_min_steps` repeating steps to be confirmed, then it stops at once
    confirm_steps = load_profile(successor_model.config.model_type).repetition_min_steps
    assert first_repeat <= stop <= first_repeat + confirm_steps
    assert stop < NEW_TOKENS - LOOP_PERIOD  # well before the length limit
    assert set(generated[stop + 1 :]) <= {successor_model.generation_config.pad_token_id}
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.repetition_loop",)
    assert span.attributes["gen_ai.usage.output_tokens"] == stop + 1
    assert span.attributes["corevital.health.repetition_loop_detected"] is True
    assert run.should_intervene() and run.interventions[0].step == stop
    # the stop happened at the first step whose live summary confirmed the loop
    assert stop == min(s.step for s in run.steps if s.repetition_loop)


@pytest.mark.parametrize("every", [2, 4])
def test_with_live_every_a_loop_is_stopped_at_the_first_computed_step_from_its_confirmation(
    successor_model, telemetry, instrument, every
):
    instrumentor = instrument()
    _, each_step = generate(successor_model, prompt_ending_in(LOOP_START_TOKEN))
    confirmed = each_step.interventions[0].step
    instrumentor.uninstrument()
    instrument(live_every=every)
    output, run = generate(successor_model, prompt_ending_in(LOOP_START_TOKEN))

    stop = run.interventions[0].step
    assert stop == confirmed + (-(confirmed + 1) % every)  # at most every - 1 tokens later
    assert [s.step for s in run.steps] == list(range(every - 1, stop + 1, every))
    assert set(output[0, PROMPT_WIDTH + stop + 1 :].tolist()) <= {successor_model.generation_config.pad_token_id}
    span = telemetry.finished()[-1]
    assert span.attributes["gen_ai.usage.output_tokens"] == stop + 1
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.repetition_loop",)


def test_a_fluent_run_is_left_alone(successor_model, telemetry, instrument):
    expected = successor_model.generate(
        prompt_ending_in(FLUENT_START_TOKEN), max_new_tokens=NEW_TOKENS, do_sample=False
    )
    instrument()
    output, run = generate(successor_model, prompt_ending_in(FLUENT_START_TOKEN))
    assert torch.equal(output, expected)
    span = telemetry.only_span()
    assert interventions(span) == []
    assert span.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert span.attributes["corevital.health.repetition_loop_detected"] is False
    assert not run.interventions


def test_in_a_batch_only_the_looping_sequence_stops(successor_model, telemetry, instrument):
    fluent_alone = successor_model.generate(
        prompt_ending_in(FLUENT_START_TOKEN), max_new_tokens=NEW_TOKENS, do_sample=False
    )
    instrument()
    output, run = generate(successor_model, prompt_ending_in(LOOP_START_TOKEN, FLUENT_START_TOKEN))

    span = telemetry.only_span()
    (event,) = interventions(span)
    assert event["corevital.intervention.sequence"] == 0
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.repetition_loop", "length")
    assert torch.equal(output[1], fluent_alone[0])  # the healthy sequence ran to its end, unchanged
    stop = event["corevital.intervention.step"]
    assert span.attributes["gen_ai.usage.output_tokens"] == (stop + 1) + NEW_TOKENS
    sequences = {e.attributes["corevital.sequence.index"]: e.attributes for e in span.events
                 if e.name == "corevital.sequence"}
    assert sequences[0]["corevital.sequence.finish_reason"] == "corevital.repetition_loop"
    assert sequences[0]["corevital.sequence.output_tokens"] == stop + 1
    assert sequences[1]["corevital.sequence.finish_reason"] == "length"
    assert max(s.step for s in run.steps if s.sequence == 0) == stop  # no steps after the stop
    assert max(s.step for s in run.steps if s.sequence == 1) == NEW_TOKENS - 1


def test_nan_stops_the_sequence_at_the_step_it_appears(successor_model, telemetry, instrument):
    instrument()
    output, run = generate(successor_model, prompt_ending_in(NONFINITE_START_TOKEN, FLUENT_START_TOKEN))
    span = telemetry.only_span()
    (event,) = interventions(span)
    first_nan = min(s.step for s in run.steps if s.nonfinite)
    assert event["corevital.intervention.step"] == first_nan
    assert event["corevital.intervention.reason"] == "nonfinite"
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.nonfinite", "length")
    assert span.attributes["corevital.health.nan_detected"] is True


def test_risk_threshold_stops_at_the_first_step_that_reaches_it(successor_model, telemetry, instrument):
    instrument()
    with observe(on_step=lambda s: None) as watched:
        successor_model.generate(prompt_ending_in(LOOP_START_TOKEN), max_new_tokens=NEW_TOKENS, do_sample=False)
    risks = [s.risk for s in watched.steps]
    assert max(risks) > min(risks)  # the risk rises as the loop sets in
    threshold = (max(risks) + min(risks)) / 2
    expected_stop = next(s.step for s in watched.steps if s.risk >= threshold)

    criteria = CoreVitalStoppingCriteria(stop_on_repetition_loop=False, risk_threshold=threshold, min_steps=1)
    output, run = generate(successor_model, prompt_ending_in(LOOP_START_TOKEN), stopping_criteria=[criteria])
    span = telemetry.finished()[-1]
    (event,) = interventions(span)
    assert (event["corevital.intervention.step"], event["corevital.intervention.reason"]) == (expected_stop, "risk")
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.risk",)


def test_seq2seq_loop_is_stopped(models, telemetry, instrument):
    instrument()
    with observe(on_step=lambda s: None) as watched:
        models["t5"].generate(prompt_ids(), max_new_tokens=NEW_TOKENS, do_sample=False)
    looping = [s.step for s in watched.steps if s.repetition_loop]
    assert looping, "the random tiny T5 repeats one token greedily"

    output, run = generate(models["t5"], prompt_ids())
    span = telemetry.finished()[-1]
    (event,) = interventions(span)
    assert event["corevital.intervention.step"] == looping[0]
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.repetition_loop",)
    assert output.shape[1] == 1 + looping[0] + 1  # decoder start token + the tokens up to the stop


def test_works_in_a_text_generation_pipeline(successor_model, word_tokenizer, telemetry, instrument):
    from transformers import pipeline

    instrument()
    pipe = pipeline("text-generation", model=successor_model, tokenizer=word_tokenizer)
    (result,) = pipe(f"w5 w7 w{LOOP_START_TOKEN}", max_new_tokens=NEW_TOKENS, do_sample=False,
                     return_full_text=False, stopping_criteria=[CoreVitalStoppingCriteria()])
    span = telemetry.only_span()
    (event,) = interventions(span)
    assert span.attributes["gen_ai.response.finish_reasons"] == ("corevital.repetition_loop",)
    words = [w for w in result["generated_text"].split() if w != "w0"]
    assert len(words) == event["corevital.intervention.step"] + 1


def test_without_instrumentation_the_criterion_warns_once_and_never_stops(successor_model, caplog):
    criteria = CoreVitalStoppingCriteria()
    with caplog.at_level(logging.WARNING):
        output = successor_model.generate(
            prompt_ending_in(LOOP_START_TOKEN), max_new_tokens=NEW_TOKENS, do_sample=False, stopping_criteria=[criteria]
        )
    assert output.shape[1] == PROMPT_WIDTH + NEW_TOKENS
    assert sum("CoreVitalStoppingCriteria found no CoreVital capture" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"risk_threshold": 1.5}, "risk_threshold must be a number in"),
    ({"min_steps": 0}, "min_steps must be an int >= 1"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CoreVitalStoppingCriteria(**kwargs)


@pytest.fixture
def computed_with_risk(monkeypatch):
    """Whether each call's live steps carried the risk and signals (the full state) or the stop rules only."""
    seen = []
    original = step_module.StepComputer.__init__

    def recording(computer, *args, **kwargs):
        original(computer, *args, **kwargs)
        seen.append(computer.risk_and_signals)

    monkeypatch.setattr(step_module.StepComputer, "__init__", recording)
    return seen


@pytest.mark.parametrize("every", [1, 3])
def test_with_no_listener_and_no_risk_threshold_the_stop_rules_alone_stop_the_same_steps(
    successor_model, telemetry, instrument, computed_with_risk, every
):
    """The default health stop keeps the loop and NaN/Inf state only: it stops what the full live health stops."""
    instrument(live_every=every)
    prompt = prompt_ending_in(LOOP_START_TOKEN, FLUENT_START_TOKEN, NONFINITE_START_TOKEN)
    full, _ = generate(successor_model, prompt)  # observe() records the steps: the full state
    stop_rules_only = successor_model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
                                               stopping_criteria=[CoreVitalStoppingCriteria()])
    with_risk = [CoreVitalStoppingCriteria(risk_threshold=1.0)]
    risk_kept = successor_model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
                                         stopping_criteria=with_risk)

    assert computed_with_risk == [True, False, True]
    assert torch.equal(stop_rules_only, full) and torch.equal(risk_kept, full)
    spans = telemetry.finished()
    stops = [interventions(span) for span in spans]
    assert {e["corevital.intervention.reason"] for e in stops[0]} == {"repetition_loop", "nonfinite"}
    assert stops[1] == stops[0] == stops[2]
    reasons = [span.attributes["gen_ai.response.finish_reasons"] for span in spans]
    assert reasons[1] == reasons[0]
    assert "corevital.error" not in spans[1].attributes


def test_the_stop_rules_alone_stop_on_infinite_logits_from_finite_layer_states(telemetry, instrument):
    """An output-head weight near float32's largest overflows one logit to +inf at the step whose
    token reads it, while every layer's state stays finite: the stop rules alone stop there, as
    the full state does."""
    successor = chain(FLUENT_START_TOKEN, 20)
    model = build_successor_llama(successor)
    overflowing_at = FLUENT_START_TOKEN + 5
    with torch.no_grad():  # the one-hot state of `overflowing_at` reads this column of the head
        model.lm_head.weight[FLUENT_START_TOKEN + 9, sorted(set(successor) | set(successor.values())).index(overflowing_at)] = 3e38
    instrument()
    prompt = prompt_ending_in(FLUENT_START_TOKEN)
    full, _ = generate(model, prompt)
    stop_rules_only = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
                                     stopping_criteria=[CoreVitalStoppingCriteria()])
    assert torch.equal(stop_rules_only, full)
    spans = telemetry.finished()
    assert interventions(spans[1]) == interventions(spans[0]) == [
        {"corevital.intervention.step": 5, "corevital.intervention.reason": "nonfinite",
         "corevital.intervention.sequence": 0}
    ]
    assert spans[1].attributes["corevital.health.inf_detected"] is True
    assert spans[1].attributes["corevital.health.nan_detected"] is False


@pytest.mark.parametrize("name", ["llama", "qwen2", "t5"])
def test_the_stop_rules_alone_stop_where_the_full_state_does_on_other_families(
    models, telemetry, instrument, computed_with_risk, name
):
    """Greedy tiny random models loop: a batch of four stops some sequences, at the same steps either way."""
    model, prompt = models[name], prompt_ids(batch=4)
    instrument()
    kwargs = dict(max_new_tokens=60, do_sample=False)
    with observe():
        full = model.generate(prompt, stopping_criteria=[CoreVitalStoppingCriteria()], **kwargs)
    stop_rules_only = model.generate(prompt, stopping_criteria=[CoreVitalStoppingCriteria()], **kwargs)
    assert computed_with_risk == [True, False]
    assert torch.equal(stop_rules_only, full)
    spans = telemetry.finished()
    assert len(interventions(spans[0])) >= 2
    assert interventions(spans[1]) == interventions(spans[0])
    reasons = [span.attributes["gen_ai.response.finish_reasons"] for span in spans]
    assert reasons[1] == reasons[0]
    assert "corevital.error" not in spans[1].attributes


def test_a_subclass_of_the_criterion_gets_the_full_step_summaries(successor_model, telemetry, instrument,
                                                                    computed_with_risk):
    """A subclass may decide on anything a step summary holds: its call keeps the full state."""

    class StopOnRisingRisk(CoreVitalStoppingCriteria):
        def __init__(self):
            super().__init__()
            self.risks = []

        def reason_to_stop(self, summary):
            self.risks.append(summary.risk)
            return super().reason_to_stop(summary)

    instrument()
    criterion = StopOnRisingRisk()
    successor_model.generate(prompt_ending_in(FLUENT_START_TOKEN), max_new_tokens=NEW_TOKENS, do_sample=False,
                             stopping_criteria=[criterion])
    assert computed_with_risk == [True]
    assert len(criterion.risks) == NEW_TOKENS and all(0.0 <= risk <= 1.0 for risk in criterion.risks)
