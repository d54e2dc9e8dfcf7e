"""Payload format: event and attribute names, sections, version, dtypes and the array codec.

The one place that spells the payload's names: the encoder (`encode.py`), the decoder
(`decode.py`) and the report import them from here. An array travels as the base64 of its
little-endian bytes in the narrowest dtype that holds it exactly (float16 where no finite value
overflows it), split in chunks that every backend keeps; `decode_array(array_event(...))`
gives the array back (float16 as float32). The format itself is described in the package
docstring and docs/payload.md.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...config import DEFAULT_PAYLOAD_MAX_BYTES
from .otlp_size import event_size

PAYLOAD_VERSION = 2  # 2: token_pattern replaces token_ids without content capture
DEFAULT_MAX_BYTES = DEFAULT_PAYLOAD_MAX_BYTES
CHUNK_CHARS = 2000  # below Grafana Tempo's default max_attribute_bytes (2048); multiple of 4
MAX_EVENTS = 40

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

# span-level info attributes; the span repeats two of the header's keys
PAYLOAD_BYTES = "corevital.payload.bytes"
PAYLOAD_TRUNCATED = TRUNCATED
PAYLOAD_VERSION_ATTRIBUTE = VERSION

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
DTYPES = ("float16", "float32", "uint8", "uint16", "uint32", "int32", "int64")


class PayloadError(ValueError):
    """A payload event that cannot be decoded (wrong version, corrupt or truncated data)."""


# -- array codec ---------------------------------------------------------------------------------


def float_dtype(array: np.ndarray) -> str:
    """float16 unless a finite value would overflow it."""
    values = np.asarray(array, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > _FLOAT16_MAX:
        return "float32"
    return "float16"


def count_dtype(array: np.ndarray) -> str:
    values = np.asarray(array, np.float64)
    finite = np.isfinite(values)
    integral = bool(np.all(values[finite] == np.round(values[finite]))) and bool(np.all(values[finite] >= 0))
    if finite.all() and integral:
        return int_dtype(values)
    top = float(np.abs(values[finite]).max(initial=0.0))
    return "float16" if integral and top <= _FLOAT16_EXACT_INT else "float32"


UNSIGNED_DTYPES = ("uint8", "uint16", "uint32")  # int_dtype's choices for non-negative integers, smallest first


def int_dtype(array: np.ndarray) -> str:
    values = np.asarray(array)
    if values.size == 0:
        return "uint8"
    low, high = int(values.min()), int(values.max())
    if low >= 0:
        for name in UNSIGNED_DTYPES:
            if high <= np.iinfo(name).max:
                return name
        return "int64"
    return "int32" if np.iinfo("int32").min <= low and high <= np.iinfo("int32").max else "int64"


def encode_array(array: np.ndarray, dtype: str) -> str:
    """Base64 of the little-endian bytes of `array` cast to `dtype`."""
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.ascontiguousarray(np.asarray(array).astype(np.dtype(dtype).newbyteorder("<"))).tobytes()
    return base64.b64encode(raw).decode("ascii")


_FULL_CHUNK = "A" * CHUNK_CHARS


def chunks(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


def array_event(
    section: str,
    name: str,
    array: np.ndarray,
    dtype: str,
    fields: Sequence[str] | None = None,
    extra: dict | None = None,
) -> tuple[str, dict]:
    array = np.asarray(array)
    return _array_event(section, name, array.shape, dtype, chunks(encode_array(array, dtype)), fields, extra)


def array_event_size(
    section: str,
    name: str,
    shape: Sequence[int],
    dtype: str,
    fields: Sequence[str] | None = None,
    extra: dict | None = None,
) -> int:
    """event_size(*array_event(section, name, array, dtype, fields, extra)) for any array of
    `shape`, without encoding it: the size depends on the data only through its length."""
    data_chars = 4 * -(-math.prod(shape) * np.dtype(dtype).itemsize // 3)  # base64 of that many bytes
    full, rest = divmod(data_chars, CHUNK_CHARS)
    # chunks() of any text of that length: only the characters' count is sized
    data = [_FULL_CHUNK] * full + (["A" * rest] if rest or not full else [])
    return event_size(*_array_event(section, name, shape, dtype, data, fields, extra))


def _array_event(section, name, shape, dtype, data, fields, extra) -> tuple[str, dict]:
    attributes = {SECTION: section, ARRAY: name, DTYPE: dtype, SHAPE: [int(n) for n in shape], DATA: data}
    if fields:
        attributes[FIELDS] = list(fields)
    if extra:
        attributes.update(extra)
    return EVENT_PREFIX + section, attributes


def decode_array(attributes: Mapping[str, Any]) -> np.ndarray:
    """The array one payload event carries (float16 decodes to float32)."""
    dtype = attributes.get(DTYPE)
    if dtype not in DTYPES:
        raise PayloadError(f"unknown dtype {dtype!r}")
    shape = tuple(int(n) for n in attributes.get(SHAPE, ()))
    raw = joined_data(attributes)
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


def joined_data(attributes: Mapping[str, Any]) -> str:
    data = attributes.get(DATA, "")
    return data if isinstance(data, str) else "".join(data)
