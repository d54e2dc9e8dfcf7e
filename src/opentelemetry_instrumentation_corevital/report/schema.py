"""The full CoreVital report of one generate call: its schema, plain pydantic v2.

The report is strict JSON: `Report.model_validate_json(r.model_dump_json()) == r`. Missing
values ("not observed", NaN in the summaries) are null; infinities are the strings
"Infinity" / "-Infinity", as in OTLP/JSON. Sections the payload does not carry (summary
capture, or dropped by the byte budget) are None and listed in `report.payload.truncated`.

This module holds the data only: `reader.py` builds a Report from a span, `arrays.py` turns
one back into numpy arrays. Report's `from_span`, `from_parts`, `to_summaries` and
`to_prompt` are the public shortcuts to them, imported when called, so the schema never
depends on the code that fills it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..health_vocabulary import BOOLEAN_FLAGS, COUNT_FLAGS, HealthFlags

if TYPE_CHECKING:
    from ..summaries import PromptSummaries, RunSummaries

REPORT_VERSION = 1

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


# The span's health flags: one field per HealthFlags field, in display order (None: not recorded).
Health = create_model(
    "Health",
    __base__=_Model,
    **{name: (bool | None, None) for name in BOOLEAN_FLAGS},
    **{name: (int | None, None) for name in COUNT_FLAGS},
)


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
        from .reader import report_from_span

        return report_from_span(span)

    @classmethod
    def from_parts(cls, *, name: str, attributes: Mapping[str, Any], events: Sequence, **span_fields) -> "Report":
        """Same as from_span, from the pieces (events: SDK events or (name, attributes) pairs)."""
        from .reader import report_from_parts

        return report_from_parts(name=name, attributes=attributes, events=events, **span_fields)

    def to_summaries(self) -> "RunSummaries | None":
        """RunSummaries rebuilt from the per-sequence timelines (None without step timelines)."""
        from .arrays import summaries_of

        return summaries_of(self)

    def to_prompt(self) -> "PromptSummaries | None":
        """Prompt telemetry as arrays, laid out like capture's PromptSummaries."""
        from .arrays import prompt_of

        return prompt_of(self)
