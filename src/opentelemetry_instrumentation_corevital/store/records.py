"""A finished span as a `runs` row, and back to a `Report`.

The span is kept whole (attributes, events with the full-trace payload, resource, scope) in
JSON, so nothing the instrumentation recorded is lost; the other columns are derived from
`Report.from_span` for fast listing. Non-finite doubles survive as JSON NaN / Infinity
(Python's json reads them back). Beside the span, the document may hold the run's text token
by token under `TOKEN_TEXT_KEY`, which `corevital run` keeps in this local file only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..health_vocabulary import BOOLEAN_FLAGS, DISPLAY_ORDER, short_flag_name
from ..telemetry import attributes as attrs

if TYPE_CHECKING:
    from ..report import Report

SCOPE_NAME = "opentelemetry_instrumentation_corevital"

#: the store's flag name -> its boolean column (the HealthFlags field), in display order
FLAG_FIELDS = {short_flag_name(name): name for name in BOOLEAN_FLAGS}
#: sha256 of the whitespace-normalised prompt text alone (no model id), so that runs of
#: different models on the same prompt can be compared; set by `corevital run`
PROMPT_TEXT_HASH = "corevital.prompt.text_hash"
FLAG_NAMES = tuple(short_flag_name(name) for name in DISPLAY_ORDER)
#: document key of the run's text token by token, which `corevital run` keeps locally
#: (html_report.tokens.TokenText); never part of the exported span
TOKEN_TEXT_KEY = "token_text"


def is_corevital_span(span) -> bool:
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None and scope.name.startswith(SCOPE_NAME):
        return True
    return attrs.CAPTURE_MODE in (span.attributes or {})


def span_document(span) -> dict[str, Any]:
    context, parent, status = span.context, span.parent, span.status
    resource = getattr(span, "resource", None)
    scope = getattr(span, "instrumentation_scope", None)
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": status.status_code.name if status is not None else None,
        "status_description": status.description if status is not None else None,
        "attributes": _plain(span.attributes),
        "events": [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": _plain(e.attributes)} for e in span.events
        ],
        "resource": _plain(resource.attributes) if resource is not None else {},
        "scope": {"name": scope.name, "version": scope.version} if scope is not None else None,
    }


def report_of_document(document: dict[str, Any]) -> Report:
    # imported here: the report model takes longer to import than `corevital runs list` takes to run
    from opentelemetry.sdk.trace import Event

    from ..report import Report

    return Report.from_parts(
        name=document["name"],
        attributes=document["attributes"],
        events=[Event(e["name"], e["attributes"], e["time_unix_nano"]) for e in document["events"]],
        trace_id=document["trace_id"],
        span_id=document["span_id"],
        parent_span_id=document["parent_span_id"],
        start_time_unix_nano=document["start_time_unix_nano"],
        end_time_unix_nano=document["end_time_unix_nano"],
        status=document["status"],
        status_description=document["status_description"],
    )


def run_row(document: dict[str, Any]) -> dict[str, Any]:
    from ..report.views import raised_flags

    report = report_of_document(document)
    flags = raised_flags(report)
    return {
        "run_id": document["span_id"],
        "trace_id": document["trace_id"],
        "span_name": document["name"],
        "service_name": document["resource"].get("service.name"),
        "model": report.model,
        "prompt_hash": report.prompt_hash,
        "prompt_key": document["attributes"].get(PROMPT_TEXT_HASH) or report.prompt_hash,
        "capture_mode": report.capture_mode,
        "risk_score": report.risk.score,
        "risk_label": report.risk.label,
        "flags": json.dumps(flags),
        **{field: int(name in flags) for name, field in FLAG_FIELDS.items()},
        "high_entropy_steps": report.health.high_entropy_steps,
        "entropy_mean": report.logits.entropy_mean,
        "surprisal_mean": report.logits.surprisal_mean,
        "margin_mean": report.logits.margin_mean,
        "input_tokens": report.usage.input_tokens,
        "output_tokens": report.usage.output_tokens,
        "has_payload": int(report.payload.present),
        "status": report.status,
        "start_time_unix_nano": report.start_time_unix_nano,
        "end_time_unix_nano": report.end_time_unix_nano,
        "span_json": json.dumps(document, separators=(",", ":")),
    }


def _plain(attributes) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in (attributes or {}).items()}
