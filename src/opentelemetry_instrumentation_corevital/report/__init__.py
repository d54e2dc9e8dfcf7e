"""The full CoreVital report of one generate call, rebuilt from its finished span.

`Report.from_span(span)` reads an SDK `ReadableSpan`; `report.to_summaries()` and
`report.to_prompt()` give the numpy arrays back, so the analysis can be rerun offline.

Modules: `schema` (the pydantic models, data only), `reader` (span → Report), `arrays`
(Report → RunSummaries / PromptSummaries), `views` (what the CLI and the HTML report both
show: step series, raised flags, RAG context). No torch here.
"""

from ..telemetry.payload import DecodedPayload, PayloadError, decode_payload
from .schema import (
    AttentionTimeline,
    Intervention,
    LayerTimeline,
    PayloadInfo,
    PromptReport,
    PromptRow,
    RagInfo,
    Report,
    SequenceReport,
    StepTimeline,
)

__all__ = [
    "AttentionTimeline",
    "DecodedPayload",
    "Intervention",
    "LayerTimeline",
    "PayloadError",
    "PayloadInfo",
    "PromptReport",
    "PromptRow",
    "RagInfo",
    "Report",
    "SequenceReport",
    "StepTimeline",
    "decode_payload",
]
