"""Payload decoder: span events → arrays keyed "<section>.<array>", and back to RunSummaries.

Takes SDK span events or (name, attributes) pairs and skips everything that is not a payload
event. It never raises on a bad event: what cannot be decoded is skipped and described in
`DecodedPayload.problems`; a newer format version is decoded as far as this one knows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, PromptSummaries, RunSummaries
from ..events import event_parts
from .format import (
    ARRAY,
    CAP,
    DTYPE,
    EVENT_PREFIX,
    FIELDS,
    HEADER_EVENT,
    HEADS,
    LAYERS,
    MODEL_TYPE,
    PAYLOAD_VERSION,
    PayloadError,
    SECTION,
    SECTIONS,
    TOKEN_IDS,
    TOKEN_PATTERN,
    TRUNCATED,
    UNAVAILABLE_REASON,
    VERSION,
    decode_array,
    joined_data,
)

@dataclass
class DecodedPayload:
    """Arrays of a payload, keyed "<section>.<array>", with what the header said."""

    version: int | None = None
    header: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    analysis: dict | None = None
    sparse_cap: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def sections(self) -> list[str]:
        present = {key.split(".", 1)[0] for key in self.arrays}
        if self.analysis is not None:
            present.add("analysis")
        return [name for name in SECTIONS if name in present]

    @property
    def truncated(self) -> list[str]:
        return list(self.header.get(TRUNCATED, ()))

    def stats(self, keys: str | Sequence[str], names: Sequence[str]) -> np.ndarray | None:
        """float32 [..., len(names)] gathered from one or more arrays by their field names.

        Fields no array carries are NaN ("not observed"); None when none of the arrays is present.
        """
        names = list(names)
        out = None
        for key in [keys] if isinstance(keys, str) else keys:
            array = self.arrays.get(key)
            if array is None:
                continue
            if out is None:
                out = np.full((*array.shape[:-1], len(names)), np.nan, np.float32)
            if array.shape[:-1] != out.shape[:-1]:
                self.problems.append(f"{key}: shape {list(array.shape)} does not match {list(out.shape[:-1])}")
                continue
            for j, name in enumerate(self.fields.get(key, ())):
                if name in names:
                    out[..., names.index(name)] = array[..., j]
        return out

    def summaries(self) -> RunSummaries | None:
        """The RunSummaries the payload was made from (None without the steps section).

        Sections the budget dropped come back as NaN ("not observed") or None. Without
        content capture `token_ids` holds the token pattern (see `token_pattern`).
        """
        tokens = self.arrays.get(f"steps.{TOKEN_IDS}", self.arrays.get(f"steps.{TOKEN_PATTERN}"))
        if tokens is None:
            return None
        token_ids = tokens.astype(np.int64)
        n, s = token_ids.shape
        layers = int(self.header.get(LAYERS, 0))
        logits = self.stats(("steps.logits", "steps.logit_counts"), LOGIT_STATS)
        hidden = self.stats(("layers.hidden_moments", "layers.hidden_norms", "layers.hidden_counts"), HIDDEN_STATS)
        valid = self.arrays.get("steps.valid")
        attention = self.stats("attention.attention", ATTENTION_STATS)
        cross = self.stats("cross_attention.cross_attention", ATTENTION_STATS)
        cosine = self.arrays.get("repetition.repetition_cosine")
        return RunSummaries(
            logits=logits if logits is not None else np.full((n, s, len(LOGIT_STATS)), np.nan, np.float32),
            token_ids=token_ids,
            valid=valid.astype(bool) if valid is not None else np.ones((n, s), bool),
            hidden=hidden if hidden is not None else np.full((n, s, layers, len(HIDDEN_STATS)), np.nan, np.float32),
            attention=attention,
            cross_attention=cross,
            repetition_cosine=None if cosine is None else cosine.astype(np.float32),
            num_heads=int(self.header.get(HEADS, 0)),
            model_type=str(self.header.get(MODEL_TYPE, "")),
            attention_unavailable_reason=self.header.get(UNAVAILABLE_REASON),
        )

    def prompt(self) -> PromptSummaries | None:
        """Prompt telemetry per row (None when neither prompt section is present)."""
        keys = [key for key in self.arrays if key.startswith(("prompt.", "prompt_attention."))]
        if not keys:
            return None
        out = PromptSummaries(sparse_cap=self.sparse_cap)
        for name in ("surprisal", "layer_transformation", "basin"):
            array = self.arrays.get(f"prompt.{name}")
            if array is not None:
                getattr(out, name).extend(np.asarray(row, np.float32) for row in array)
        counts = self.arrays.get("prompt_attention.counts")
        if counts is not None and all(f"prompt_attention.{p}" in self.arrays for p in ("query", "key", "weight")):
            out.sparse = _unflatten_sparse(
                counts.astype(np.int64),
                self.arrays["prompt_attention.query"].astype(np.int64),
                self.arrays["prompt_attention.key"].astype(np.int64),
                self.arrays["prompt_attention.weight"].astype(np.float32),
            )
        return out


def _unflatten_sparse(counts, query, key, weight):
    """Per row, per layer: (query [H, C], key [H, C], weight [H, C]) padded with weight 0."""
    if int(counts.sum()) != query.size:
        raise PayloadError(f"prompt_attention: counts add up to {int(counts.sum())}, arrays hold {query.size}")
    width = int(counts.max(initial=0))
    keep = np.arange(width) < counts[..., None]
    parts = []
    for flat, dtype in ((query, np.int64), (key, np.int64), (weight, np.float32)):
        dense = np.zeros(keep.shape, dtype)
        dense[keep] = flat
        parts.append(dense)
    rows, layers = counts.shape[:2]
    return [[tuple(part[r, l] for part in parts) for l in range(layers)] for r in range(rows)]


def is_payload_event(name: str) -> bool:
    return name == HEADER_EVENT or name.startswith(EVENT_PREFIX)


def decode_payload(events: Iterable) -> DecodedPayload:
    """Decode payload events ((name, attributes) pairs or SDK span events; others are skipped).

    Events that cannot be decoded are skipped and described in `problems`.
    """
    out = DecodedPayload()
    for event in events:
        name, attributes = event_parts(event)
        if not is_payload_event(name):
            continue
        if name == HEADER_EVENT:
            out.header = {key: (list(v) if isinstance(v, tuple) else v) for key, v in attributes.items()}
            out.version = int(attributes.get(VERSION, 0)) or None
            if out.version is not None and out.version > PAYLOAD_VERSION:
                out.problems.append(
                    f"payload version {out.version} is newer than {PAYLOAD_VERSION}; decoded as far as known"
                )
            continue
        section, array = attributes.get(SECTION), attributes.get(ARRAY)
        key = f"{section}.{array}"
        try:
            if attributes.get(DTYPE) == "json":
                out.analysis = json.loads(joined_data(attributes))
                continue
            out.arrays[key] = decode_array(attributes)
        except (PayloadError, ValueError) as exc:
            out.problems.append(f"{key}: {exc}")
            continue
        if FIELDS in attributes:
            out.fields[key] = tuple(attributes[FIELDS])
        if CAP in attributes:
            out.sparse_cap = int(attributes[CAP])
    return out
