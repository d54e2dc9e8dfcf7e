"""Full-trace payload: compact numeric arrays as span events, under a byte budget.

The payload rides along only in `full` capture, or in `on_risk` when the run crossed the risk
threshold or raised a critical flag (the handler decides; this module only encodes). It holds
the per-step, per-layer summaries, the per-sequence analysis and the prompt telemetry, so that
`report.py` can rebuild the full report from a finished span alone. No token text, ever; token
ids only when content capture is on. Without it the steps carry a token *pattern* instead
(`token_pattern`: each token replaced by the order of its first appearance in the run, so
`[812, 47, 812, 47]` becomes `[0, 1, 0, 1]`): repetition analysis needs which steps chose the
same token, never which token it was, and the pattern does not decode to text.

Events (format version 2; docs/payload.md has the full description)
--------------------------------------------------------------------

`corevital.payload` (header, always first):
    corevital.payload.version        int      PAYLOAD_VERSION
    corevital.payload.sequences      int      N, returned sequences (axis 0 of every step array)
    corevital.payload.steps          int      S, generated steps
    corevital.payload.layers         int      L, decoder layers
    corevital.payload.heads          int      attention heads per layer
    corevital.payload.prompt_rows    int      R, unique prompt rows with prompt telemetry
    corevital.payload.model_type     string   `config.model_type`
    corevital.payload.sections       string[] sections present, in priority order
    corevital.payload.truncated      string[] what the budget dropped or reduced
    corevital.payload.attention_unavailable_reason  string, only when set

`corevital.payload.<section>`, one event per array:
    corevital.payload.section        string   steps | analysis | layers | attention |
                                              cross_attention | repetition | prompt |
                                              prompt_attention
    corevital.payload.array          string   array name inside the section
    corevital.payload.dtype          string   float16 | float32 | uint8 | uint16 | uint32 |
                                              int32 | int64 (little-endian), or json
    corevital.payload.shape          int[]    C order
    corevital.payload.fields         string[] names along the last axis, when it holds stats
    corevital.payload.data           string[] base64 (RFC 4648, padded) of the raw
                                              little-endian bytes, split in chunks of at most
                                              CHUNK_CHARS characters (a multiple of 4, so every
                                              chunk decodes on its own); join, then decode
    corevital.payload.cap            int      prompt_attention only: per-head entry cap

Sections, in priority order (a lower one is kept only when every kept higher one fits):

    steps             logits [N,S,5] (entropy, margin, topk_mass, max_prob, surprisal),
                      logit_counts [N,S,2] (nan_count, inf_count), token_ids [N,S]
                      with content capture, else token_pattern [N,S], valid [N,S] (uint8 0/1)
    analysis          json: per-sequence analysis results and the aggregate
    layers            hidden_moments [N,S,L,2] (mean, std), hidden_norms [N,S,L,2]
                      (l2_norm, max_abs; always float32), hidden_counts [N,S,L,2]
    attention         attention [N,S,L,7] (ATTENTION_STATS)
    cross_attention   cross_attention [N,S,L,7] (seq2seq decoders)
    repetition        repetition_cosine [N,S,R] (float32: the loop threshold is 0.9995)
    prompt            surprisal [R,P-1], layer_transformation [R,L], basin [R,L,H]
    prompt_attention  counts [R,L,H] (kept entries per head), query [E], key [E],
                      weight [E] (float16): entries above 0.01, head by head in C order of
                      counts, each head's strongest first

Float arrays use float16 when every finite value fits its range (otherwise float32, so
nothing overflows to inf); counts use the narrowest unsigned integer that holds them (float16
or float32 when some are NaN, i.e. not observed); token ids and positions the narrowest
integer type.

Budget: sizes are exact OTLP protobuf sizes of the events inside a Span message (what
`corevital.payload.bytes` reports). Sections are admitted in priority order; one that does
not fit in what is left is dropped whole and recorded in `truncated`; the sparse prompt
attention (last) first has its per-head cap reduced until it fits (recorded as
`prompt_attention:cap=<C>`), and is dropped only when even one entry per head does not fit.
At most 19 events, whatever N, S, L or R, with at most 10 attributes each.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, RunSummaries

if TYPE_CHECKING:  # capture imports torch; telemetry never does
    from ..analysis import RunAnalysis
    from ..capture.prompt import PromptSummaries

PAYLOAD_VERSION = 2  # 2: token_pattern replaces token_ids without content capture
DEFAULT_MAX_BYTES = 512 * 1024
CHUNK_CHARS = 2000  # below Grafana Tempo's default max_attribute_bytes (2048); multiple of 4
MAX_EVENTS = 40

# span-level info attributes
PAYLOAD_BYTES = "corevital.payload.bytes"
PAYLOAD_TRUNCATED = "corevital.payload.truncated"
PAYLOAD_VERSION_ATTRIBUTE = "corevital.payload.version"

HEADER_EVENT = "corevital.payload"
# steps arrays holding the chosen tokens: the ids (content capture on) or their pattern (off)
TOKEN_IDS = "token_ids"
TOKEN_PATTERN = "token_pattern"
EVENT_PREFIX = "corevital.payload."

# header attributes
VERSION = "corevital.payload.version"
SEQUENCES = "corevital.payload.sequences"
STEPS = "corevital.payload.steps"
LAYERS = "corevital.payload.layers"
HEADS = "corevital.payload.heads"
PROMPT_ROWS = "corevital.payload.prompt_rows"
MODEL_TYPE = "corevital.payload.model_type"
SECTIONS_PRESENT = "corevital.payload.sections"
TRUNCATED = "corevital.payload.truncated"
UNAVAILABLE_REASON = "corevital.payload.attention_unavailable_reason"

# array event attributes
SECTION = "corevital.payload.section"
ARRAY = "corevital.payload.array"
DTYPE = "corevital.payload.dtype"
SHAPE = "corevital.payload.shape"
FIELDS = "corevital.payload.fields"
DATA = "corevital.payload.data"
CAP = "corevital.payload.cap"

SECTIONS = (
    "steps",
    "analysis",
    "layers",
    "attention",
    "cross_attention",
    "repetition",
    "prompt",
    "prompt_attention",
)

LOGIT_FLOAT_FIELDS = ("entropy", "margin", "topk_mass", "max_prob", "surprisal")
COUNT_FIELDS = ("nan_count", "inf_count")
HIDDEN_MOMENT_FIELDS = ("mean", "std")
HIDDEN_NORM_FIELDS = ("l2_norm", "max_abs")

_FLOAT16_MAX = 65504.0
_FLOAT16_EXACT_INT = 2048
_DTYPES = ("float16", "float32", "uint8", "uint16", "uint32", "int32", "int64")


class PayloadError(ValueError):
    """A payload event that cannot be decoded (wrong version, corrupt or truncated data)."""


# -- encoding ---------------------------------------------------------------------------------


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
        out.append(("repetition", lambda: [_array_event("repetition", "repetition_cosine", cosine, "float32")]))
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
        _array_event("steps", "logits", logits, _float_dtype(logits), LOGIT_FLOAT_FIELDS),
        _count_event("steps", "logit_counts", _columns(s.logits, LOGIT_STATS, COUNT_FIELDS), COUNT_FIELDS),
        _array_event("steps", TOKEN_IDS if token_ids else TOKEN_PATTERN, tokens, _int_dtype(tokens)),
        _array_event("steps", "valid", np.asarray(s.valid, bool).astype(np.uint8), "uint8"),
    ]


def _layers_events(s: RunSummaries) -> list[tuple[str, dict]]:
    moments = _columns(s.hidden, HIDDEN_STATS, HIDDEN_MOMENT_FIELDS)
    norms = _columns(s.hidden, HIDDEN_STATS, HIDDEN_NORM_FIELDS)
    return [
        _array_event("layers", "hidden_moments", moments, _float_dtype(moments), HIDDEN_MOMENT_FIELDS),
        _array_event("layers", "hidden_norms", norms, "float32", HIDDEN_NORM_FIELDS),
        _count_event("layers", "hidden_counts", _columns(s.hidden, HIDDEN_STATS, COUNT_FIELDS), COUNT_FIELDS),
    ]


def _stat_event(section: str, array: np.ndarray) -> tuple[str, dict]:
    """Attention statistics (entropies in bits, concentrations, head counts): float16 is plenty."""
    return _array_event(section, section, array, _float_dtype(array), ATTENTION_STATS)


def _count_event(section: str, name: str, array: np.ndarray, fields: Sequence[str]) -> tuple[str, dict]:
    return _array_event(section, name, array, _count_dtype(array), fields)


def _analysis_events(analysis) -> list[tuple[str, dict]]:
    document = {
        "sequences": [_json_safe(dataclasses.asdict(s)) for s in analysis.sequences],
        "aggregate": _json_safe(dataclasses.asdict(analysis.aggregate)),
    }
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    return [
        (
            EVENT_PREFIX + "analysis",
            {SECTION: "analysis", ARRAY: "analysis", DTYPE: "json", DATA: _chunks(text)},
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
            events.append(_array_event("prompt", name, array, _float_dtype(array)))
    return events


class _SparseAttention:
    """Sparse prompt attention, sorted once; `events(cap)` encodes it with a per-head cap."""

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
                order = np.argsort(-w, axis=-1, kind="stable")  # strongest first; unused slots last
                h, c = w.shape
                self.query[r, l, :h, :c] = np.take_along_axis(q, order, -1)
                self.key[r, l, :h, :c] = np.take_along_axis(k, order, -1)
                self.weight[r, l, :h, :c] = np.take_along_axis(w, order, -1)
        self.counts = (self.weight > 0).sum(-1)  # kept entries are a prefix of each head
        self.max_count = int(self.counts.max(initial=0))

    def events(self, cap: int) -> list[tuple[str, dict]]:
        counts = np.minimum(self.counts, cap)
        keep = np.arange(self.weight.shape[-1]) < counts[..., None]
        query, key, weight = self.query[keep], self.key[keep], self.weight[keep]
        extra = {CAP: int(cap)}
        return [
            _array_event("prompt_attention", "counts", counts, _int_dtype(counts), extra=extra),
            _array_event("prompt_attention", "query", query, _int_dtype(query), extra=extra),
            _array_event("prompt_attention", "key", key, _int_dtype(key), extra=extra),
            _array_event("prompt_attention", "weight", weight, "float16", extra=extra),
        ]


def _fit_prompt_attention(sparse: _SparseAttention, budget: int):
    """(events, truncation note) with the largest per-head cap that fits, or (None, None)."""

    def size(cap: int) -> int:
        return sum(event_size(*event) for event in sparse.events(cap))

    full = sparse.events(sparse.max_count)
    if sum(event_size(*event) for event in full) <= budget:
        return full, None
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


# -- arrays -------------------------------------------------------------------------------------


def _float_dtype(array: np.ndarray) -> str:
    """float16 unless a finite value would overflow it."""
    values = np.asarray(array, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > _FLOAT16_MAX:
        return "float32"
    return "float16"


def _count_dtype(array: np.ndarray) -> str:
    values = np.asarray(array, np.float64)
    finite = np.isfinite(values)
    integral = bool(np.all(values[finite] == np.round(values[finite]))) and bool(np.all(values[finite] >= 0))
    if finite.all() and integral:
        return _int_dtype(values)
    top = float(np.abs(values[finite]).max(initial=0.0))
    return "float16" if integral and top <= _FLOAT16_EXACT_INT else "float32"


def _int_dtype(array: np.ndarray) -> str:
    values = np.asarray(array)
    if values.size == 0:
        return "uint8"
    low, high = int(values.min()), int(values.max())
    if low >= 0:
        for name in ("uint8", "uint16", "uint32"):
            if high <= np.iinfo(name).max:
                return name
        return "int64"
    return "int32" if np.iinfo("int32").min <= low and high <= np.iinfo("int32").max else "int64"


def encode_array(array: np.ndarray, dtype: str) -> str:
    """Base64 of the little-endian bytes of `array` cast to `dtype`."""
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; allowed: {', '.join(_DTYPES)}")
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.ascontiguousarray(np.asarray(array).astype(np.dtype(dtype).newbyteorder("<"))).tobytes()
    return base64.b64encode(raw).decode("ascii")


def _chunks(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


def _array_event(
    section: str,
    name: str,
    array: np.ndarray,
    dtype: str,
    fields: Sequence[str] | None = None,
    extra: dict | None = None,
) -> tuple[str, dict]:
    array = np.asarray(array)
    attributes = {
        SECTION: section,
        ARRAY: name,
        DTYPE: dtype,
        SHAPE: [int(n) for n in array.shape],
        DATA: _chunks(encode_array(array, dtype)),
    }
    if fields:
        attributes[FIELDS] = list(fields)
    if extra:
        attributes.update(extra)
    return EVENT_PREFIX + section, attributes


# -- exact OTLP protobuf size -----------------------------------------------------------------


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
        return _field_size(len(value.encode("utf-8")))
    if isinstance(value, bytes):
        return _field_size(len(value))
    if isinstance(value, Mapping):
        return _field_size(sum(_field_size(_key_value_size(k, v)) for k, v in value.items()))
    if isinstance(value, Sequence):
        return _field_size(sum(_field_size(_any_value_size(v)) for v in value))
    raise TypeError(f"not an attribute value: {type(value).__name__}")


def _key_value_size(key: str, value) -> int:
    return _field_size(len(key.encode("utf-8"))) + _field_size(_any_value_size(value))


def event_size(name: str, attributes: Mapping[str, Any]) -> int:
    """Exact size of this event inside an OTLP Span message (Span.events entry, with its tag).

    Counts a non-zero time_unix_nano (fixed64) and no dropped attributes.
    """
    body = 9 + _field_size(len(name.encode("utf-8")))
    body += sum(_field_size(_key_value_size(key, value)) for key, value in attributes.items())
    return _field_size(body)


# -- decoding -------------------------------------------------------------------------------------


@dataclass
class PromptArrays:
    """Decoded prompt telemetry, laid out like capture's PromptSummaries (one entry per row)."""

    surprisal: list[np.ndarray] = field(default_factory=list)
    layer_transformation: list[np.ndarray] = field(default_factory=list)
    basin: list[np.ndarray] = field(default_factory=list)
    sparse: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    sparse_cap: int | None = None


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

    def prompt(self) -> PromptArrays | None:
        """Prompt telemetry per row (None when neither prompt section is present)."""
        keys = [key for key in self.arrays if key.startswith(("prompt.", "prompt_attention."))]
        if not keys:
            return None
        out = PromptArrays(sparse_cap=self.sparse_cap)
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


def decode_array(attributes: Mapping[str, Any]) -> np.ndarray:
    """The array one payload event carries (float16 decodes to float32)."""
    dtype = attributes.get(DTYPE)
    if dtype not in _DTYPES:
        raise PayloadError(f"unknown dtype {dtype!r}")
    shape = tuple(int(n) for n in attributes.get(SHAPE, ()))
    raw = _joined(attributes)
    try:
        data = base64.b64decode(raw, validate=True)
    except (ValueError, TypeError) as exc:
        raise PayloadError(f"data is not valid base64 ({exc})") from None
    item = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * item.itemsize
    if len(data) != expected:
        raise PayloadError(f"data holds {len(data)} bytes, shape {list(shape)} of {dtype} needs {expected}")
    array = np.frombuffer(data, item).reshape(shape)
    return array.astype(np.float32 if dtype == "float16" else item.newbyteorder("="))


def _joined(attributes: Mapping[str, Any]) -> str:
    data = attributes.get(DATA, "")
    return data if isinstance(data, str) else "".join(data)


def _event_parts(event) -> tuple[str, Mapping[str, Any]]:
    if isinstance(event, tuple):
        return event[0], event[1] or {}
    return event.name, event.attributes or {}


def is_payload_event(name: str) -> bool:
    return name == HEADER_EVENT or name.startswith(EVENT_PREFIX)


def decode_payload(events: Iterable) -> DecodedPayload:
    """Decode payload events ((name, attributes) pairs or SDK span events; others are skipped).

    Events that cannot be decoded are skipped and described in `problems`.
    """
    out = DecodedPayload()
    for event in events:
        name, attributes = _event_parts(event)
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
                out.analysis = json.loads(_joined(attributes))
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
