"""Full-trace payload: exact round trip, byte budget, SDK limits and OTLP protobuf encoding."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from opentelemetry.sdk.trace import SpanLimits

from opentelemetry_instrumentation_corevital.analysis import analyze
from opentelemetry_instrumentation_corevital.summaries import HIDDEN_STATS, LOGIT_STATS, RunSummaries
from opentelemetry_instrumentation_corevital.telemetry import payload as P
from opentelemetry_instrumentation_corevital.telemetry.payload import decode_payload, event_size, payload_events
from opentelemetry_instrumentation_corevital.telemetry.payload.encode import _SparseAttention
from opentelemetry_instrumentation_corevital.telemetry.payload.format import array_event, array_event_size
from tests.support.payload_runs import (
    F16,
    assert_prompt_round_trip,
    assert_summaries_round_trip,
    bare_otlp_size,
    export_span,
    synthetic_run,
)

BUDGET = 512 * 1024


# -- synthetic round trip -------------------------------------------------------------------


def test_encode_decode_round_trip_within_dtype_tolerances():
    summaries, prompt = synthetic_run()
    analysis = analyze(summaries)
    events, info = payload_events(summaries, prompt, analysis, BUDGET)
    assert info[P.PAYLOAD_TRUNCATED] == []
    assert info[P.PAYLOAD_VERSION_ATTRIBUTE] == P.PAYLOAD_VERSION
    decoded = decode_payload(events)
    assert decoded.problems == []
    assert decoded.sections == [
        "steps", "analysis", "layers", "attention", "repetition", "prompt", "prompt_attention"
    ]
    assert_summaries_round_trip(summaries, decoded.summaries())
    assert_prompt_round_trip(prompt, decoded.prompt())
    assert decoded.analysis["aggregate"]["risk_score"] == pytest.approx(analysis.aggregate.risk_score)
    assert [s["label"] for s in decoded.analysis["sequences"]] == [s.label for s in analysis.sequences]


def test_dtypes_are_compact_and_never_overflow():
    summaries, prompt = synthetic_run()
    events, _ = payload_events(summaries, prompt, None, BUDGET, token_ids=True)
    dtypes = {(a[P.SECTION], a[P.ARRAY]): a[P.DTYPE] for name, a in events if P.ARRAY in a}
    assert dtypes[("steps", "logits")] == "float16"  # entropy, probabilities, surprisal (inf kept)
    assert dtypes[("steps", "token_ids")] == "uint32"  # ids above 65535 (content capture on)
    assert dtypes[("steps", "logit_counts")] == "float16"  # NaN after EOS: not observed
    assert dtypes[("steps", "valid")] == "uint8"
    assert dtypes[("layers", "hidden_norms")] == "float32"
    assert dtypes[("layers", "hidden_moments")] == "float16"
    assert dtypes[("repetition", "repetition_cosine")] == "float32"  # the loop threshold is 0.9995
    assert dtypes[("prompt", "basin")] == "float32"  # a ratio of 1e10 would be inf in float16
    assert dtypes[("prompt_attention", "query")] == "uint8"
    assert dtypes[("prompt_attention", "weight")] == "float16"
    decoded = decode_payload(events).summaries()
    assert decoded.hidden[0, 0, 0, HIDDEN_STATS.index("l2_norm")] == np.float32(3.0e5)
    assert np.isinf(decoded.logits[0, 3, LOGIT_STATS.index("surprisal")])


def test_data_is_chunked_for_attribute_length_limits():
    summaries, prompt = synthetic_run(steps=200, layers=6)
    events, _ = payload_events(summaries, prompt, analyze(summaries), BUDGET)
    for name, attributes in events:
        if P.DATA not in attributes:
            continue
        chunks = attributes[P.DATA]
        assert isinstance(chunks, list) and all(len(c) <= P.CHUNK_CHARS for c in chunks)
        if attributes[P.DTYPE] != "json":
            for chunk in chunks:
                base64.b64decode(chunk, validate=True)  # each chunk decodes on its own
    # an SDK that truncates long strings (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=2048) keeps it intact
    span, _ = export_span(events, limits=SpanLimits(max_attribute_length=2048))
    decoded = decode_payload(span.events)
    assert decoded.problems == []
    assert_summaries_round_trip(summaries, decoded.summaries())


def test_event_count_and_attributes_stay_within_sdk_defaults_for_any_batch():
    summaries, prompt = synthetic_run(sequences=6, prompt_rows=5, layers=8, steps=64)
    events, info = payload_events(summaries, prompt, analyze(summaries), BUDGET)
    assert info[P.PAYLOAD_TRUNCATED] == []
    assert len(events) <= 19 <= P.MAX_EVENTS  # one event per array, never per sequence or row
    assert max(len(attributes) for _, attributes in events) <= 10
    span, _ = export_span(events)
    assert span.dropped_events == 0
    assert all(event.dropped_attributes == 0 for event in span.events)


def test_payload_attributes_are_documented_names_only():
    """Token ids travel, token text never: every key is one of the documented payload keys."""
    summaries, prompt = synthetic_run()
    events, _ = payload_events(summaries, prompt, analyze(summaries), BUDGET)
    known = {v for v in vars(P).values() if isinstance(v, str) and v.startswith("corevital.payload")}
    for name, attributes in events:
        assert name == P.HEADER_EVENT or name.removeprefix(P.EVENT_PREFIX) in P.SECTIONS
        assert set(attributes) <= known


def test_sizes_are_exact_otlp_protobuf_sizes():
    summaries, prompt = synthetic_run()
    events, info = payload_events(summaries, prompt, analyze(summaries), BUDGET)
    _, encoded = export_span(events)
    growth = len(encoded) - bare_otlp_size()
    # the events themselves, plus a few bytes of longer length prefixes of the enclosing messages
    assert info[P.PAYLOAD_BYTES] <= growth <= info[P.PAYLOAD_BYTES] + 8
    assert info[P.PAYLOAD_BYTES] == sum(event_size(*event) for event in events)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float16", "float32", "int64"])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 749, 750, 751, 1500, 1501, 4000])  # chunk edges: 1500 bytes = 2000 chars
def test_array_event_size_without_encoding_is_the_encoded_events_size(dtype, length):
    array = np.arange(length).astype(dtype)
    extra = {P.CAP: 17}
    expected = event_size(*array_event("prompt_attention", "key", array, dtype, extra=extra))
    assert array_event_size("prompt_attention", "key", array.shape, dtype, extra=extra) == expected


def test_the_sparse_attention_size_at_every_cap_is_its_encoded_size():
    _, prompt = synthetic_run()
    sparse = _SparseAttention(prompt.sparse)
    assert sparse.max_count > 1
    for cap in range(1, sparse.max_count + 2):
        assert sparse.size(cap) == sum(event_size(*event) for event in sparse.events(cap)), cap


def test_the_sparse_attention_size_follows_the_kept_positions_dtype_at_every_cap():
    """Strong links between early positions, weak ones reaching past 255 and 65535: the kept
    positions' integer dtype changes with the cap (uint8, uint16, uint32), and so must the size."""
    rng = np.random.default_rng(3)
    heads, width = 4, 12

    def layer(offset):
        weights = np.sort(rng.uniform(0.02, 1.0, (heads, width)), axis=-1)[:, ::-1].copy()
        weights[:, -2:] = 0.0  # unused slots
        positions = np.arange(width)[None, :] * np.array([1, 40, 8000, 3])[:, None] + offset
        shuffle = rng.permutation(width)  # entries arrive in any order; the strongest are kept first
        return positions[:, shuffle], (positions + 1)[:, shuffle], weights[:, shuffle]

    sparse = _SparseAttention([[layer(0), None, layer(5)], [layer(2), layer(1), None]])
    dtypes = set()
    for cap in range(1, sparse.max_count + 2):
        events = sparse.events(cap)
        dtypes.add(dict(events[1][1])[P.DTYPE])
        assert sparse.size(cap) == sum(event_size(*event) for event in events), cap
    assert {"uint8", "uint16", "uint32"} <= dtypes
    negative = _SparseAttention([[layer(-3)]])  # never captured, but sized exactly all the same
    for cap in range(1, negative.max_count + 2):
        assert negative.size(cap) == sum(event_size(*event) for event in negative.events(cap)), cap


# -- budget ---------------------------------------------------------------------------------------


def test_over_budget_first_reduces_the_sparse_attention_cap():
    summaries, prompt = synthetic_run()
    full_events, full = payload_events(summaries, prompt, None, BUDGET)
    budget = full[P.PAYLOAD_BYTES] - 600
    events, info = payload_events(summaries, prompt, None, budget)
    assert info[P.PAYLOAD_BYTES] <= budget
    (note,) = info[P.PAYLOAD_TRUNCATED]
    assert note.startswith("prompt_attention:cap=")
    cap = int(note.split("=")[1])
    decoded = decode_payload(events)
    assert decoded.sparse_cap == cap and 1 <= cap < 16
    assert decoded.header[P.TRUNCATED] == [note]
    assert_prompt_round_trip(prompt, decoded.prompt(), cap=cap)  # each head's strongest kept
    assert_summaries_round_trip(summaries, decoded.summaries())


def test_tiny_budget_drops_lower_priority_sections_and_records_them():
    summaries, prompt = synthetic_run(steps=128, layers=6)
    events, info = payload_events(summaries, prompt, analyze(summaries), 8 * 1024)
    assert 0 < info[P.PAYLOAD_BYTES] <= 8 * 1024
    decoded = decode_payload(events)
    assert "steps" in decoded.sections  # the highest priority survives
    assert {"layers", "attention", "repetition"} <= set(info[P.PAYLOAD_TRUNCATED])
    assert set(decoded.sections).isdisjoint(info[P.PAYLOAD_TRUNCATED])
    _, encoded = export_span(events)
    assert len(encoded) - bare_otlp_size() <= 8 * 1024 + 8


@pytest.mark.parametrize("budget", [0, 100, 431, 1_000, 3_000, 6_000, 20_000, 60_000, 120_000])
def test_budget_is_never_exceeded(budget):
    summaries, prompt = synthetic_run()
    events, info = payload_events(summaries, prompt, analyze(summaries), budget)
    size = sum(event_size(*event) for event in events)
    assert size == info[P.PAYLOAD_BYTES] <= budget
    if not events:
        assert info[P.PAYLOAD_BYTES] == 0 and "steps" in info[P.PAYLOAD_TRUNCATED]
    else:
        decoded = decode_payload(events)
        assert decoded.problems == []
        dropped = [t for t in info[P.PAYLOAD_TRUNCATED] if ":" not in t]
        assert set(decoded.sections).isdisjoint(dropped)
        assert set(decoded.sections) | set(dropped) == {
            "steps", "analysis", "layers", "attention", "repetition", "prompt", "prompt_attention"
        }


def test_corrupt_or_cut_data_is_reported_not_guessed():
    summaries, prompt = synthetic_run()
    events, _ = payload_events(summaries, prompt, None, BUDGET)
    damaged = []
    for name, attributes in events:
        if attributes.get(P.ARRAY) == "hidden_norms":
            attributes = {**attributes, P.DATA: attributes[P.DATA][:-1]}  # a backend cut the value
        damaged.append((name, attributes))
    decoded = decode_payload(damaged)
    assert len(decoded.problems) == 1 and "layers.hidden_norms" in decoded.problems[0]
    rebuilt = decoded.summaries()
    assert np.isnan(rebuilt.hidden[..., HIDDEN_STATS.index("l2_norm")]).all()  # not observed, not zero
    np.testing.assert_allclose(rebuilt.logits, summaries.logits, equal_nan=True, **F16)


def test_empty_run_and_missing_parts():
    empty = RunSummaries.empty(1, num_layers=2)
    events, info = payload_events(empty, None, None, BUDGET)
    assert info[P.PAYLOAD_TRUNCATED] == []
    decoded = decode_payload(events)
    assert decoded.sections == ["steps", "layers"]
    rebuilt = decoded.summaries()
    assert rebuilt.logits.shape == (1, 0, len(LOGIT_STATS)) and rebuilt.hidden.shape == (1, 0, 2, len(HIDDEN_STATS))
    assert rebuilt.attention is None and decoded.prompt() is None


# -- a real 256-step run on a 12-layer model ------------------------------------------------


@pytest.fixture(scope="module")
def real_run():
    from opentelemetry_instrumentation_corevital.capture import attention_registry
    from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
    from tests.conftest import build_llama, prompt_ids

    model = build_llama(layers=12)  # fixed seed inside
    ids = prompt_ids(length=64, seed=7)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only contend on a shared machine
    attention_registry.install()
    session = CaptureSession(
        model, CaptureOptions(max_steps=256, prompt_telemetry=True, input_batch=1, eos_token_ids=(2,))
    )
    try:
        session.attach()
        with session.active(), torch.no_grad():
            output = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=256, min_new_tokens=256, do_sample=False
            )
    finally:
        session.detach()
        attention_registry.uninstall()
        torch.set_num_threads(threads)
    summaries = session.finish(output, {2})
    assert session.fault is None
    return summaries, session.prompt_summaries, analyze(summaries)


def test_256_step_12_layer_payload_fits_the_budget_and_survives_otlp(real_run):
    summaries, prompt, analysis = real_run
    assert summaries.hidden.shape == (1, 256, 12, len(HIDDEN_STATS))
    assert summaries.attention is not None and len(prompt.surprisal[0]) == 63
    events, info = payload_events(summaries, prompt, analysis, BUDGET)
    size = info[P.PAYLOAD_BYTES]
    print(f"\n256 steps x 12 layers: payload {size} bytes in {len(events)} events")
    assert 0 < size <= BUDGET
    assert info[P.PAYLOAD_TRUNCATED] == []
    assert len(events) <= P.MAX_EVENTS

    span_attributes = {**info, "gen_ai.request.model": "tiny-llama-12"}
    span, encoded = export_span(events, attributes=span_attributes)
    assert span.dropped_events == 0 and len(span.events) == len(events)
    assert all(event.dropped_attributes == 0 for event in span.events)
    print(f"OTLP protobuf (whole span): {len(encoded)} bytes")
    assert len(encoded) < 4 * 1024 * 1024
    assert abs(len(encoded) - size) <= 0.03 * size
    assert 0 <= len(encoded) - bare_otlp_size(span_attributes) - size <= 8

    decoded = decode_payload(span.events)  # straight from what the SDK kept
    assert decoded.problems == []
    assert_summaries_round_trip(summaries, decoded.summaries())
    assert_prompt_round_trip(prompt, decoded.prompt())


def test_256_step_payload_under_a_tiny_budget(real_run):
    summaries, prompt, analysis = real_run
    events, info = payload_events(summaries, prompt, analysis, 8 * 1024)
    print(f"\n8 KiB budget: {info[P.PAYLOAD_BYTES]} bytes, truncated {info[P.PAYLOAD_TRUNCATED]}")
    assert 0 < info[P.PAYLOAD_BYTES] <= 8 * 1024
    assert {"layers", "attention", "repetition"} <= set(info[P.PAYLOAD_TRUNCATED])
    decoded = decode_payload(export_span(events)[0].events)
    assert decoded.sections[0] == "steps"
    np.testing.assert_array_equal(decoded.summaries().token_ids, P.token_pattern(summaries.token_ids))


def test_token_ids_leave_only_with_content_capture():
    """Without content capture the steps carry the token pattern: which steps chose the same token,
    never which token (an id decodes to the completion). With it, the ids themselves."""
    summaries, prompt = synthetic_run()
    summaries.token_ids[0, :6] = [70_001, 512, 70_001, 512, 9, 70_001]
    private, _ = payload_events(summaries, prompt, None, BUDGET)
    arrays = {a[P.ARRAY] for _, a in private if P.ARRAY in a}
    assert "token_ids" not in arrays and "token_pattern" in arrays
    pattern = decode_payload(export_span(private)[0].events).summaries().token_ids
    assert pattern[0, :6].tolist() == [0, 1, 0, 1, 2, 0]
    assert np.array_equal(pattern, P.token_pattern(summaries.token_ids))
    assert pattern.max() == len(np.unique(summaries.token_ids)) - 1
    with_ids, _ = payload_events(summaries, prompt, None, BUDGET, token_ids=True)
    ids = decode_payload(export_span(with_ids)[0].events).summaries().token_ids
    np.testing.assert_array_equal(ids, summaries.token_ids)
