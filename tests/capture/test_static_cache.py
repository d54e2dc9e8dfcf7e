"""Under a static cache, prefill keys span the whole cache: unfilled slots must not count.

Prompt telemetry and newest-query attention under `cache_implementation="static"` equal the
same call's with the default dynamic cache, also where the prefill receives the model's
prepared masks as a dict per layer type (Qwen2).
"""

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
from tests.conftest import build_llama, build_qwen2, prompt_ids

STEPS = 3


def _run(model, ids, mask, **generate_kwargs):
    options = CaptureOptions(max_steps=STEPS, prompt_telemetry=True, input_batch=ids.shape[0])
    session = CaptureSession(model, options)
    try:
        session.attach()
        with session.active():
            output = model.generate(ids, attention_mask=mask, max_new_tokens=STEPS, do_sample=False, **generate_kwargs)
    finally:
        session.detach()
    summaries = session.finish(output, set())
    assert session.fault is None, session.fault
    return output, summaries, session.prompt_summaries


@pytest.mark.parametrize("build", [build_llama, build_qwen2])
def test_static_cache_gives_the_dynamic_cache_telemetry(build):
    model = build()
    ids = prompt_ids(batch=2, length=8)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    dynamic_output, dynamic, dynamic_prompt = _run(model, ids, mask)
    static_output, static, static_prompt = _run(model, ids, mask, cache_implementation="static")
    assert torch.equal(static_output, dynamic_output)
    np.testing.assert_allclose(static.attention, dynamic.attention, atol=1e-4)
    np.testing.assert_allclose(static.logit("entropy"), dynamic.logit("entropy"), atol=1e-4)
    for row in range(2):
        np.testing.assert_allclose(static_prompt.basin[row], dynamic_prompt.basin[row], atol=1e-5)
        for layer in range(len(dynamic_prompt.sparse[row])):
            got, expected = static_prompt.sparse[row][layer], dynamic_prompt.sparse[row][layer]
            np.testing.assert_allclose(np.sort(got[2], -1), np.sort(expected[2], -1), atol=1e-5)
            assert (got[1][got[2] > 0] < ids.shape[1]).all()  # no unfilled cache slot is attended
