"""Full-trace prompt telemetry: the same under SDPA and eager, padding excluded, surprisal exact."""

import math

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.capture import prompt
from opentelemetry_instrumentation_corevital.capture.prompt import SPARSE_THRESHOLD
from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
from tests.conftest import build_gpt2, build_llama, prompt_ids


def _prompt_summaries(model, ids, mask, **options):
    options = dict(max_steps=3, prompt_telemetry=True, input_batch=ids.shape[0], **options)
    session = CaptureSession(model, CaptureOptions(**options))
    try:
        session.attach()
        with session.active():
            output = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    finally:
        session.detach()
    session.finish(output, set())
    assert session.fault is None
    return session.prompt_summaries


@pytest.mark.parametrize("length", [12, 700])  # 700 > MAX_PROMPT_QUERIES: sampled query rows
@pytest.mark.parametrize("build", [build_llama, build_gpt2])
def test_sdpa_and_eager_give_the_same_prompt_telemetry(build, length):
    ids = prompt_ids(batch=2, length=length)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    sdpa = _prompt_summaries(build("sdpa"), ids, mask)
    eager = _prompt_summaries(build("eager"), ids, mask)
    for row in range(2):
        assert np.isfinite(sdpa.basin[row]).all()
        np.testing.assert_allclose(sdpa.basin[row], eager.basin[row], atol=1e-5)
        np.testing.assert_allclose(sdpa.layer_transformation[row], eager.layer_transformation[row], atol=1e-4)
        for layer in range(len(sdpa.sparse[row])):
            weights, other = sdpa.sparse[row][layer][2], eager.sparse[row][layer][2]
            np.testing.assert_allclose(np.sort(weights, -1), np.sort(other, -1), atol=1e-5)


def test_prompt_attention_in_chunks_of_one_query_equals_the_whole_attention_at_once(monkeypatch):
    """SDPA's recomputed attention, one query per chunk (the sums, and the strongest keys chosen
    once per layer from every chunk's candidates), equals eager attention's weights taken whole."""
    monkeypatch.setattr(prompt, "MIN_CHUNK_BYTES", 1)
    ids = prompt_ids(batch=2, length=40)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    chunked = _prompt_summaries(build_llama("sdpa"), ids, mask, pending_bytes=1)
    whole = _prompt_summaries(build_llama("eager"), ids, mask)
    for row in range(2):
        np.testing.assert_allclose(chunked.basin[row], whole.basin[row], atol=1e-5)
        for layer in range(len(whole.sparse[row])):
            got, expected = _strong_links(chunked.sparse[row][layer]), _strong_links(whole.sparse[row][layer])
            assert got.keys() == expected.keys() and expected
            np.testing.assert_allclose([got[link] for link in expected], list(expected.values()), atol=1e-5)


def _strong_links(sparse) -> dict:
    """{(head, query, key): weight} of a layer's kept links."""
    queries, keys, weights = sparse
    return {(head, int(q), int(k)): float(w) for head in range(weights.shape[0])
            for q, k, w in zip(queries[head], keys[head], weights[head]) if w > 0}


def test_sparse_attention_keeps_only_strong_weights_of_real_tokens():
    ids = prompt_ids(batch=2, length=12)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    summaries = _prompt_summaries(build_llama(), ids, mask)
    queries, keys, weights = summaries.sparse[1][0]
    kept = weights > 0
    assert kept.any()
    assert (weights[kept] > SPARSE_THRESHOLD).all()
    assert (queries[kept] >= 3).all() and (keys[kept] >= 3).all()  # no padded positions
    assert (keys[kept] <= queries[kept]).all()  # causal


def test_prompt_surprisal_matches_a_plain_forward():
    model = build_llama()
    ids = prompt_ids(length=10)
    summaries = _prompt_summaries(model, ids, torch.ones_like(ids))
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    expected = (-log_probs.gather(1, ids[0, 1:, None]).squeeze(1) / math.log(2)).numpy()
    np.testing.assert_allclose(summaries.surprisal[0], expected, atol=1e-3)


def test_a_batch_shares_the_sampled_prompt_queries_at_least_the_floor_per_prompt():
    """8 prompts of 200 tokens: 512 / 8 = 64 evenly spaced query positions each, the last
    included; the strongest links come from those queries only."""
    ids = prompt_ids(batch=8, length=200)
    summaries = _prompt_summaries(build_llama(), ids, torch.ones_like(ids))
    per_prompt = max(prompt.MIN_QUERIES_PER_PROMPT, prompt.MAX_PROMPT_QUERIES // 8)
    assert per_prompt == 64
    sampled = set(prompt.sampled_queries(200, per_prompt, "cpu").tolist())
    assert len(sampled) == per_prompt and 199 in sampled and 0 in sampled
    for row in range(8):
        queries = {int(q) for layer in summaries.sparse[row] for q, w in zip(layer[0].ravel(), layer[2].ravel()) if w > 0}
        assert len(queries) > 8 and queries <= sampled
