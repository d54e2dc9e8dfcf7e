"""With content capture off, no prompt or completion text, and nothing that decodes to it, leaves the process.

Everything CoreVital exports (spans, their step and full-trace payload events, the log-based
evaluation events, and metrics) goes through the real OTLP/HTTP exporters to a loopback
receiver; the request bodies, as the wire carries them, are scanned for every word of the
prompt and of the completion, and for the completion's token ids: as integer attributes in
the order the events carry them, and as packed little-endian integers of every width inside
the raw bytes and inside every base64 string (the payload's arrays), and as decimal text (JSON). The words come from a
tokenizer whose every word is distinctive, and it is handed to generate, so our code holds
the means to decode and must not use them. The same scans with content capture on find the
words and the ids: the checks can see a leak.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import numpy as np
import pytest
import tokenizers
import transformers
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from tests.conftest import VOCAB, build_llama
from tests.support.reliability import OTLPReceiver, exported_spans

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
PREFIX = "privy"
PROMPT = "privyjade privyoboe privyquill privyhaze privytusk privyfern privymoth"


def distinctive_words() -> list[str]:
    """VOCAB words, each "privy" + two letters + "x", with the prompt's words among them."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    generated = [f"{PREFIX}{a}{b}x" for a in letters for b in letters]
    prompt_words = PROMPT.split()
    return prompt_words + generated[: VOCAB - 4 - len(prompt_words)]


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    vocabulary = {word: i for i, word in enumerate(specials + distinctive_words())}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.decoder = tokenizers.decoders.WordPiece()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


def export_one_generation(monkeypatch, capture_mode: str, content: bool | None):
    """Runs one instrumented generate with OTLP/HTTP export; returns (wire bytes, prompt ids, completion text)."""
    monkeypatch.delenv(CONTENT_ENV, raising=False)
    if content is not None:
        monkeypatch.setenv(CONTENT_ENV, str(content).lower())
    tok = tokenizer()
    model = build_llama()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with OTLPReceiver("ok") as receiver:
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        spans_exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans_exporter))
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics"), export_interval_millis=3_600_000
        )
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        logger_provider = LoggerProvider(shutdown_on_exit=False)
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs"))
        )
        instrumentor = CoreVitalInstrumentor()
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider,
            capture_mode=capture_mode, risk_threshold=0.0,
        )
        try:
            output = model.generate(ids, max_new_tokens=8, do_sample=False, tokenizer=tok, eos_token_id=None)
        finally:
            instrumentor.uninstrument()
        assert reader.force_flush() and tracer_provider.force_flush() and logger_provider.force_flush()
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()
        spans = exported_spans(receiver)
        wire = receiver.all_bytes()
    assert len(spans) == 1 and receiver.bodies.get("/v1/metrics") and receiver.bodies.get("/v1/logs")
    generated = output[0, ids.shape[1]:].tolist()
    completion = tok.decode(generated, skip_special_tokens=True)
    return wire, spans[0], ids[0].tolist(), completion, generated


def _packed(ids: list[int]) -> list[bytes]:
    """`ids` as contiguous little-endian integers of each width an array could use."""
    return [np.asarray(ids).astype(dtype).tobytes() for dtype in ("<u1", "<u2", "<u4", "<i4", "<i8")]


def _base64_strings(span) -> list[bytes]:
    """Every string value on the span and its events that decodes as base64 (payload chunks)."""
    texts = [kv.value.string_value for kv in span.attributes]
    for event in span.events:
        for kv in event.attributes:
            texts.append(kv.value.string_value)
            texts.extend(item.string_value for item in kv.value.array_value.values)
    decoded = []
    for text in filter(None, texts):
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            continue
    return decoded


def _joined_payload_arrays(span) -> list[bytes]:
    """Each payload array's data, its chunks joined and decoded (an array may span several chunks)."""
    out = []
    for event in span.events:
        values = {kv.key: kv.value for kv in event.attributes}
        data, dtype = values.get("corevital.payload.data"), values.get("corevital.payload.dtype")
        if data is not None and dtype.string_value != "json":
            out.append(base64.b64decode("".join(v.string_value for v in data.array_value.values)))
    return out


def _integer_runs(span) -> list[list[int]]:
    """Integer attribute values in the order the span carries them: per key across its events, and int arrays."""
    by_key: dict[str, list[int]] = {}
    runs = []
    for holder in [span, *span.events]:
        for kv in holder.attributes:
            if kv.value.WhichOneof("value") == "int_value":
                by_key.setdefault(kv.key, []).append(kv.value.int_value)
            elif kv.value.WhichOneof("value") == "array_value":
                runs.append([v.int_value for v in kv.value.array_value.values if v.WhichOneof("value") == "int_value"])
    return [*by_key.values(), *runs]


def ids_leaked(wire: bytes, span, ids: list[int]) -> list[str]:
    """Where the token ids `ids` (in order) can be found in what was exported."""
    found = []
    blobs = {"raw wire": [wire], "base64 string": _base64_strings(span), "payload array": _joined_payload_arrays(span)}
    for where, contents in blobs.items():
        if any(packed in blob for blob in contents for packed in _packed(ids)):
            found.append(where)
    text = ",".join(map(str, ids))
    if any(text in ",".join(map(str, run)) for run in _integer_runs(span)):
        found.append("integer attributes")
    if any(separator.join(map(str, ids)).encode() in wire for separator in (",", ", ")):
        found.append("decimal text (JSON)")
    if b"token_id" in wire:
        found.append("a token_id key")
    return found


@pytest.mark.parametrize("capture_mode", ["summary", "full", "on_risk"])
@pytest.mark.parametrize("content", [None, False], ids=["content env unset", "content env false"])
def test_no_prompt_or_completion_text_on_the_wire(monkeypatch, capture_mode, content):
    wire, span, prompt, completion, generated = export_one_generation(monkeypatch, capture_mode, content)
    words = PROMPT.split() + completion.split()
    assert len(completion.split()) == 8
    leaked = [word for word in words if word.encode() in wire]
    assert not leaked, leaked
    assert PREFIX.encode() not in wire  # no word of the vocabulary at all
    assert len(set(generated)) > 2  # ids distinctive enough for the scan to mean something
    assert not ids_leaked(wire, span, generated), ids_leaked(wire, span, generated)
    assert not ids_leaked(wire, span, prompt), ids_leaked(wire, span, prompt)
    if capture_mode != "summary":  # the full-trace payload went out, and it carries no text either
        assert any(event.name.startswith("corevital.payload") for event in span.events)


def test_content_capture_on_puts_the_text_on_the_wire(monkeypatch):
    """Control: the same scans find every word, and the ids, once the user opts in."""
    wire, span, _, completion, generated = export_one_generation(monkeypatch, "full", True)
    for word in PROMPT.split() + completion.split():
        assert word.encode() in wire, word
    assert {"payload array", "integer attributes", "a token_id key"} <= set(ids_leaked(wire, span, generated))


def test_prompt_hash_is_a_sha256_of_model_id_and_token_ids(monkeypatch):
    """The prompt is represented by a hash only: sha256 over the model id and the prompt's token
    ids (docs/reliability.md). Anyone holding the same prompt can recompute it; nobody can read
    the prompt out of it."""
    wire, span, prompt_ids, _, _ = export_one_generation(monkeypatch, "summary", None)
    attributes = {kv.key: kv.value for kv in span.attributes}
    model_id = attributes["gen_ai.request.model"].string_value
    expected = hashlib.sha256(f"{model_id}\nids\n{','.join(map(str, prompt_ids))}".encode()).hexdigest()
    assert attributes["corevital.prompt.hash"].string_value == expected
