"""The full report, rebuilt from a finished span: run-level view, arrays, strict JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.analysis import analyze
from opentelemetry_instrumentation_corevital.report import Report, decode_payload
from opentelemetry_instrumentation_corevital.summaries import HIDDEN_STATS, LOGIT_STATS
from opentelemetry_instrumentation_corevital.telemetry import payload as P
from opentelemetry_instrumentation_corevital.telemetry.payload import payload_events
from tests.support.payload_runs import (
    F16,
    assert_prompt_round_trip,
    assert_summaries_round_trip,
    export_span,
    synthetic_run,
)


def span_attributes(analysis, info):
    """What the handler puts on the span (the telemetry contract), plus the payload info."""
    aggregate = analysis.aggregate
    worst = analysis.sequences[aggregate.worst_sequence]
    return {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "huggingface",
        "gen_ai.request.model": "tiny-llama",
        "gen_ai.request.max_tokens": 40,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.seed": 11,
        "gen_ai.usage.input_tokens": 48,
        "gen_ai.usage.output_tokens": 75,
        "gen_ai.response.finish_reasons": ["length", "stop"],
        "corevital.capture.mode": "full",
        "corevital.risk.score": aggregate.risk_score,
        "corevital.risk.factors": list(aggregate.risk_factors),
        "corevital.health.nan_detected": aggregate.flags.nan_detected,
        "corevital.health.inf_detected": aggregate.flags.inf_detected,
        "corevital.health.attention_collapse_detected": aggregate.flags.attention_collapse_detected,
        "corevital.health.repetition_loop_detected": aggregate.flags.repetition_loop_detected,
        "corevital.health.mid_layer_anomaly_detected": aggregate.flags.mid_layer_anomaly_detected,
        "corevital.health.high_entropy_steps": aggregate.flags.high_entropy_steps,
        "corevital.layers.blamed": list(aggregate.blamed_layers),
        "corevital.early_warning.failure_risk": aggregate.failure_risk,
        "corevital.early_warning.signals": list(aggregate.warning_signals),
        "corevital.logits.entropy.mean": aggregate.entropy_mean,
        "corevital.logits.entropy.max": aggregate.entropy_max,
        "corevital.logits.surprisal.mean": aggregate.surprisal_mean,
        "corevital.logits.margin.mean": aggregate.margin_mean,
        "corevital.prompt.hash": "ab" * 32,
        "corevital.fingerprint": list(worst.fingerprint),
        "corevital.narrative": worst.narrative,
        **info,
    }


def other_events(analysis):
    aggregate = analysis.aggregate
    return [
        ("corevital.step", {"corevital.step.index": 3, "corevital.step.surprisal": float("inf")}),
        ("corevital.step", {"corevital.step.index": 4, "corevital.step.entropy": float("nan")}),
        (
            "gen_ai.evaluation.result",
            {
                "gen_ai.evaluation.name": "corevital.risk",
                "gen_ai.evaluation.score.value": aggregate.risk_score,
                "gen_ai.evaluation.score.label": aggregate.label,
                "gen_ai.evaluation.explanation": "numbers only",
            },
        ),
    ]


def finished_span(summaries, prompt, analysis, budget=P.DEFAULT_MAX_BYTES, with_payload=True):
    events, info = payload_events(summaries, prompt, analysis, budget) if with_payload else ([], {})
    mixed = [*events[:3], *other_events(analysis), *events[3:]]  # payload events need not be contiguous
    span, _ = export_span(mixed, attributes=span_attributes(analysis, info))
    return span, info


def assert_json_round_trip(report: Report) -> str:
    text = report.model_dump_json()

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    json.loads(text, parse_constant=refuse)  # strict JSON: no NaN / Infinity literals
    assert Report.model_validate_json(text) == report
    return text


@pytest.fixture(scope="module")
def run():
    summaries, prompt = synthetic_run()
    return summaries, prompt, analyze(summaries)


def test_report_from_span_rebuilds_the_run(run):
    summaries, prompt, analysis = run
    span, info = finished_span(summaries, prompt, analysis)
    report = Report.from_span(span)

    assert report.name == "text_completion tiny"
    assert report.trace_id == f"{span.context.trace_id:032x}" and report.span_id == f"{span.context.span_id:016x}"
    assert report.start_time_unix_nano == span.start_time and report.end_time_unix_nano == span.end_time
    assert report.model == "tiny-llama" and report.operation == "text_completion" and report.provider == "huggingface"
    assert report.request.max_tokens == 40 and report.request.temperature == 0.7 and report.request.seed == 11
    assert report.usage.input_tokens == 48 and report.usage.output_tokens == 75
    assert report.finish_reasons == ["length", "stop"]
    assert report.capture_mode == "full"
    assert report.risk.score == pytest.approx(analysis.aggregate.risk_score)
    assert report.risk.label == analysis.aggregate.label
    assert report.risk.factors == list(analysis.aggregate.risk_factors)
    assert report.risk.explanation == "numbers only"
    assert report.health.high_entropy_steps == analysis.aggregate.flags.high_entropy_steps
    assert report.early_warning.signals == list(analysis.aggregate.warning_signals)
    assert report.logits.entropy_mean == pytest.approx(analysis.aggregate.entropy_mean)
    assert len(report.fingerprint) == len(analysis.sequences[0].fingerprint)

    assert report.payload.present and report.payload.version == P.PAYLOAD_VERSION
    assert report.payload.bytes == info[P.PAYLOAD_BYTES] and report.payload.truncated == []
    assert report.payload.problems == []
    assert report.dimensions.sequences == 2 and report.dimensions.steps == 40 and report.dimensions.layers == 4
    assert report.dimensions.heads == 4 and report.dimensions.prompt_rows == 2
    assert [e.name for e in report.events] == ["corevital.step", "corevital.step", "gen_ai.evaluation.result"]

    assert report.aggregate.risk_score == pytest.approx(analysis.aggregate.risk_score)
    assert len(report.sequences) == 2
    for i, sequence in enumerate(report.sequences):
        expected = analysis.sequences[i]
        assert sequence.analysis.label == expected.label
        assert sequence.analysis.flagged_steps == expected.flagged_steps
        assert sequence.analysis.narrative == expected.narrative
        assert sequence.steps.token_ids == P.token_pattern(summaries.token_ids)[i].tolist()  # no content capture
        assert sequence.steps.valid == summaries.valid[i].tolist()
        np.testing.assert_allclose(
            np.array(sequence.steps.entropy, dtype=float), summaries.logit("entropy")[i], equal_nan=True, **F16
        )
        np.testing.assert_array_equal(
            np.array(sequence.layers.l2_norm, dtype=float), summaries.hidden_stat("l2_norm")[i]
        )
        assert len(sequence.attention.entropy_mean) == 40 and len(sequence.attention.entropy_mean[0]) == 4
        assert sequence.attention.entropy_mean[1] == [None] * 4  # not observed that step
        assert len(sequence.repetition_cosine) == 40
    assert report.sequences[-1].steps.entropy[-1] is None  # NaN after EOS -> null
    assert report.sequences[0].steps.surprisal[3] == float("inf")

    assert report.prompt.sparse_cap == 16 and len(report.prompt.rows) == 2
    assert len(report.prompt.rows[0].attention) == 4 and len(report.prompt.rows[0].attention[0].weight[0]) == 8
    assert_json_round_trip(report)


def test_report_arrays_round_trip_payload_events(run):
    summaries, prompt, analysis = run
    span, _ = finished_span(summaries, prompt, analysis)
    report = Report.from_span(span)
    assert_summaries_round_trip(summaries, report.to_summaries())
    assert_prompt_round_trip(prompt, report.to_prompt())
    # the same arrays as decoding the events directly, and after a JSON round trip
    direct = decode_payload(span.events).summaries()
    again = Report.model_validate_json(report.model_dump_json()).to_summaries()
    for name in ("logits", "hidden", "attention", "repetition_cosine", "token_ids", "valid"):
        np.testing.assert_array_equal(getattr(again, name), getattr(direct, name))


def test_analysis_can_be_rerun_from_the_report(run):
    summaries, prompt, analysis = run
    span, _ = finished_span(summaries, prompt, analysis)
    report = Report.model_validate_json(Report.from_span(span).model_dump_json())
    rerun = analyze(report.to_summaries())
    for original, again in zip(analysis.sequences, rerun.sequences):
        assert again.label == original.label
        assert again.flags == original.flags
        assert again.risk_score == pytest.approx(original.risk_score, abs=2e-3)


def test_summary_mode_span_has_no_payload(run):
    summaries, prompt, analysis = run
    span, _ = finished_span(summaries, prompt, analysis, with_payload=False)
    report = Report.from_span(span)
    assert not report.payload.present and report.payload.sections == []
    assert report.sequences == [] and report.prompt is None and report.aggregate is None
    assert report.to_summaries() is None and report.to_prompt() is None
    assert report.risk.score == pytest.approx(analysis.aggregate.risk_score)
    assert_json_round_trip(report)


def test_truncated_sections_are_absent_and_listed(run):
    summaries, prompt, analysis = run
    span, info = finished_span(summaries, prompt, analysis, budget=6_000)
    report = Report.from_span(span)
    assert report.payload.truncated == info[P.PAYLOAD_TRUNCATED] != []
    assert "layers" in report.payload.truncated and "layers" not in report.payload.sections
    assert report.sequences and all(s.layers is None for s in report.sequences)
    assert all(s.steps is not None for s in report.sequences)
    rebuilt = report.to_summaries()
    assert np.isnan(rebuilt.hidden).all()  # not observed, never invented
    assert rebuilt.hidden.shape == summaries.hidden.shape
    assert_json_round_trip(report)


def test_non_finite_values_in_events_and_arrays(run):
    summaries, prompt, analysis = run
    report = Report.from_span(finished_span(summaries, prompt, analysis)[0])
    steps = [e for e in report.events if e.name == "corevital.step"]
    assert steps[0].attributes["corevital.step.surprisal"] == "Infinity"  # as OTLP/JSON writes it
    assert steps[1].attributes["corevital.step.entropy"] == "NaN"
    loaded = Report.model_validate_json(assert_json_round_trip(report))
    assert loaded.sequences[0].steps.surprisal[3] == float("inf")
    assert loaded.prompt.rows[0].basin[0][0] == pytest.approx(1e10)


def test_report_from_a_real_capture():
    """A real (tiny) model: prompt telemetry under SDPA, a payload through the SDK, and back."""
    from opentelemetry_instrumentation_corevital.capture import attention_registry
    from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
    from tests.conftest import build_gpt2, prompt_ids

    model = build_gpt2()
    ids = prompt_ids(batch=2, length=12)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    attention_registry.install()
    session = CaptureSession(model, CaptureOptions(max_steps=16, prompt_telemetry=True, input_batch=2))
    try:
        session.attach()
        with session.active():
            output = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False)
    finally:
        session.detach()
        attention_registry.uninstall()
    summaries = session.finish(output, {2})
    prompt = session.prompt_summaries
    analysis = analyze(summaries)
    span, info = finished_span(summaries, prompt, analysis)
    report = Report.from_span(span)
    assert report.payload.problems == [] and info[P.PAYLOAD_TRUNCATED] == []
    assert report.dimensions.model_type == "gpt2" and report.dimensions.layers == 2
    assert len(report.prompt.rows) == 2 and len(report.prompt.rows[1].surprisal) == 11
    assert_summaries_round_trip(summaries, report.to_summaries())
    assert_prompt_round_trip(prompt, report.to_prompt())
    l2 = HIDDEN_STATS.index("l2_norm")
    assert report.sequences[0].layers.l2_norm[0][1] == float(summaries.hidden[0, 0, 1, l2])
    assert report.sequences[1].steps.entropy[0] == pytest.approx(
        float(summaries.logits[1, 0, LOGIT_STATS.index("entropy")]), rel=1e-3
    )
    assert_json_round_trip(report)
