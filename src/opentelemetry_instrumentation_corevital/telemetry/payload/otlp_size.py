"""Exact size of span events inside an OTLP protobuf Span message.

The payload's byte budget is spent in these bytes, so `corevital.payload.bytes` is what the
exporter really sends for the payload events; tests/telemetry/test_payload.py checks it
against the SDK's own protobuf encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

def _varint_size(value: int) -> int:
    if value < 0:
        return 10
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _field_size(length: int) -> int:
    """A length-delimited field with a one-byte tag (field numbers below 16)."""
    return 1 + _varint_size(length) + length


def _any_value_size(value) -> int:
    if isinstance(value, bool):
        return 2
    if isinstance(value, int):
        return 1 + _varint_size(value)
    if isinstance(value, float):
        return 9
    if isinstance(value, str):
        return _field_size(_utf8_length(value))
    if isinstance(value, bytes):
        return _field_size(len(value))
    if isinstance(value, Mapping):
        return _field_size(sum(_field_size(_key_value_size(k, v)) for k, v in value.items()))
    if isinstance(value, Sequence):
        return _field_size(sum(_field_size(_any_value_size(v)) for v in value))
    raise TypeError(f"not an attribute value: {type(value).__name__}")


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))  # isascii() costs no pass over the text


def _key_value_size(key: str, value) -> int:
    return _field_size(_utf8_length(key)) + _field_size(_any_value_size(value))


def event_size(name: str, attributes: Mapping[str, Any]) -> int:
    """Exact size of this event inside an OTLP Span message (Span.events entry, with its tag).

    Counts a non-zero time_unix_nano (fixed64) and no dropped attributes.
    """
    body = 9 + _field_size(_utf8_length(name))
    body += sum(_field_size(_key_value_size(key, value)) for key, value in attributes.items())
    return _field_size(body)
