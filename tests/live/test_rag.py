"""RagContext: validated construction and the corevital.rag.* span attributes."""

from __future__ import annotations

import json

import pytest

from opentelemetry_instrumentation_corevital import RagContext, observe
from tests.conftest import prompt_ids

FULL = {
    "context_tokens": 812,
    "document_ids": ["kb-17", "kb-4"],
    "document_titles": ["Returns policy", "Shipping"],
    "metadata": {"retriever": "bm25", "top_k": 2, "min_score": 0.41, "reranked": True},
}


def test_from_dict_keeps_every_value():
    rag = RagContext.from_dict(FULL)
    assert rag.context_tokens == 812
    assert rag.document_ids == ("kb-17", "kb-4")
    assert rag.document_titles == ("Returns policy", "Shipping")
    assert dict(rag.metadata) == FULL["metadata"]
    assert RagContext.from_dict({}) == RagContext()


@pytest.mark.parametrize("data, message", [
    ({"documents": []}, "Unknown RagContext key 'documents'"),
    ({"context_tokens": "812"}, "'context_tokens' must be a non-negative int"),
    ({"context_tokens": True}, "'context_tokens' must be a non-negative int"),
    ({"document_ids": "kb-17"}, "'document_ids' must be a list of str"),
    ({"document_titles": [1]}, "'document_titles' must be a list of str"),
    ({"metadata": {"scores": [0.4, 0.3]}}, "'metadata.scores' must be a str, int, float or bool"),
    ({"metadata": "bm25"}, "'metadata' must be a mapping"),
    (["kb-17"], "must be a JSON object"),
])
def test_bad_input_names_the_key_and_the_expected_type(data, message):
    with pytest.raises(ValueError, match=message):
        RagContext.from_dict(data)


def test_from_json_file(tmp_path):
    path = tmp_path / "rag.json"
    path.write_text(json.dumps(FULL))
    assert RagContext.from_json_file(path) == RagContext.from_dict(FULL)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        RagContext.from_json_file(path)


def test_observe_records_the_rag_context_on_the_span(models, telemetry, instrument):
    instrument()
    with observe(rag=RagContext.from_dict(FULL)) as run:
        models["llama"].generate(prompt_ids(), max_new_tokens=3, do_sample=False)
    attributes = telemetry.only_span().attributes
    assert attributes["corevital.rag.context_tokens"] == 812
    assert attributes["corevital.rag.document_ids"] == ("kb-17", "kb-4")
    assert attributes["corevital.rag.document_titles"] == ("Returns policy", "Shipping")
    assert attributes["corevital.rag.metadata.retriever"] == "bm25"
    assert attributes["corevital.rag.metadata.top_k"] == 2
    assert attributes["corevital.rag.metadata.min_score"] == 0.41
    assert attributes["corevital.rag.metadata.reranked"] is True
    assert run.risk is not None and run.steps == []  # no listener: no per-step work


def test_observe_refuses_a_dict_for_rag():
    with pytest.raises(TypeError, match="RagContext.from_dict"):
        with observe(rag=FULL):
            pass


def test_report_carries_the_rag_context_and_interventions(successor_model, telemetry, instrument):
    from opentelemetry_instrumentation_corevital import CoreVitalStoppingCriteria
    from opentelemetry_instrumentation_corevital.report import Report

    from .conftest import LOOP_START_TOKEN, prompt_ending_in

    instrument()
    with observe(rag=RagContext.from_dict(FULL)) as run:
        successor_model.generate(prompt_ending_in(LOOP_START_TOKEN), max_new_tokens=28, do_sample=False,
                                 stopping_criteria=[CoreVitalStoppingCriteria()])
    report = Report.from_span(telemetry.only_span())
    assert report.rag.context_tokens == 812
    assert report.rag.document_ids == ["kb-17", "kb-4"]
    assert report.rag.metadata == FULL["metadata"]
    (intervention,) = report.interventions
    assert (intervention.sequence, intervention.step, intervention.reason) == (
        0, run.interventions[0].step, "repetition_loop"
    )
    assert Report.model_validate_json(report.model_dump_json()) == report
    assert run.report == report
