"""Payload encoder: RunSummaries, prompt telemetry and analysis → span events under a byte budget.

Sections are built in priority order (`format.SECTIONS`) and admitted while their exact OTLP
size fits what is left of the budget; what does not fit is named in the header's `truncated`.
The sparse prompt attention, last, first has its per-head cap lowered until it fits. Token ids
are carried only when content capture is on; otherwise their pattern (`token_pattern`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, PromptSummaries, RunSummaries
from .format import (
    ARRAY,
    CAP,
    COUNT_FIELDS,
    DATA,
    DEFAULT_MAX_BYTES,
    DTYPE,
    EVENT_PREFIX,
    HEADER_EVENT,
    HEADS,
    HIDDEN_MOMENT_FIELDS,
    HIDDEN_NORM_FIELDS,
    LAYERS,
    LOGIT_FLOAT_FIELDS,
    MAX_EVENTS,
    MODEL_TYPE,
    PAYLOAD_BYTES,
    PAYLOAD_TRUNCATED,
    PAYLOAD_VERSION,
    PAYLOAD_VERSION_ATTRIBUTE,
    PROMPT_ROWS,
    SECTION,
    SECTIONS_PRESENT,
    SEQUENCES,
    STEPS,
    TOKEN_IDS,
    TOKEN_PATTERN,
    TRUNCATED,
    UNAVAILABLE_REASON,
    UNSIGNED_DTYPES,
    VERSION,
    array_event,
    array_event_size,
    chunks,
    count_dtype,
    float_dtype,
    int_dtype,
)
from .otlp_size import event_size

if TYPE_CHECKING:
    from ...analysis import RunAnalysis

def payload_events(
    summaries: RunSummaries,
    prompt: "PromptSummaries | None",
    analysis: "RunAnalysis | None",
    max_bytes: int = DEFAULT_MAX_BYTES,
    token_ids: bool = False,
) -> tuple[list[tuple[str, dict]], dict]:
    """Span events (name, attributes) of the full-trace payload, and span-level info attributes.

    `token_ids`: carry the generated token ids (only when content capture is on); otherwise
    the token pattern, which does not decode to the completion.

    The events' exact OTLP size never exceeds `max_bytes`; what did not fit is listed in
    `corevital.payload.truncated` (empty when complete).
    """
    sections = _candidate_sections(summaries, prompt, analysis, token_ids)
    names = [name for name, _ in sections]
    header_worst = _header(summaries, prompt, names, [*names, "prompt_attention:cap=" + "9" * 10])
    remaining = max_bytes - event_size(*header_worst)
    if remaining < 0:
        return [], _info(0, names)

    kept: list[str] = []
    truncated: list[str] = []
    events: list[tuple[str, dict]] = []
    for name, build in sections:
        if name == "prompt_attention":
            chosen, note = _fit_prompt_attention(build, remaining)
            if chosen is None:
                truncated.append(name)
                continue
            if note:
                truncated.append(note)
        else:
            chosen = build()
        size = sum(event_size(*event) for event in chosen)
        if size > remaining:
            truncated.append(name)
            continue
        remaining -= size
        kept.append(name)
        events.extend(chosen)

    header = _header(summaries, prompt, kept, truncated)
    events.insert(0, header)
    total = sum(event_size(*event) for event in events)
    if total > max_bytes:  # cannot happen: the real header is never larger than the reserved one
        return [], _info(0, names)
    assert len(events) <= MAX_EVENTS
    return events, _info(total, truncated)


def _info(size: int, truncated: list[str]) -> dict:
    return {PAYLOAD_BYTES: int(size), PAYLOAD_TRUNCATED: list(truncated), PAYLOAD_VERSION_ATTRIBUTE: PAYLOAD_VERSION}


def _header(summaries: RunSummaries, prompt, sections: list[str], truncated: list[str]) -> tuple[str, dict]:
    attributes = {
        VERSION: PAYLOAD_VERSION,
        SEQUENCES: summaries.num_sequences,
        STEPS: summaries.num_steps,
        LAYERS: summaries.num_layers,
        HEADS: int(summaries.num_heads),
        PROMPT_ROWS: _prompt_rows(prompt),
        MODEL_TYPE: str(summaries.model_type or ""),
        SECTIONS_PRESENT: list(sections),
        TRUNCATED: list(truncated),
    }
    if summaries.attention_unavailable_reason:
        attributes[UNAVAILABLE_REASON] = str(summaries.attention_unavailable_reason)
    return HEADER_EVENT, attributes


def _prompt_rows(prompt) -> int:
    if prompt is None:
        return 0
    return max(len(prompt.surprisal), len(prompt.layer_transformation), len(prompt.basin), len(prompt.sparse))


def _candidate_sections(summaries: RunSummaries, prompt, analysis, token_ids: bool) -> list[tuple[str, Any]]:
    """(section, builder) for every section there is data for, in priority order.

    A builder returns the section's events; prompt_attention's is a _SparseAttention, which
    builds them for a given per-head cap.
    """
    s = summaries
    out: list[tuple[str, Any]] = [("steps", lambda: _steps_events(s, token_ids))]
    if analysis is not None:
        out.append(("analysis", lambda: _analysis_events(analysis)))
    if s.hidden.ndim == 4 and s.hidden.shape[2] > 0:
        out.append(("layers", lambda: _layers_events(s)))
    for section, array in (("attention", s.attention), ("cross_attention", s.cross_attention)):
        if array is not None:
            out.append((section, lambda section=section, array=array: [_stat_event(section, array)]))
    if s.repetition_cosine is not None:
        cosine = s.repetition_cosine
        out.append(("repetition", lambda: [array_event("repetition", "repetition_cosine", cosine, "float32")]))
    if prompt is not None:
        if prompt.surprisal or prompt.layer_transformation or prompt.basin:
            out.append(("prompt", lambda: _prompt_events(prompt)))
        if any(layer is not None for row in prompt.sparse for layer in row):
            out.append(("prompt_attention", _SparseAttention(prompt.sparse)))
    return out


def _columns(array: np.ndarray, names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    return np.ascontiguousarray(array[..., [list(names).index(name) for name in wanted]])


def token_pattern(token_ids: np.ndarray) -> np.ndarray:
    """Each id replaced by the order of its first appearance (C order): equal ids stay equal, nothing else."""
    ids = np.asarray(token_ids)
    _, first, inverse = np.unique(ids.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse].reshape(ids.shape)


def _steps_events(s: RunSummaries, token_ids: bool) -> list[tuple[str, dict]]:
    logits = _columns(s.logits, LOGIT_STATS, LOGIT_FLOAT_FIELDS)
    tokens = s.token_ids if token_ids else token_pattern(s.token_ids)
    return [
        array_event("steps", "logits", logits, float_dtype(logits), LOGIT_FLOAT_FIELDS),
        _count_event("steps", "logit_counts", _columns(s.logits, LOGIT_STATS, COUNT_FIELDS), COUNT_FIELDS),
        array_event("steps", TOKEN_IDS if token_ids else TOKEN_PATTERN, tokens, int_dtype(tokens)),
        array_event("steps", "valid", np.asarray(s.valid, bool).astype(np.uint8), "uint8"),
    ]


def _layers_events(s: RunSummaries) -> list[tuple[str, dict]]:
    moments = _columns(s.hidden, HIDDEN_STATS, HIDDEN_MOMENT_FIELDS)
    norms = _columns(s.hidden, HIDDEN_STATS, HIDDEN_NORM_FIELDS)
    return [
        array_event("layers", "hidden_moments", moments, float_dtype(moments), HIDDEN_MOMENT_FIELDS),
        array_event("layers", "hidden_norms", norms, "float32", HIDDEN_NORM_FIELDS),
        _count_event("layers", "hidden_counts", _columns(s.hidden, HIDDEN_STATS, COUNT_FIELDS), COUNT_FIELDS),
    ]


def _stat_event(section: str, array: np.ndarray) -> tuple[str, dict]:
    """Attention statistics (entropies in bits, concentrations, head counts): float16 is plenty."""
    return array_event(section, section, array, float_dtype(array), ATTENTION_STATS)


def _count_event(section: str, name: str, array: np.ndarray, fields: Sequence[str]) -> tuple[str, dict]:
    return array_event(section, name, array, count_dtype(array), fields)


def _analysis_events(analysis) -> list[tuple[str, dict]]:
    document = {
        "sequences": [_json_safe(dataclasses.asdict(s)) for s in analysis.sequences],
        "aggregate": _json_safe(dataclasses.asdict(analysis.aggregate)),
    }
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    return [
        (
            EVENT_PREFIX + "analysis",
            {SECTION: "analysis", ARRAY: "analysis", DTYPE: "json", DATA: chunks(text)},
        )
    ]


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack per-row float arrays; rows of other shapes are padded with NaN to the largest."""
    arrays = [np.asarray(a, np.float32) for a in arrays]
    ndim = max(a.ndim for a in arrays)
    shape = tuple(max(a.shape[d] if a.ndim == ndim else 0 for a in arrays) for d in range(ndim))
    out = np.full((len(arrays), *shape), np.nan, np.float32)
    for i, a in enumerate(arrays):
        if a.ndim == ndim:
            out[(i, *(slice(0, n) for n in a.shape))] = a
    return out


def _prompt_events(prompt) -> list[tuple[str, dict]]:
    events = []
    for name, rows in (
        ("surprisal", prompt.surprisal),
        ("layer_transformation", prompt.layer_transformation),
        ("basin", prompt.basin),
    ):
        if rows:
            array = _stack(list(rows))
            events.append(array_event("prompt", name, array, float_dtype(array)))
    return events


class _SparseAttention:
    """Sparse prompt attention, sorted once; `events(cap)` encodes it with a per-head cap and
    `size(cap)` gives those events' exact size without encoding them."""

    def __init__(self, rows):
        self.num_rows = len(rows)
        self.num_layers = max((len(row) for row in rows), default=0)
        present = [layer for row in rows for layer in row if layer is not None]
        self.num_heads = max((np.asarray(layer[2]).shape[0] for layer in present), default=0)
        width = max((np.asarray(layer[2]).shape[-1] for layer in present), default=0)
        shape = (self.num_rows, self.num_layers, self.num_heads, width)
        self.query = np.zeros(shape, np.int64)
        self.key = np.zeros(shape, np.int64)
        self.weight = np.zeros(shape, np.float32)
        for r, row in enumerate(rows):
            for l, layer in enumerate(row):
                if layer is None:
                    continue
                q, k, w = (np.asarray(part) for part in layer)
                w = np.where(np.isfinite(w) & (w > 0), w, 0.0).astype(np.float32)
                if not (w[:, :-1] >= w[:, 1:]).all():  # capture hands each head's strongest first already
                    order = np.argsort(-w, axis=-1, kind="stable")  # strongest first; unused slots last
                    q, k, w = (np.take_along_axis(part, order, -1) for part in (q, k, w))
                h, c = w.shape
                self.query[r, l, :h, :c], self.key[r, l, :h, :c], self.weight[r, l, :h, :c] = q, k, w
        self.counts = (self.weight > 0).sum(-1)  # kept entries are a prefix of each head
        self.max_count = int(self.counts.max(initial=0))
        # per unsigned dtype too small for some position: each head's first entry beyond it, so
        # the dtype of any cap's kept positions is known without gathering them (positions are
        # never negative; were one, sizes would be taken from the gathered positions instead)
        self.first_beyond = [_first_beyond(positions) for positions in (self.query, self.key)]

    def _kept(self, cap: int):
        counts = np.minimum(self.counts, cap)
        keep = np.arange(min(cap, self.weight.shape[-1])) < counts[..., None]
        return counts, self.query[..., : keep.shape[-1]][keep], self.key[..., : keep.shape[-1]][keep], keep

    def events(self, cap: int) -> list[tuple[str, dict]]:
        counts, query, key, keep = self._kept(cap)
        weight = self.weight[..., : keep.shape[-1]][keep]
        extra = {CAP: int(cap)}
        return [
            array_event("prompt_attention", "counts", counts, int_dtype(counts), extra=extra),
            array_event("prompt_attention", "query", query, int_dtype(query), extra=extra),
            array_event("prompt_attention", "key", key, int_dtype(key), extra=extra),
            array_event("prompt_attention", "weight", weight, "float16", extra=extra),
        ]

    def size(self, cap: int) -> int:
        """sum(event_size(*event) for event in self.events(cap)), from the arrays' lengths and dtypes."""
        counts = np.minimum(self.counts, cap)
        kept = (int(counts.sum()),)
        query_dtype, key_dtype = (self._positions_dtype(which, counts, cap) for which in (0, 1))
        extra = {CAP: int(cap)}
        return sum(
            array_event_size("prompt_attention", name, shape, dtype, extra=extra)
            for name, shape, dtype in (
                ("counts", counts.shape, int_dtype(counts)),
                ("query", kept, query_dtype),
                ("key", kept, key_dtype),
                ("weight", kept, "float16"),  # one weight per kept link
            )
        )

    def _positions_dtype(self, which: int, counts: np.ndarray, cap: int) -> str:
        """int_dtype of the kept query (0) or key (1) positions at this cap."""
        beyond = self.first_beyond[which]
        if beyond is None:  # a negative position: the kept positions themselves say
            return int_dtype(self._kept(cap)[1 + which])
        return _kept_int_dtype(beyond, counts)


def _first_beyond(positions: np.ndarray) -> dict[str, np.ndarray] | None:
    """{dtype: index of each head's first position above its maximum (the width where none)}
    for the unsigned dtypes some position exceeds; None when a position is negative."""
    if positions.size and positions.min() < 0:
        return None
    highest = int(positions.max(initial=0))
    beyond = {}
    for name in UNSIGNED_DTYPES:
        if highest > np.iinfo(name).max:
            above = positions > np.iinfo(name).max
            beyond[name] = np.where(above.any(-1), above.argmax(-1), positions.shape[-1])
    return beyond


def _kept_int_dtype(beyond: dict[str, np.ndarray], counts: np.ndarray) -> str:
    """int_dtype of the non-negative positions kept with these per-head counts."""
    if not counts.any():
        return int_dtype(np.zeros(0, np.int64))
    for name in UNSIGNED_DTYPES:
        if name not in beyond or (beyond[name] >= counts).all():
            return name
    return "int64"


def _fit_prompt_attention(sparse: _SparseAttention, budget: int):
    """(events, truncation note) with the largest per-head cap that fits, or (None, None)."""

    size = sparse.size
    if size(sparse.max_count) <= budget:
        return sparse.events(sparse.max_count), None
    if sparse.max_count <= 1 or size(1) > budget:
        return None, None
    low, high = 1, sparse.max_count - 1  # size(low) fits; find the largest cap that does
    while low < high:
        middle = (low + high + 1) // 2
        if size(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return sparse.events(low), f"prompt_attention:cap={low}"
