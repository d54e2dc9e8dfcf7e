"""The full CoreVital report of one generate call, rebuilt from its finished span.

`Report.from_span(span)` reads an SDK `ReadableSpan`: the run-level view comes from the span's
attributes (gen_ai.* and corevital.*) and its evaluation event; per-sequence timelines,
per-layer arrays and prompt telemetry come from the full-trace payload events (see
`telemetry/payload.py` and docs/payload.md). Sections the payload does not carry (summary
capture, or dropped by the byte budget) are None and listed in `report.payload.truncated`.

The report is plain pydantic v2 and strict JSON: `Report.model_validate_json(r.model_dump_json())
== r`. Missing values ("not observed", NaN in the summaries) are null; infinities are the
strings "Infinity" / "-Infinity", as in OTLP/JSON. `to_summaries()` and `to_prompt()` give the
numpy arrays back, so the analysis can be rerun offline. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import rag as rag_attributes
from .analysis.health import HealthFlags
from .summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, PromptSummaries, RunSummaries
from .telemetry import attributes as attrs
from .telemetry.payload import (
    PAYLOAD_BYTES,
    PAYLOAD_TRUNCATED,
    PAYLOAD_VERSION_ATTRIBUTE,
    DecodedPayload,
    PayloadError,
    decode_payload,
    is_payload_event,
)

__all__ = [
    "AttentionTimeline",
    "DecodedPayload",
    "Intervention",
    "LayerTimeline",
    "PayloadError",
    "PayloadInfo",
    "PromptSummaries",
    "PromptReport",
    "PromptRow",
    "RagInfo",
    "Report",
    "SequenceReport",
    "StepTimeline",
    "decode_payload",
]

REPORT_VERSION = 1

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

Floats = list[float | None]
Floats2D = list[list[float | None]]


class _Model(BaseModel):
    # strict JSON out (non-finite floats as strings); unknown keys from newer reports are ignored
    model_config = ConfigDict(ser_json_inf_nan="strings", extra="ignore")


# -- run level ----------------------------------------------------------------------------------


class RequestParams(_Model):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    choice_count: int | None = None


class Usage(_Model):
    input_tokens: int | None = None
    output_tokens: int | None = None


class Risk(_Model):
    score: float | None = None
    label: str | None = None  # healthy | warning | critical, from the evaluation event
    factors: list[str] = Field(default_factory=list)
    explanation: str | None = None


class Health(_Model):
    nan_detected: bool | None = None
    inf_detected: bool | None = None
    attention_collapse_detected: bool | None = None
    repetition_loop_detected: bool | None = None
    mid_layer_anomaly_detected: bool | None = None
    high_entropy_steps: int | None = None


class EarlyWarningInfo(_Model):
    failure_risk: float | None = None
    signals: list[str] = Field(default_factory=list)


class LogitsSummary(_Model):
    entropy_mean: float | None = None
    entropy_max: float | None = None
    surprisal_mean: float | None = None
    margin_mean: float | None = None


class PayloadInfo(_Model):
    present: bool = False
    version: int | None = None
    bytes: int | None = None
    sections: list[str] = Field(default_factory=list)
    truncated: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # events that could not be decoded


class Dimensions(_Model):
    sequences: int = 0
    steps: int = 0
    layers: int = 0
    heads: int = 0
    prompt_rows: int = 0
    model_type: str = ""


class EventRecord(_Model):
    """A span event other than the payload (steps, evaluation, sequences, interventions)."""

    name: str
    time_unix_nano: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class RagInfo(_Model):
    """The `corevital.rag.*` attributes recorded by `observe(rag=RagContext(...))`."""

    context_tokens: int | None = None
    document_ids: list[str] = Field(default_factory=list)
    document_titles: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Intervention(_Model):
    """A sequence stopped early by CoreVitalStoppingCriteria (a `corevital.intervention` event)."""

    step: int | None = None
    reason: str | None = None
    sequence: int | None = None


# -- per sequence -----------------------------------------------------------------------------


class RepetitionResult(_Model):
    start_step: int
    end_step: int
    period: int


class SequenceResult(_Model):
    """analysis.SequenceAnalysis of one returned sequence."""

    index: int
    valid_steps: int = 0
    flags: HealthFlags = Field(default_factory=HealthFlags)
    features: dict[str, float | None] = Field(default_factory=dict)
    risk_score: float | None = None
    risk_factors: list[str] = Field(default_factory=list)
    label: str | None = None
    blamed_layers: list[int] = Field(default_factory=list)
    failure_risk: float | None = None
    warning_signals: list[str] = Field(default_factory=list)
    fingerprint: Floats = Field(default_factory=list)
    narrative: str = ""
    repetition: RepetitionResult | None = None
    flagged_steps: list[int] = Field(default_factory=list)
    entropy_mean: float | None = None
    entropy_max: float | None = None
    surprisal_mean: float | None = None
    margin_mean: float | None = None


class AggregateResult(_Model):
    """analysis.RunAggregate: the span-level view of a batch."""

    risk_score: float | None = None
    label: str | None = None
    risk_factors: list[str] = Field(default_factory=list)
    flags: HealthFlags = Field(default_factory=HealthFlags)
    blamed_layers: list[int] = Field(default_factory=list)
    failure_risk: float | None = None
    warning_signals: list[str] = Field(default_factory=list)
    worst_sequence: int | None = None
    entropy_mean: float | None = None
    entropy_max: float | None = None
    surprisal_mean: float | None = None
    margin_mean: float | None = None


class StepTimeline(_Model):
    """Per generated step [S]; entropy and surprisal in bits, from raw logits."""

    token_ids: list[int]
    valid: list[bool]
    entropy: Floats
    margin: Floats
    topk_mass: Floats
    max_prob: Floats
    surprisal: Floats
    nan_count: Floats
    inf_count: Floats


class LayerTimeline(_Model):
    """Newest hidden state per step and decoder layer [S][L]."""

    mean: Floats2D
    std: Floats2D
    l2_norm: Floats2D
    max_abs: Floats2D
    nan_count: Floats2D
    inf_count: Floats2D


class AttentionTimeline(_Model):
    """Newest query's attention per step and layer [S][L] (null: not observed that step)."""

    entropy_min: Floats2D
    entropy_mean: Floats2D
    entropy_max: Floats2D
    concentration_min: Floats2D
    concentration_max: Floats2D
    collapsed_heads: Floats2D
    focused_heads: Floats2D


class SequenceReport(_Model):
    index: int
    analysis: SequenceResult | None = None
    steps: StepTimeline | None = None
    layers: LayerTimeline | None = None
    attention: AttentionTimeline | None = None
    cross_attention: AttentionTimeline | None = None
    repetition_cosine: Floats2D | None = None  # [S][lag]


class SparseLayer(_Model):
    """Strongest prompt attention weights above 0.01, per head (ragged, strongest first)."""

    query: list[list[int]]
    key: list[list[int]]
    weight: list[list[float]]


class PromptRow(_Model):
    surprisal: Floats | None = None  # [P-1] bits
    layer_transformation: Floats | None = None  # [L]
    basin: Floats2D | None = None  # [L][H]
    attention: list[SparseLayer] | None = None  # per layer


class PromptReport(_Model):
    sparse_cap: int | None = None
    rows: list[PromptRow] = Field(default_factory=list)


# -- the report -------------------------------------------------------------------------------


class Report(_Model):
    report_version: int = REPORT_VERSION
    name: str = ""
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    start_time_unix_nano: int | None = None
    end_time_unix_nano: int | None = None
    status: str | None = None
    status_description: str | None = None

    operation: str | None = None
    provider: str | None = None
    model: str | None = None
    request: RequestParams = Field(default_factory=RequestParams)
    usage: Usage = Field(default_factory=Usage)
    finish_reasons: list[str] = Field(default_factory=list)
    error_type: str | None = None
    corevital_error: str | None = None

    capture_mode: str | None = None
    risk: Risk = Field(default_factory=Risk)
    health: Health = Field(default_factory=Health)
    layers_blamed: list[int] = Field(default_factory=list)
    early_warning: EarlyWarningInfo = Field(default_factory=EarlyWarningInfo)
    logits: LogitsSummary = Field(default_factory=LogitsSummary)
    prompt_hash: str | None = None
    fingerprint: Floats = Field(default_factory=list)
    narrative: str | None = None
    attention_unavailable_reason: str | None = None
    rag: RagInfo | None = None
    interventions: list[Intervention] = Field(default_factory=list)

    payload: PayloadInfo = Field(default_factory=PayloadInfo)
    dimensions: Dimensions = Field(default_factory=Dimensions)
    aggregate: AggregateResult | None = None
    sequences: list[SequenceReport] = Field(default_factory=list)
    prompt: PromptReport | None = None
    events: list[EventRecord] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)  # every span attribute, as recorded

    @classmethod
    def from_span(cls, span) -> "Report":
        """Rebuild the report from a finished SDK ReadableSpan (attributes and events)."""
        context = getattr(span, "context", None)
        parent = getattr(span, "parent", None)
        status = getattr(span, "status", None)
        return cls.from_parts(
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

    @classmethod
    def from_parts(cls, *, name: str, attributes: Mapping[str, Any], events: Sequence, **span_fields) -> "Report":
        """Same as from_span, from the pieces (events: SDK events or (name, attributes) pairs)."""
        a = dict(attributes)
        payload_events = [e for e in events if is_payload_event(_event_name(e))]
        other_events = [e for e in events if not is_payload_event(_event_name(e))]
        decoded = decode_payload(payload_events)
        evaluation = _evaluation(other_events)
        report = cls(
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
                nan_detected=_bool(a.get(attrs.HEALTH_NAN)),
                inf_detected=_bool(a.get(attrs.HEALTH_INF)),
                attention_collapse_detected=_bool(a.get(attrs.HEALTH_ATTENTION_COLLAPSE)),
                repetition_loop_detected=_bool(a.get(attrs.HEALTH_REPETITION_LOOP)),
                mid_layer_anomaly_detected=_bool(a.get(attrs.HEALTH_MID_LAYER_ANOMALY)),
                high_entropy_steps=_int(a.get(attrs.HEALTH_HIGH_ENTROPY_STEPS)),
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

    # -- back to arrays ---------------------------------------------------------------------

    def to_summaries(self) -> RunSummaries | None:
        """RunSummaries rebuilt from the per-sequence timelines (None without step timelines)."""
        if not self.sequences or any(s.steps is None for s in self.sequences):
            return None
        steps = [s.steps for s in self.sequences]
        logits = np.stack([_columns_of(t, LOGIT_STATS) for t in steps])
        n, s = logits.shape[:2]
        layers = self.dimensions.layers

        def per_layer(attribute: str, names: Sequence[str]) -> np.ndarray | None:
            timelines = [getattr(seq, attribute) for seq in self.sequences]
            if any(t is None for t in timelines):
                return None
            return np.stack([_layer_columns_of(t, names, s, layers) for t in timelines])

        hidden = per_layer("layers", HIDDEN_STATS)
        cosine = [seq.repetition_cosine for seq in self.sequences]
        return RunSummaries(
            logits=logits,
            token_ids=np.array([t.token_ids for t in steps], np.int64).reshape(n, s),
            valid=np.array([t.valid for t in steps], bool).reshape(n, s),
            hidden=hidden if hidden is not None else np.full((n, s, layers, len(HIDDEN_STATS)), np.nan, np.float32),
            attention=per_layer("attention", ATTENTION_STATS),
            cross_attention=per_layer("cross_attention", ATTENTION_STATS),
            repetition_cosine=None if any(c is None for c in cosine) else np.stack([_floats_array(c) for c in cosine]),
            num_heads=self.dimensions.heads,
            model_type=self.dimensions.model_type,
            attention_unavailable_reason=self.attention_unavailable_reason,
        )

    def to_prompt(self) -> PromptSummaries | None:
        """Prompt telemetry as arrays, laid out like capture's PromptSummaries."""
        if self.prompt is None:
            return None
        out = PromptSummaries(sparse_cap=self.prompt.sparse_cap)
        for row in self.prompt.rows:
            if row.surprisal is not None:
                out.surprisal.append(_floats_array(row.surprisal))
            if row.layer_transformation is not None:
                out.layer_transformation.append(_floats_array(row.layer_transformation))
            if row.basin is not None:
                out.basin.append(_floats_array(row.basin))
            if row.attention is not None:
                out.sparse.append([_dense_sparse(layer) for layer in row.attention])
        return out


# -- filling the report from the payload --------------------------------------------------------


def _payload_info(a: Mapping[str, Any], decoded: DecodedPayload, present: bool) -> PayloadInfo:
    truncated = a.get(PAYLOAD_TRUNCATED, decoded.header.get("corevital.payload.truncated", ()))
    version = a.get(PAYLOAD_VERSION_ATTRIBUTE, decoded.version)
    return PayloadInfo(
        present=present,
        version=_int(version),
        bytes=_int(a.get(PAYLOAD_BYTES)),
        sections=decoded.sections,
        truncated=[str(v) for v in truncated],
        problems=list(decoded.problems),
    )


def _fill_from_payload(report: Report, decoded: DecodedPayload) -> None:
    header = decoded.header
    report.dimensions = Dimensions(
        sequences=int(header.get("corevital.payload.sequences", 0)),
        steps=int(header.get("corevital.payload.steps", 0)),
        layers=int(header.get("corevital.payload.layers", 0)),
        heads=int(header.get("corevital.payload.heads", 0)),
        prompt_rows=int(header.get("corevital.payload.prompt_rows", 0)),
        model_type=str(header.get("corevital.payload.model_type", "")),
    )
    if report.attention_unavailable_reason is None:
        report.attention_unavailable_reason = _str(header.get("corevital.payload.attention_unavailable_reason"))
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


def _dense_sparse(layer: SparseLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    heads = len(layer.weight)
    width = max((len(w) for w in layer.weight), default=0)
    query = np.zeros((heads, width), np.int64)
    key = np.zeros((heads, width), np.int64)
    weight = np.zeros((heads, width), np.float32)
    for h in range(heads):
        count = len(layer.weight[h])
        query[h, :count], key[h, :count], weight[h, :count] = layer.query[h], layer.key[h], layer.weight[h]
    return query, key, weight


def _columns_of(timeline: StepTimeline, names: Sequence[str]) -> np.ndarray:
    return np.stack([_floats_array(getattr(timeline, name)) for name in names], axis=-1).reshape(-1, len(names))


def _layer_columns_of(timeline, names: Sequence[str], steps: int, layers: int) -> np.ndarray:
    columns = [_floats_array(getattr(timeline, name)).reshape(steps, layers) for name in names]
    return np.stack(columns, axis=-1)


# -- value conversion ---------------------------------------------------------------------------


def _nested(array: np.ndarray):
    """Nested lists of Python floats, NaN as None (float16 values are exact in float64)."""
    values = np.asarray(array, np.float64)
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out.tolist()


def _floats_array(values) -> np.ndarray:
    return np.array(values, dtype=np.float64).astype(np.float32) if values is not None else None


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
        if _event_name(event) != attrs.INTERVENTION_EVENT:
            continue
        values = (event[1] if isinstance(event, tuple) else event.attributes) or {}
        found.append(Intervention(
            step=_int(values.get(attrs.INTERVENTION_STEP)),
            reason=_str(values.get(attrs.INTERVENTION_REASON)),
            sequence=_int(values.get(attrs.INTERVENTION_SEQUENCE)),
        ))
    return found


def _event_name(event) -> str:
    return event[0] if isinstance(event, tuple) else event.name


def _event_record(event) -> EventRecord:
    if isinstance(event, tuple):
        name, attributes, timestamp = event[0], event[1] or {}, None
    else:
        name, attributes, timestamp = event.name, event.attributes or {}, getattr(event, "timestamp", None)
    return EventRecord(
        name=name,
        time_unix_nano=timestamp,
        attributes={key: _json_value(value) for key, value in attributes.items()},
    )


def _evaluation(events) -> dict:
    for event in events:
        if _event_name(event) != attrs.EVALUATION_EVENT:
            continue
        attributes = event[1] if isinstance(event, tuple) else event.attributes
        if (attributes or {}).get(_EVALUATION_NAME, attrs.EVALUATION_NAME) == attrs.EVALUATION_NAME:
            return dict(attributes or {})
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
