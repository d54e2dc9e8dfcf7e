"""CoreVital health on the span, in span events and in metrics (real tiny models, real SDK).

The tiny models are random-weight models built from configs: their next-token distribution
is close to uniform (about log2(256) = 8 bits at every step), which the shipped profiles
rightly call critical. Tests that need a healthy run therefore pass `TINY_PROFILE`, a profile
override "calibrated" for them, which also exercises the `profile_overrides` wiring.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time

import pytest
import torch
import transformers

from opentelemetry_instrumentation_corevital.analysis import FINGERPRINT_LAYOUT, prompt_hash
from opentelemetry_instrumentation_corevital.telemetry import health as health_module
from opentelemetry_instrumentation_corevital.telemetry import payload as payload_module
from opentelemetry_instrumentation_corevital.telemetry.health import HealthRecorder
from tests.conftest import VOCAB, build_gpt2, build_llama, prompt_ids
from tests.support.spans import span_strings
from tests.support.tokenizers import tiny_tokenizer

# -- names (spelled out: the contract, not the code's constants) ---------------------------

RISK = "corevital.risk.score"
FACTORS = "corevital.risk.factors"
NAN = "corevital.health.nan_detected"
INF = "corevital.health.inf_detected"
COLLAPSE = "corevital.health.attention_collapse_detected"
LOOP = "corevital.health.repetition_loop_detected"
MID = "corevital.health.mid_layer_anomaly_detected"
HIGH_ENTROPY = "corevital.health.high_entropy_steps"
BLAMED = "corevital.layers.blamed"
FAILURE_RISK = "corevital.early_warning.failure_risk"
SIGNALS = "corevital.early_warning.signals"
ENTROPY_MEAN = "corevital.logits.entropy.mean"
ENTROPY_MAX = "corevital.logits.entropy.max"
SURPRISAL_MEAN = "corevital.logits.surprisal.mean"
MARGIN_MEAN = "corevital.logits.margin.mean"
PROMPT_HASH = "corevital.prompt.hash"
FINGERPRINT = "corevital.fingerprint"
NARRATIVE = "corevital.narrative"
LANGFUSE_LEVEL = "langfuse.observation.level"
PAYLOAD_ATTACHED = "corevital.payload.attached"
ERROR = "corevital.error"
CAPTURE_MODE = "corevital.capture.mode"

FLAG_ATTRIBUTES = (NAN, INF, COLLAPSE, LOOP, MID)
HEALTH_ATTRIBUTES = (
    RISK, FACTORS, *FLAG_ATTRIBUTES, HIGH_ENTROPY, BLAMED, FAILURE_RISK, SIGNALS,
    ENTROPY_MEAN, ENTROPY_MAX, SURPRISAL_MEAN, MARGIN_MEAN, PROMPT_HASH, FINGERPRINT, NARRATIVE,
)

STEP_EVENT = "corevital.step"
SEQUENCE_EVENT = "corevital.sequence"
EVALUATION_EVENT = "gen_ai.evaluation.result"
OUR_EVENTS = {STEP_EVENT, SEQUENCE_EVENT, EVALUATION_EVENT}

RISK_METRIC = "corevital.risk.score"
ENTROPY_METRIC = "corevital.logits.entropy"
FLAGS_METRIC = "corevital.health.flags"
FLAG_KEY = "corevital.health.flag"
BASE_METRIC_KEYS = {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model"}

MAX_STEP_EVENTS_ENV = "OTEL_INSTRUMENTATION_COREVITAL_MAX_STEP_EVENTS"
PROFILE_OVERRIDES_ENV = "OTEL_INSTRUMENTATION_COREVITAL_PROFILE_OVERRIDES"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# Random weights: ~8 bits of entropy and tiny margins at every step. With entropy counted as
# high only above 9 bits and a lower bias, such a run scores ~0.02 (healthy); NaN still scores 1.
TINY_PROFILE = {"high_entropy_bits": 9.0, "risk_model": {"bias": -12.0}}


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    return build_llama()  # 3 decoder layers: layer 1 is the middle third


@pytest.fixture(scope="module")
def gpt2():
    return build_gpt2()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (MAX_STEP_EVENTS_ENV, PROFILE_OVERRIDES_ENV, CAPTURE_CONTENT_ENV):
        monkeypatch.delenv(name, raising=False)


class InjectNaN:
    """Forward hook on a decoder layer: NaN in its output on the chosen calls (steps) and rows."""

    def __init__(self, layer, steps=None, rows=None):
        self.steps, self.rows, self.calls = steps, rows, -1
        self.handle = layer.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1
        if self.steps is not None and self.calls not in self.steps:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        if self.rows is None:
            hidden[:] = float("nan")
        else:
            hidden[self.rows] = float("nan")
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def events_named(span, name):
    return [event for event in span.events if event.name == name]


def step_events(span):
    return events_named(span, STEP_EVENT)


def evaluation(span, telemetry):
    """The span's gen_ai.evaluation.result: a log record tied to the span, not a span event."""
    assert not events_named(span, EVALUATION_EVENT)
    found = [
        record.log_record for record in telemetry.log_events(EVALUATION_EVENT)
        if record.log_record.span_id == span.context.span_id and record.log_record.trace_id == span.context.trace_id
    ]
    assert len(found) == 1, len(found)
    return dict(found[0].attributes)


def is_otel_scalar(value) -> bool:
    return type(value) in (str, bool, int, float)


def assert_otel_valid(mapping, where):
    for key, value in mapping.items():
        if isinstance(value, tuple):
            assert all(is_otel_scalar(item) for item in value), (where, key, value)
            assert len({type(item) for item in value}) <= 1, (where, key, value)
            items = value
        else:
            assert is_otel_scalar(value), (where, key, type(value))
            items = (value,)
        assert all(not (isinstance(item, float) and not math.isfinite(item)) for item in items), (where, key, value)


def assert_span_otel_valid(span):
    assert_otel_valid(span.attributes, "span")
    for event in span.events:
        assert_otel_valid(event.attributes, event.name)


def flag_counts(telemetry) -> dict[str, int]:
    counts = {}
    for point in telemetry.metric_points(FLAGS_METRIC):
        attributes = dict(point.attributes)
        assert set(attributes) == BASE_METRIC_KEYS | {FLAG_KEY}, attributes
        counts[attributes[FLAG_KEY]] = counts.get(attributes[FLAG_KEY], 0) + point.value
    return counts


def generate_20(model, **kwargs):
    """Exactly 20 valid steps (EOS is masked in the processed scores, raw logits untouched)."""
    return model.generate(prompt_ids(), max_new_tokens=20, min_new_tokens=20, do_sample=False, **kwargs)


# -- span attributes ---------------------------------------------------------------------------


def test_healthy_run_attributes_names_types_and_ranges(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    ids = prompt_ids()
    llama.generate(ids, max_new_tokens=8, do_sample=False)
    span = telemetry.only_span()
    attributes = span.attributes
    assert ERROR not in attributes, attributes.get(ERROR)
    missing = [name for name in HEALTH_ATTRIBUTES if name not in attributes]
    assert not missing, missing
    assert_span_otel_valid(span)

    assert type(attributes[RISK]) is float and 0.0 <= attributes[RISK] < 0.4
    assert all(type(attributes[name]) is bool and attributes[name] is False for name in FLAG_ATTRIBUTES)
    assert type(attributes[HIGH_ENTROPY]) is int and attributes[HIGH_ENTROPY] == 0
    assert attributes[BLAMED] == ()
    assert type(attributes[FAILURE_RISK]) is float and 0.0 <= attributes[FAILURE_RISK] <= 1.0
    assert isinstance(attributes[FACTORS], tuple) and isinstance(attributes[SIGNALS], tuple)
    max_bits = math.log2(VOCAB) + 1e-3
    assert 0.0 <= attributes[ENTROPY_MEAN] <= attributes[ENTROPY_MAX] <= max_bits
    assert attributes[ENTROPY_MEAN] > 7.0  # raw logits of a random model: near uniform
    assert attributes[SURPRISAL_MEAN] >= 0.0
    assert 0.0 <= attributes[MARGIN_MEAN] <= 1.0
    assert attributes[PROMPT_HASH] == prompt_hash(ids[0].tolist(), "LlamaForCausalLM")
    assert re.fullmatch(r"[0-9a-f]{64}", attributes[PROMPT_HASH])
    fingerprint = attributes[FINGERPRINT]
    assert len(fingerprint) == len(FINGERPRINT_LAYOUT)
    assert all(type(value) is float and math.isfinite(value) for value in fingerprint)
    assert fingerprint[FINGERPRINT_LAYOUT.index("risk_score")] == pytest.approx(attributes[RISK])
    narrative = attributes[NARRATIVE]
    assert 2 <= narrative.count(". ") + 1 <= 4 and "healthy" in narrative
    assert LANGFUSE_LEVEL not in attributes
    assert PAYLOAD_ATTACHED not in attributes  # summary mode never carries the full trace

    result = evaluation(span, telemetry)
    assert result == {
        "gen_ai.evaluation.name": "corevital.risk",
        "gen_ai.evaluation.score.value": attributes[RISK],
        "gen_ai.evaluation.score.label": "healthy",
        "gen_ai.evaluation.explanation": narrative,
    }
    assert events_named(span, SEQUENCE_EVENT) == []  # one sequence


# No shipped profile is fitted: without a loop or NaN/Inf the default risk model reaches
# `critical` only when an unsure answer comes with a middle-layer state that barely moves. A
# random model's near-uniform next-token distribution is an unsure answer: a `warning` where its
# middle layer's state moves as much as a healthy run's (the random Llama's log-L2 spread: 0.13),
# `critical` where it stands still (the random GPT-2's: 0.05).


def test_hand_set_risk_model_calls_a_random_model_an_unsure_warning(llama, telemetry, instrument):
    instrument()
    llama.generate(prompt_ids(), max_new_tokens=6, min_new_tokens=6, do_sample=False)
    span = telemetry.only_span()
    assert 0.4 <= span.attributes[RISK] < 0.7
    assert span.attributes[HIGH_ENTROPY] == 6
    assert span.attributes[FACTORS] == ("uncertain_answer",)
    assert span.attributes[LANGFUSE_LEVEL] == "WARNING"
    assert evaluation(span, telemetry)["gen_ai.evaluation.score.label"] == "warning"
    assert flag_counts(telemetry) == {"high_entropy_steps": 1}


def test_hand_set_risk_model_calls_an_unsure_answer_over_a_still_hidden_state_critical(gpt2, telemetry, instrument):
    instrument()
    gpt2.generate(prompt_ids(), max_new_tokens=6, min_new_tokens=6, do_sample=False)
    span = telemetry.only_span()
    assert span.attributes[RISK] >= 0.7
    assert span.attributes[FACTORS] == ("uncertain_answer", "steady_hidden_state")
    assert evaluation(span, telemetry)["gen_ai.evaluation.score.label"] == "critical"
    assert flag_counts(telemetry) == {"high_entropy_steps": 1}  # no flag: the score alone says it


def test_prompt_hash_uses_first_row_without_padding(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    ids = prompt_ids(batch=2)
    mask = torch.ones_like(ids)
    ids[0, :2] = 0
    mask[0, :2] = 0
    llama.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False)
    span = telemetry.only_span()
    assert span.attributes[PROMPT_HASH] == prompt_hash(ids[0, 2:].tolist(), "LlamaForCausalLM")
    assert span.attributes[PROMPT_HASH] != prompt_hash(ids[0].tolist(), "LlamaForCausalLM")


def test_warning_label_sets_langfuse_warning(gpt2, telemetry, instrument):
    # the random model scores ~0.49 under the hand-set model: with critical only at 1.0 it is a warning
    instrument(profile_overrides={"risk_threshold_warning": 0.3, "risk_threshold_critical": 1.0})
    gpt2.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    span = telemetry.only_span()
    assert 0.3 <= span.attributes[RISK] < 1.0
    assert span.attributes[LANGFUSE_LEVEL] == "WARNING"
    assert evaluation(span, telemetry)["gen_ai.evaluation.score.label"] == "warning"


# -- NaN in a middle layer ---------------------------------------------------------------------------


def test_nan_in_middle_layer(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    with InjectNaN(llama.model.layers[1]):
        llama.generate(prompt_ids(), max_new_tokens=6, do_sample=False)
    span = telemetry.only_span()
    attributes = span.attributes
    assert ERROR not in attributes, attributes.get(ERROR)
    assert_span_otel_valid(span)  # NaN statistics are left out, never sent as NaN
    assert attributes[NAN] is True
    assert attributes[MID] is True
    assert attributes[RISK] == 1.0
    assert attributes[FACTORS][0] == "nan_or_inf"
    assert 1 in attributes[BLAMED]
    assert attributes[LANGFUSE_LEVEL] == "ERROR"
    assert "NaN" in attributes[NARRATIVE]
    result = evaluation(span, telemetry)
    assert result["gen_ai.evaluation.score.value"] == 1.0
    assert result["gen_ai.evaluation.score.label"] == "critical"
    counts = flag_counts(telemetry)
    assert counts["nan_detected"] == 1 and counts["mid_layer_anomaly_detected"] == 1
    assert set(counts) <= {"nan_detected", "inf_detected", "mid_layer_anomaly_detected", "high_entropy_steps",
                           "attention_collapse_detected", "repetition_loop_detected"}
    (risk,) = telemetry.metric_points(RISK_METRIC)
    assert risk.count == 1 and risk.sum == 1.0
    assert all(event.attributes["corevital.step.flagged"] for event in step_events(span))


def test_flags_counter_adds_up_over_calls(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    llama.generate(prompt_ids(), max_new_tokens=3, do_sample=False)
    assert flag_counts(telemetry) == {}
    for _ in range(2):
        with InjectNaN(llama.model.layers[1]):
            llama.generate(prompt_ids(), max_new_tokens=3, do_sample=False)
    counts = flag_counts(telemetry)
    assert counts["nan_detected"] == 2 and counts["mid_layer_anomaly_detected"] == 2
    (risk,) = telemetry.metric_points(RISK_METRIC)
    assert risk.count == 3
    # the NaN runs had no finite entropy: only the healthy run's 3 tokens were recorded
    assert sum(point.count for point in telemetry.metric_points(ENTROPY_METRIC)) == 3


# -- step events ---------------------------------------------------------------------------


def assert_capped_step_events(span, cap, steps):
    events = step_events(span)
    indices = [event.attributes["corevital.step.index"] for event in events]
    assert len(events) == min(cap, steps)
    assert indices == sorted(set(indices))
    assert indices[0] == 0 and indices[-1] == steps - 1
    for event in events:
        values = event.attributes
        assert "corevital.step.token_id" not in values  # content capture is off: an id decodes to text
        assert values["corevital.step.sequence"] == 0
        assert 0.0 <= values["corevital.step.entropy"] <= math.log2(VOCAB) + 1e-3
        assert values["corevital.step.surprisal"] >= 0.0
        assert 0.0 <= values["corevital.step.margin"] <= 1.0
        assert 0.0 <= values["corevital.step.topk_mass"] <= 1.0 + 1e-6
        assert "corevital.step.token" not in values
    return indices


def test_step_events_capped_by_kwarg(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE, max_step_events=5)
    output = generate_20(llama)
    assert output.shape[1] - prompt_ids().shape[1] == 20
    assert_capped_step_events(telemetry.only_span(), 5, 20)


def test_step_events_capped_by_env(llama, telemetry, instrument, monkeypatch):
    monkeypatch.setenv(MAX_STEP_EVENTS_ENV, "5")
    instrument(profile_overrides=TINY_PROFILE)
    generate_20(llama)
    assert_capped_step_events(telemetry.only_span(), 5, 20)


def test_step_events_default_cap_keeps_every_step_of_a_short_run(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    generate_20(llama)
    span = telemetry.only_span()
    assert_capped_step_events(span, 64, 20)
    assert not any(event.attributes["corevital.step.flagged"] for event in step_events(span))


def test_step_events_default_cap_is_64(telemetry, instrument):
    model = build_gpt2(n_layer=1)
    instrument(profile_overrides=TINY_PROFILE)
    model.generate(prompt_ids(), max_new_tokens=100, min_new_tokens=100, do_sample=False)
    span = telemetry.only_span()
    assert len(step_events(span)) == 64
    assert len(span.events) <= 128  # the SDK's default event limit: nothing was dropped
    assert span.dropped_events == 0
    assert evaluation(span, telemetry)


class PauseAfterTokens(transformers.StoppingCriteria):
    """Sleeps once, right after `tokens` new tokens exist (a slow consumer between two steps)."""

    def __init__(self, prompt_width: int, tokens: int, seconds: float):
        self.at, self.seconds = prompt_width + tokens, seconds

    def __call__(self, input_ids, scores, **kwargs):
        if input_ids.shape[1] == self.at:
            time.sleep(self.seconds)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_step_events_are_stamped_with_the_time_of_their_step(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    ids = prompt_ids()
    pause = PauseAfterTokens(ids.shape[1], tokens=3, seconds=0.2)
    criteria = transformers.StoppingCriteriaList([pause])
    llama.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, stopping_criteria=criteria)
    span = telemetry.only_span()
    events = step_events(span)
    assert [e.attributes["corevital.step.index"] for e in events] == list(range(6))
    times = [e.timestamp for e in events]
    assert span.start_time < times[0] and times[-1] <= span.end_time
    gaps = [(b - a) / 1e9 for a, b in zip(times, times[1:])]
    # the third token (step 2) existed only once the pause was over, and the span's events show it
    assert gaps[1] >= 0.2 and all(gap < 0.2 for i, gap in enumerate(gaps) if i != 1), gaps


def test_flagged_steps_always_get_a_step_event(llama, telemetry, instrument):
    # NaN in the last layer's output at steps 10 and 15 only: it reaches those steps' logits but
    # no cache, so exactly steps 10 and 15 are flagged.
    instrument(profile_overrides=TINY_PROFILE, max_step_events=5)
    with InjectNaN(llama.model.layers[2], steps={10, 15}):
        generate_20(llama)
    span = telemetry.only_span()
    events = step_events(span)
    indices = [event.attributes["corevital.step.index"] for event in events]
    assert len(events) == 5
    assert {0, 10, 15, 19} <= set(indices)
    flagged = {e.attributes["corevital.step.index"] for e in events if e.attributes["corevital.step.flagged"]}
    assert flagged == {10, 15}
    for event in events:  # NaN steps carry no NaN numbers
        if event.attributes["corevital.step.index"] in (10, 15):
            assert "corevital.step.entropy" not in event.attributes
    assert span.attributes[NAN] is True and span.attributes[MID] is False
    assert_span_otel_valid(span)


def test_content_capture_off_no_token_text(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False, tokenizer=tiny_tokenizer())
    span = telemetry.only_span()
    assert step_events(span)
    assert all("corevital.step.token" not in event.attributes for event in step_events(span))
    assert all("corevital.step.token_id" not in event.attributes for event in step_events(span))
    assert not [text for text in span_strings(span) if "zq" in text]


def test_content_capture_on_gives_token_text(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE, capture_message_content=True)
    output = llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False, tokenizer=tiny_tokenizer())
    span = telemetry.only_span()
    events = step_events(span)
    generated = output[0, prompt_ids().shape[1]:].tolist()
    for event in events:
        values = event.attributes
        assert values["corevital.step.token_id"] == generated[values["corevital.step.index"]]
        token_id = values["corevital.step.token_id"]
        if token_id >= 4:  # a plain word of the tiny vocabulary
            assert values["corevital.step.token"] == f"zq{token_id}"


def test_content_capture_without_tokenizer_gives_no_token_text(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE, capture_message_content=True)
    llama.generate(prompt_ids(), max_new_tokens=3, do_sample=False)
    assert all("corevital.step.token" not in event.attributes for event in step_events(telemetry.only_span()))


# -- batches ---------------------------------------------------------------------------------


def test_batch_of_two_gives_sequence_events_and_max_risk(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    with InjectNaN(llama.model.layers[1], rows=[1]):
        llama.generate(prompt_ids(batch=2), max_new_tokens=5, min_new_tokens=5, do_sample=False)
    span = telemetry.only_span()
    assert_span_otel_valid(span)
    sequences = [dict(event.attributes) for event in events_named(span, SEQUENCE_EVENT)]
    assert [s["corevital.sequence.index"] for s in sequences] == [0, 1]
    healthy, broken = sequences
    assert healthy["corevital.sequence.risk.label"] == "healthy"
    assert healthy["corevital.sequence.health.flags"] == ()
    assert broken["corevital.sequence.risk.score"] == 1.0
    assert broken["corevital.sequence.risk.label"] == "critical"
    assert {"nan_detected", "mid_layer_anomaly_detected"} <= set(broken["corevital.sequence.health.flags"])
    assert span.attributes[RISK] == max(s["corevital.sequence.risk.score"] for s in sequences) == 1.0
    assert span.attributes[NAN] is True  # any sequence's flag raises the span's
    assert [s["corevital.sequence.output_tokens"] for s in sequences] == [5, 5]
    total = sum(s["corevital.sequence.output_tokens"] for s in sequences)
    assert total == span.attributes["gen_ai.usage.output_tokens"]
    assert tuple(s["corevital.sequence.finish_reason"] for s in sequences) == span.attributes[
        "gen_ai.response.finish_reasons"
    ]
    # step events describe the worst sequence
    assert {event.attributes["corevital.step.sequence"] for event in step_events(span)} == {1}
    assert evaluation(span, telemetry)["gen_ai.evaluation.score.value"] == span.attributes[RISK]
    (risk,) = telemetry.metric_points(RISK_METRIC)
    assert risk.count == 1 and risk.sum == 1.0  # one record per generate: the aggregate
    assert flag_counts(telemetry)["nan_detected"] == 1


def test_num_return_sequences_sequence_events(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    torch.manual_seed(3)
    llama.generate(prompt_ids(), max_new_tokens=3, do_sample=True, num_return_sequences=3)
    span = telemetry.only_span()
    sequences = events_named(span, SEQUENCE_EVENT)
    assert len(sequences) == 3
    assert span.attributes[RISK] == max(e.attributes["corevital.sequence.risk.score"] for e in sequences)


# -- payload (on_risk / full) ----------------------------------------------------------------


def payload_events(span):
    return [event for event in span.events if event.name not in OUR_EVENTS]


def test_on_risk_healthy_run_has_no_payload(llama, telemetry, instrument):
    instrument(capture_mode="on_risk", profile_overrides=TINY_PROFILE)
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    span = telemetry.only_span()
    assert span.attributes[PAYLOAD_ATTACHED] is False
    assert payload_events(span) == []
    assert not any(key.startswith("corevital.payload.") and key != PAYLOAD_ATTACHED for key in span.attributes)


def test_on_risk_nan_run_has_payload(llama, telemetry, instrument):
    instrument(capture_mode="on_risk", profile_overrides=TINY_PROFILE)
    with InjectNaN(llama.model.layers[1]):
        llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    span = telemetry.only_span()
    assert ERROR not in span.attributes, span.attributes.get(ERROR)
    assert span.attributes[PAYLOAD_ATTACHED] is True
    assert payload_events(span)
    assert evaluation(span, telemetry)


def test_on_risk_threshold_decides_without_a_critical_flag(llama, telemetry, instrument):
    instrument(capture_mode="on_risk", profile_overrides=TINY_PROFILE, risk_threshold=0.0)
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    span = telemetry.only_span()
    assert evaluation(span, telemetry)["gen_ai.evaluation.score.label"] == "healthy"
    assert span.attributes[PAYLOAD_ATTACHED] is True


def test_full_mode_always_attaches(llama, telemetry, instrument):
    instrument(capture_mode="full", profile_overrides=TINY_PROFILE)
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    span = telemetry.only_span()
    assert span.attributes[PAYLOAD_ATTACHED] is True
    assert span.attributes[RISK] < 0.4


def test_on_risk_decision_with_a_stand_in_encoder(llama, telemetry, instrument, monkeypatch):
    """The encoder is called with (summaries, prompt_summaries, analysis, max_bytes) on risky runs only,
    and asked for token ids only when content capture is on (it is off here)."""
    calls = []

    def encoder(summaries, prompt_summaries, analysis, max_bytes, token_ids):
        assert token_ids is False
        calls.append((summaries.num_steps, prompt_summaries, analysis.aggregate.risk_score, max_bytes))
        return [("corevital.payload.test", {"n": 1})], {"corevital.payload.bytes": 10}

    monkeypatch.setattr(payload_module, "payload_events", encoder)
    instrument(capture_mode="on_risk", profile_overrides=TINY_PROFILE, payload_max_bytes=4096)
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    with InjectNaN(llama.model.layers[1]):
        llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    healthy, risky = telemetry.finished()
    assert len(calls) == 1
    steps, prompt_summaries, risk, max_bytes = calls[0]
    assert (steps, risk, max_bytes) == (4, 1.0, 4096)
    assert prompt_summaries is not None  # on_risk captures prompt telemetry
    assert [event.name for event in payload_events(risky)] == ["corevital.payload.test"]
    assert risky.attributes["corevital.payload.bytes"] == 10
    assert payload_events(healthy) == []


# -- capture mode off, faults --------------------------------------------------------------------


def test_capture_mode_off_has_no_health_telemetry(llama, telemetry, instrument):
    instrument(capture_mode="off")
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    span = telemetry.only_span()
    assert span.attributes[CAPTURE_MODE] == "off"
    assert [key for key in span.attributes if key.startswith("corevital.") and key != CAPTURE_MODE] == []
    assert LANGFUSE_LEVEL not in span.attributes
    assert span.events == ()
    assert telemetry.metric_points(RISK_METRIC) == []
    assert telemetry.metric_points(FLAGS_METRIC) == []


def test_analysis_fault_leaves_generate_unchanged(llama, telemetry, instrument, monkeypatch):
    ids = prompt_ids(batch=2)
    reference = llama.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)

    def broken(*args, **kwargs):
        raise RuntimeError("analysis exploded")

    monkeypatch.setattr(health_module, "analyze", broken)
    instrument()
    output = llama.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert type(output) is type(reference) and torch.equal(output, reference)
    span = telemetry.only_span()
    assert span.attributes[ERROR].startswith("analysis: RuntimeError: analysis exploded")
    assert RISK not in span.attributes
    assert span.attributes["gen_ai.usage.output_tokens"] == 10  # the rest of the span is intact


def test_event_fault_leaves_generate_unchanged(llama, telemetry, instrument, monkeypatch):
    ids = prompt_ids()
    reference = llama.generate(ids, max_new_tokens=5, do_sample=False)

    def broken(**kwargs):
        raise ValueError("bad step")

    monkeypatch.setattr(health_module.events, "step_event", broken)
    instrument(profile_overrides=TINY_PROFILE)
    output = llama.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(output, reference)
    span = telemetry.only_span()
    assert "ValueError: bad step" in span.attributes[ERROR]
    assert span.attributes[RISK] < 0.4  # attributes were set before the events failed
    (risk,) = telemetry.metric_points(RISK_METRIC)
    assert risk.count == 1


# -- profiles ----------------------------------------------------------------------------------


def test_profile_overrides_from_env_json(llama, telemetry, instrument, monkeypatch):
    monkeypatch.setenv(PROFILE_OVERRIDES_ENV, json.dumps(TINY_PROFILE))
    instrument()
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    assert telemetry.only_span().attributes[RISK] < 0.4


def test_bad_profile_overrides_env_is_logged_and_ignored(gpt2, telemetry, instrument, monkeypatch, caplog):
    monkeypatch.setenv(PROFILE_OVERRIDES_ENV, '{"high_entropy_bitz": 3}')
    with caplog.at_level(logging.WARNING):
        instrument()
    messages = [r.getMessage() for r in caplog.records if PROFILE_OVERRIDES_ENV in r.getMessage()]
    assert messages and "high_entropy_bitz" in messages[0]
    gpt2.generate(prompt_ids(), max_new_tokens=2, do_sample=False)
    assert telemetry.only_span().attributes["corevital.profile.name"] == "gpt2"  # the shipped profile applies


@pytest.mark.parametrize(
    "value, fragment",
    [({"high_entropy_bitz": 3}, "high_entropy_bitz"), ({"low_margin": 2}, "low_margin"), ("[1]", "JSON object")],
)
def test_bad_profile_overrides_kwarg_is_refused(telemetry, instrument, value, fragment):
    with pytest.raises(ValueError) as raised:
        instrument(profile_overrides=value)
    assert "profile_overrides" in str(raised.value) and fragment in str(raised.value)


def test_profile_follows_model_type(telemetry):
    from opentelemetry_instrumentation_corevital.config import Settings

    recorder = HealthRecorder(None, Settings(profile_overrides={"low_margin": 0.2}))
    assert recorder.profile_for(build_llama(layers=1)).name == "llama"
    assert recorder.profile_for(build_gpt2(n_layer=1)).name == "gpt2"
    assert recorder.profile("something_else").name == "default"
    assert recorder.profile("gpt2").low_margin == 0.2
    assert recorder.profile("gpt2").repetition_cosine == 0.9995  # gpt2.json's own value is kept
    assert recorder.capture_thresholds(recorder.profile("gpt2")) == {
        "collapsed_head_entropy_bits": 0.1, "focused_head_concentration": 0.9,
    }


def test_profile_thresholds_reach_capture(llama, telemetry, instrument):
    # Every head's entropy is below 32 bits and every concentration above 0: all collapsed/focused.
    thresholds = {"collapsed_head_entropy_bits": 32.0, "focused_head_concentration": 0.0}
    instrument(profile_overrides={**TINY_PROFILE, **thresholds})
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    attributes = telemetry.only_span().attributes
    assert attributes[FINGERPRINT][FINGERPRINT_LAYOUT.index("focused_cell_fraction")] == 1.0
    # every head collapsed at every step is each layer's own baseline, not a change: no flag
    assert attributes[COLLAPSE] is False


def test_default_thresholds_see_no_collapse_in_a_random_model(llama, telemetry, instrument):
    instrument(profile_overrides=TINY_PROFILE)
    llama.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    assert telemetry.only_span().attributes[COLLAPSE] is False
