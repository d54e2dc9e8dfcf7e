"""Retrieval context of a RAG generation, recorded on the generate span.

`RagContext` says what was put into the prompt: how many tokens of retrieved context, which
documents, and free-form retrieval metadata (retriever name, top-k, scores). Pass it to
`corevital.observe(rag=...)`; the CLI reads the same shape from a JSON file
(`RagContext.from_json_file`). Only ids, titles and scalar metadata are recorded, never the
documents' text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

PREFIX = "corevital.rag."
CONTEXT_TOKENS = PREFIX + "context_tokens"
DOCUMENT_IDS = PREFIX + "document_ids"
DOCUMENT_TITLES = PREFIX + "document_titles"
METADATA_PREFIX = PREFIX + "metadata."

_KEYS = ("context_tokens", "document_ids", "document_titles", "metadata")
_Scalar = str | int | float | bool


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_context_tokens(value) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise ValueError(f"RagContext key 'context_tokens' must be a non-negative int or None, got {value!r}")
    return value


def _check_strings(key: str, value) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"RagContext key {key!r} must be a list of str, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"RagContext key {key!r} must be a list of str, got an item {item!r}")
    return tuple(value)


def _check_metadata(value) -> Mapping[str, _Scalar]:
    if not isinstance(value, Mapping):
        raise ValueError(f"RagContext key 'metadata' must be a mapping of str to str|int|float|bool, got {value!r}")
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"RagContext key 'metadata' must have non-empty str keys, got {name!r}")
        if not isinstance(item, (str, int, float, bool)):
            raise ValueError(
                f"RagContext key 'metadata.{name}' must be a str, int, float or bool, got {type(item).__name__}"
            )
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class RagContext:
    context_tokens: int | None = None
    document_ids: tuple[str, ...] = ()
    document_titles: tuple[str, ...] = ()
    metadata: Mapping[str, _Scalar] = field(default_factory=dict)

    def __post_init__(self):
        # validated (and lists turned into tuples) also when built directly, so the span never gets bad types
        object.__setattr__(self, "context_tokens", _check_context_tokens(self.context_tokens))
        object.__setattr__(self, "document_ids", _check_strings("document_ids", self.document_ids))
        object.__setattr__(self, "document_titles", _check_strings("document_titles", self.document_titles))
        object.__setattr__(self, "metadata", _check_metadata(self.metadata))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RagContext":
        if not isinstance(data, Mapping):
            raise ValueError(f"RAG context must be a JSON object / dict with keys {', '.join(_KEYS)}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(f"Unknown RagContext key {unknown[0]!r}; allowed keys: {', '.join(_KEYS)}")
        return cls(**{key: data[key] for key in _KEYS if key in data})

    @classmethod
    def from_json_file(cls, path: str | Path) -> "RagContext":
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"RAG context file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def span_attributes(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.context_tokens is not None:
            values[CONTEXT_TOKENS] = self.context_tokens
        if self.document_ids:
            values[DOCUMENT_IDS] = list(self.document_ids)
        if self.document_titles:
            values[DOCUMENT_TITLES] = list(self.document_titles)
        for name, value in self.metadata.items():
            values[METADATA_PREFIX + name] = value
        return values
