"""Synthetic runs for the payload and report tests: RunSummaries and prompt telemetry holding the
awkward values a real run can hold, round-trip checks within the payload's dtype tolerances,
and a span exported through the real SDK and its OTLP protobuf encoder."""

from __future__ import annotations

import numpy as np
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_corevital.summaries import (
    ATTENTION_STATS,
    HIDDEN_STATS,
    LOGIT_STATS,
    PromptSummaries,
    RunSummaries,
)
from opentelemetry_instrumentation_corevital.telemetry import payload as P

F16 = dict(rtol=2.0**-11, atol=2.0**-24)  # float16 rounding (normal and subnormal range)


def synthetic_run(sequences=2, steps=40, layers=4, heads=4, prompt_rows=2, prompt_length=24, cap=32, seed=0):
    """RunSummaries + prompt telemetry with the awkward values a real run can hold."""
    rng = np.random.default_rng(seed)
    n, s, L = sequences, steps, layers
    logits = np.zeros((n, s, len(LOGIT_STATS)), np.float32)
    logits[..., LOGIT_STATS.index("entropy")] = rng.uniform(0, 12, (n, s))
    logits[..., LOGIT_STATS.index("margin")] = rng.uniform(0, 1, (n, s))
    logits[..., LOGIT_STATS.index("topk_mass")] = rng.uniform(0, 1, (n, s))
    logits[..., LOGIT_STATS.index("max_prob")] = rng.uniform(0, 1, (n, s))
    logits[..., LOGIT_STATS.index("surprisal")] = rng.uniform(0, 30, (n, s))
    logits[0, 3, LOGIT_STATS.index("surprisal")] = np.inf  # probability underflowed to 0
    logits[0, 5, LOGIT_STATS.index("nan_count")] = 7
    valid = np.ones((n, s), bool)
    valid[-1, s - 5 :] = False  # finished early: post-EOS padding is NaN
    logits[-1, s - 5 :] = np.nan
    hidden = np.zeros((n, s, L, len(HIDDEN_STATS)), np.float32)
    hidden[..., 0] = rng.normal(0, 0.1, (n, s, L))
    hidden[..., 1] = rng.uniform(0.5, 3, (n, s, L))
    hidden[..., 2] = rng.uniform(10, 200, (n, s, L))
    hidden[0, 0, :, 2] = 3.0e5  # the prompt step's norms dwarf float16's range
    hidden[..., 3] = rng.uniform(1, 50, (n, s, L))
    hidden[-1, s - 5 :] = np.nan
    attention = np.zeros((n, s, L, len(ATTENTION_STATS)), np.float32)
    attention[..., :3] = np.sort(rng.uniform(0, 6, (n, s, L, 3)), -1)
    attention[..., 3:5] = np.sort(rng.uniform(0, 1, (n, s, L, 2)), -1)
    attention[..., 5:] = rng.integers(0, heads + 1, (n, s, L, 2))
    attention[:, 1::2] = np.nan  # attention_every = 2: odd steps not observed
    cosine = rng.uniform(0.99, 1.0, (n, s, 32)).astype(np.float32)
    for lag in range(32):
        cosine[:, : lag + 1, lag] = np.nan
    summaries = RunSummaries(
        logits=logits,
        token_ids=rng.integers(0, 70_000, (n, s)),
        valid=valid,
        hidden=hidden,
        attention=attention,
        repetition_cosine=cosine,
        num_heads=heads,
        model_type="llama",
    )
    prompt = PromptSummaries()
    for _ in range(prompt_rows):
        prompt.surprisal.append(rng.uniform(0, 16, prompt_length - 1).astype(np.float32))
        prompt.layer_transformation.append(rng.uniform(0, 1, L).astype(np.float32))
        basin = rng.uniform(0, 3, (L, heads)).astype(np.float32)
        basin[0, 0] = 1e10  # no mass on the outer thirds
        prompt.basin.append(basin)
        row = []
        for _ in range(L):
            query = rng.integers(0, prompt_length, (heads, cap)).astype(np.int32)
            key = np.minimum(rng.integers(0, prompt_length, (heads, cap)), query).astype(np.int32)
            weight = rng.uniform(0.011, 1, (heads, cap)).astype(np.float32)
            weight[:, cap // 2 :] = 0  # unused slots
            weight[0, cap // 4 :] = 0  # a head with fewer strong weights
            row.append((query, key, weight))
        prompt.sparse.append(row)
    return summaries, prompt


def kept_entries(query, key, weight, cap=None):
    """{(query, key): weight} of one head's strongest `cap` entries above zero."""
    order = np.argsort(-weight, kind="stable")
    kept = [i for i in order if weight[i] > 0][:cap]
    return {(int(query[i]), int(key[i])): float(weight[i]) for i in kept}


def assert_prompt_round_trip(original, decoded, cap=None):
    for r in range(len(original.basin)):
        np.testing.assert_allclose(decoded.surprisal[r], original.surprisal[r], **F16)
        np.testing.assert_allclose(decoded.layer_transformation[r], original.layer_transformation[r], **F16)
        basin = original.basin[r]
        expected_dtype_tolerance = F16 if np.abs(basin).max() <= 65504 else dict(rtol=0, atol=0)
        np.testing.assert_allclose(decoded.basin[r], basin, **expected_dtype_tolerance)
        for layer, (q, k, w) in enumerate(original.sparse[r]):
            dq, dk, dw = decoded.sparse[r][layer]
            for h in range(w.shape[0]):
                want = kept_entries(q[h], k[h], w[h], cap)
                got = kept_entries(dq[h], dk[h], dw[h])
                assert set(got) == set(want)
                np.testing.assert_allclose([got[x] for x in want], list(want.values()), **F16)


def assert_summaries_round_trip(original: RunSummaries, decoded: RunSummaries):
    # content capture is off by default: the payload carries the token pattern, not the ids
    np.testing.assert_array_equal(decoded.token_ids, P.token_pattern(original.token_ids))
    np.testing.assert_array_equal(decoded.valid, original.valid)
    np.testing.assert_allclose(decoded.logits, original.logits, equal_nan=True, **F16)
    counts = [LOGIT_STATS.index("nan_count"), LOGIT_STATS.index("inf_count")]
    np.testing.assert_array_equal(decoded.logits[..., counts], original.logits[..., counts])
    norms = [HIDDEN_STATS.index("l2_norm"), HIDDEN_STATS.index("max_abs")]
    np.testing.assert_array_equal(decoded.hidden[..., norms], original.hidden[..., norms])  # float32: exact
    np.testing.assert_allclose(decoded.hidden, original.hidden, equal_nan=True, **F16)
    np.testing.assert_allclose(decoded.attention, original.attention, equal_nan=True, **F16)
    np.testing.assert_array_equal(decoded.repetition_cosine, original.repetition_cosine)  # float32: exact
    assert decoded.num_heads == original.num_heads
    assert decoded.model_type == original.model_type


# -- the real SDK -------------------------------------------------------------------------------


def export_span(events, limits=None, attributes=None):
    """Attach events to a span of a real TracerProvider; return (finished span, OTLP bytes)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits) if limits else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("test").start_span("text_completion tiny", attributes=attributes or {})
    for name, event_attributes in events:
        span.add_event(name, event_attributes)
    span.end()
    (finished,) = exporter.get_finished_spans()
    return finished, encode_spans([finished]).SerializeToString()


def bare_otlp_size(attributes=None) -> int:
    return len(export_span([], attributes=attributes)[1])
