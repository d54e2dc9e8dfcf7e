"""Reading finished spans in tests: message attributes as plain data, every string a span carries."""

from __future__ import annotations

import json


def messages(value) -> list[dict]:
    """A message attribute as plain lists and dicts: spans carry JSON strings (what Langfuse and
    Phoenix parse), log events structured values (the SDK keeps tuples)."""
    def plain(item):
        if isinstance(item, dict):
            return {key: plain(inner) for key, inner in item.items()}
        if isinstance(item, (tuple, list)):
            return [plain(inner) for inner in item]
        return item

    return json.loads(value) if isinstance(value, str) else plain(value)


def span_strings(span) -> list[str]:
    """Every string carried by the span: attribute values and event names/attribute values."""
    found = []

    def add(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)

    for value in span.attributes.values():
        add(value)
    for event in span.events:
        found.append(event.name)
        for key, value in (event.attributes or {}).items():
            # base64 of numeric arrays can spell anything; tests/telemetry/test_payload.py decodes them
            if key != "corevital.payload.data":
                add(value)
    return found
