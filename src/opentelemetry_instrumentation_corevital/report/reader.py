"""A finished span → Report: the run-level view from its attributes, the rest from its payload.

The span's attributes (gen_ai.* and corevital.*) and its evaluation event give the run-level
view; per-sequence timelines, per-layer arrays and prompt telemetry come from the full-trace
payload events (`telemetry/payload/`, docs/payload.md), whose names this module imports
from the payload's format rather than spelling them. Events may be SDK span events or
(name, attributes) pairs. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import rag as rag_attributes
from ..health_vocabulary import BOOLEAN_FLAGS, COUNT_FLAGS, flag_attribute
from ..summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, RunSummaries
from ..telemetry import attributes as attrs
from ..telemetry.events import event_parts
from ..telemetry.payload import DecodedPayload, decode_payload, is_payload_event
from ..telemetry.payload import format as payload_format
from .schema import (
    AggregateResult,
    AttentionTimeline,
    Dimensions,
    EarlyWarningInfo,
    EventRecord,
    Health,
    Intervention,
    LayerTimeline,
    LogitsSummary,
    PayloadInfo,
    PromptReport,
    PromptRow,
    RagInfo,
    Report,
    RequestParams,
    Risk,
    SequenceReport,
    SequenceResult,
    SparseLayer,
    StepTimeline,
    Usage,
)

# gen_ai.* names (semconv constants, spelled out so the report does not need the incubating module)
_OPERATION = "gen_ai.operation.name"
_PROVIDER = "gen_ai.provider.name"
_MODEL = "gen_ai.request.model"
_MAX_TOKENS = "gen_ai.request.max_tokens"
_TEMPERATURE = "gen_ai.request.temperature"
_TOP_P = "gen_ai.request.top_p"
_TOP_K = "gen_ai.request.top_k"
_SEED = "gen_ai.request.seed"
_CHOICE_COUNT = "gen_ai.request.choice.count"
_INPUT_TOKENS = "gen_ai.usage.input_tokens"
_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
_FINISH_REASONS = "gen_ai.response.finish_reasons"
_ERROR_TYPE = "error.type"
_EVALUATION_NAME = "gen_ai.evaluation.name"
_EVALUATION_SCORE = "gen_ai.evaluation.score.value"
_EVALUATION_LABEL = "gen_ai.evaluation.score.label"
_EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"


def report_from_span(span) -> Report:
    """Rebuild the report from a finished SDK ReadableSpan (attributes and events)."""
    context = getattr(span, "context", None)
    parent = getattr(span, "parent", None)
    status = getattr(span, "status", None)
    return report_from_parts(
        name=getattr(span, "name", ""),
        attributes=getattr(span, "attributes", None) or {},
        events=getattr(span, "events", None) or (),
        trace_id=f"{context.trace_id:032x}" if context is not None else None,
        span_id=f"{context.span_id:016x}" if context is not None else None,
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        start_time_unix_nano=getattr(span, "start_time", None),
        end_time_unix_nano=getattr(span, "end_time", None),
        status=status.status_code.name if status is not None else None,
        status_description=getattr(status, "description", None),
    )

def report_from_parts(*, name: str, attributes: Mapping[str, Any], events: Sequence, **span_fields) -> Report:
    """Same as from_span, from the pieces (events: SDK events or (name, attributes) pairs)."""
    a = dict(attributes)
    payload_events = [e for e in events if is_payload_event(event_parts(e)[0])]
    other_events = [e for e in events if not is_payload_event(event_parts(e)[0])]
    decoded = decode_payload(payload_events)
    evaluation = _evaluation(other_events)
    report = Report(
        name=name,
        **span_fields,
        operation=_str(a.get(_OPERATION)),
        provider=_str(a.get(_PROVIDER)),
        model=_str(a.get(_MODEL)),
        request=RequestParams(
            max_tokens=_int(a.get(_MAX_TOKENS)),
            temperature=_float(a.get(_TEMPERATURE)),
            top_p=_float(a.get(_TOP_P)),
            top_k=_int(a.get(_TOP_K)),
            seed=_int(a.get(_SEED)),
            choice_count=_int(a.get(_CHOICE_COUNT)),
        ),
        usage=Usage(input_tokens=_int(a.get(_INPUT_TOKENS)), output_tokens=_int(a.get(_OUTPUT_TOKENS))),
        finish_reasons=[str(v) for v in a.get(_FINISH_REASONS, ())],
        error_type=_str(a.get(_ERROR_TYPE)),
        corevital_error=_str(a.get(attrs.ERROR)),
        capture_mode=_str(a.get(attrs.CAPTURE_MODE)),
        risk=Risk(
            score=_float(a.get(attrs.RISK_SCORE, evaluation.get(_EVALUATION_SCORE))),
            label=_str(a.get(attrs.RISK_LABEL, evaluation.get(_EVALUATION_LABEL))),
            factors=[str(v) for v in a.get(attrs.RISK_FACTORS, ())],
            explanation=_str(evaluation.get(_EVALUATION_EXPLANATION, a.get(attrs.NARRATIVE))),
        ),
        health=Health(
            **{name: _bool(a.get(flag_attribute(name))) for name in BOOLEAN_FLAGS},
            **{name: _int(a.get(flag_attribute(name))) for name in COUNT_FLAGS},
        ),
        layers_blamed=[int(v) for v in a.get(attrs.LAYERS_BLAMED, ())],
        early_warning=EarlyWarningInfo(
            failure_risk=_float(a.get(attrs.EARLY_WARNING_FAILURE_RISK)),
            signals=[str(v) for v in a.get(attrs.EARLY_WARNING_SIGNALS, ())],
        ),
        logits=LogitsSummary(
            entropy_mean=_float(a.get(attrs.LOGITS_ENTROPY_MEAN)),
            entropy_max=_float(a.get(attrs.LOGITS_ENTROPY_MAX)),
            surprisal_mean=_float(a.get(attrs.LOGITS_SURPRISAL_MEAN)),
            margin_mean=_float(a.get(attrs.LOGITS_MARGIN_MEAN)),
        ),
        prompt_hash=_str(a.get(attrs.PROMPT_HASH)),
        fingerprint=[_float(v) for v in a.get(attrs.FINGERPRINT, ())],
        narrative=_str(a.get(attrs.NARRATIVE)),
        attention_unavailable_reason=_str(a.get(attrs.ATTENTION_UNAVAILABLE_REASON)),
        rag=_rag(a),
        interventions=_interventions(other_events),
        payload=_payload_info(a, decoded, bool(payload_events)),
        events=[_event_record(e) for e in other_events],
        attributes={key: _json_value(value) for key, value in a.items()},
    )
    _fill_from_payload(report, decoded)
    return report


# -- filling the report from the payload --------------------------------------------------------


def _payload_info(a: Mapping[str, Any], decoded: DecodedPayload, present: bool) -> PayloadInfo:
    truncated = a.get(payload_format.PAYLOAD_TRUNCATED, decoded.header.get(payload_format.TRUNCATED, ()))
    version = a.get(payload_format.PAYLOAD_VERSION_ATTRIBUTE, decoded.version)
    return PayloadInfo(
        present=present,
        version=_int(version),
        bytes=_int(a.get(payload_format.PAYLOAD_BYTES)),
        sections=decoded.sections,
        truncated=[str(v) for v in truncated],
        problems=list(decoded.problems),
    )


def _fill_from_payload(report: Report, decoded: DecodedPayload) -> None:
    header = decoded.header
    report.dimensions = Dimensions(
        sequences=int(header.get(payload_format.SEQUENCES, 0)),
        steps=int(header.get(payload_format.STEPS, 0)),
        layers=int(header.get(payload_format.LAYERS, 0)),
        heads=int(header.get(payload_format.HEADS, 0)),
        prompt_rows=int(header.get(payload_format.PROMPT_ROWS, 0)),
        model_type=str(header.get(payload_format.MODEL_TYPE, "")),
    )
    if report.attention_unavailable_reason is None:
        report.attention_unavailable_reason = _str(header.get(payload_format.UNAVAILABLE_REASON))
    analysis = decoded.analysis or {}
    results = {int(item["index"]): SequenceResult.model_validate(item) for item in analysis.get("sequences", ())}
    if analysis.get("aggregate") is not None:
        report.aggregate = AggregateResult.model_validate(analysis["aggregate"])

    summaries = decoded.summaries()
    count = report.dimensions.sequences or (summaries.num_sequences if summaries else len(results))
    sequences = []
    for i in range(count):
        sequence = SequenceReport(index=i, analysis=results.get(i))
        if summaries is not None:
            sequence.steps = _step_timeline(summaries, i)
            if "layers" in decoded.sections:
                sequence.layers = LayerTimeline(
                    **{name: _nested(summaries.hidden[i, ..., j]) for j, name in enumerate(HIDDEN_STATS)}
                )
            if summaries.attention is not None:
                sequence.attention = _attention_timeline(summaries.attention[i])
            if summaries.cross_attention is not None:
                sequence.cross_attention = _attention_timeline(summaries.cross_attention[i])
            if summaries.repetition_cosine is not None:
                sequence.repetition_cosine = _nested(summaries.repetition_cosine[i])
        sequences.append(sequence)
    report.sequences = sequences

    prompt = decoded.prompt()
    if prompt is not None:
        rows = max(len(prompt.surprisal), len(prompt.layer_transformation), len(prompt.basin), len(prompt.sparse))
        report.prompt = PromptReport(
            sparse_cap=prompt.sparse_cap,
            rows=[
                PromptRow(
                    surprisal=_nested(prompt.surprisal[r]) if r < len(prompt.surprisal) else None,
                    layer_transformation=(
                        _nested(prompt.layer_transformation[r]) if r < len(prompt.layer_transformation) else None
                    ),
                    basin=_nested(prompt.basin[r]) if r < len(prompt.basin) else None,
                    attention=[_sparse_layer(*layer) for layer in prompt.sparse[r]] if r < len(prompt.sparse) else None,
                )
                for r in range(rows)
            ],
        )


def _step_timeline(summaries: RunSummaries, i: int) -> StepTimeline:
    logits = summaries.logits[i]
    return StepTimeline(
        token_ids=[int(v) for v in summaries.token_ids[i]],
        valid=[bool(v) for v in summaries.valid[i]],
        **{name: _nested(logits[:, j]) for j, name in enumerate(LOGIT_STATS)},
    )


def _attention_timeline(array: np.ndarray) -> AttentionTimeline:
    return AttentionTimeline(**{name: _nested(array[..., j]) for j, name in enumerate(ATTENTION_STATS)})


def _sparse_layer(query: np.ndarray, key: np.ndarray, weight: np.ndarray) -> SparseLayer:
    kept = weight > 0
    return SparseLayer(
        query=[[int(v) for v in q[k]] for q, k in zip(query, kept)],
        key=[[int(v) for v in q[k]] for q, k in zip(key, kept)],
        weight=[[float(v) for v in w[k]] for w, k in zip(weight, kept)],
    )


# -- value conversion ---------------------------------------------------------------------------


def _nested(array: np.ndarray):
    """Nested lists of Python floats, NaN as None (float16 values are exact in float64)."""
    values = np.asarray(array, np.float64)
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out.tolist()


def _json_value(value):
    """An attribute value as strict-JSON-safe data; non-finite doubles as OTLP/JSON strings."""
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _rag(a: Mapping[str, Any]) -> RagInfo | None:
    if not any(key.startswith(rag_attributes.PREFIX) for key in a):
        return None
    metadata = rag_attributes.METADATA_PREFIX
    return RagInfo(
        context_tokens=_int(a.get(rag_attributes.CONTEXT_TOKENS)),
        document_ids=[str(v) for v in a.get(rag_attributes.DOCUMENT_IDS, ())],
        document_titles=[str(v) for v in a.get(rag_attributes.DOCUMENT_TITLES, ())],
        metadata={key[len(metadata):]: _json_value(value) for key, value in a.items() if key.startswith(metadata)},
    )


def _interventions(events) -> list[Intervention]:
    found = []
    for event in events:
        name, values = event_parts(event)
        if name != attrs.INTERVENTION_EVENT:
            continue
        found.append(Intervention(
            step=_int(values.get(attrs.INTERVENTION_STEP)),
            reason=_str(values.get(attrs.INTERVENTION_REASON)),
            sequence=_int(values.get(attrs.INTERVENTION_SEQUENCE)),
        ))
    return found


def _event_record(event) -> EventRecord:
    name, attributes = event_parts(event)
    return EventRecord(
        name=name,
        time_unix_nano=getattr(event, "timestamp", None),  # (name, attributes) pairs carry no time
        attributes={key: _json_value(value) for key, value in attributes.items()},
    )


def _evaluation(events) -> dict:
    for event in events:
        name, attributes = event_parts(event)
        if name == attrs.EVALUATION_EVENT and attributes.get(_EVALUATION_NAME, attrs.EVALUATION_NAME) == attrs.EVALUATION_NAME:
            return dict(attributes)
    return {}


def _str(value) -> str | None:
    return None if value is None else str(value)


def _int(value) -> int | None:
    return None if value is None or isinstance(value, bool) else int(value)


def _float(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _bool(value) -> bool | None:
    return None if value is None else bool(value)
