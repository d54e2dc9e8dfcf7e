"""Probes live for one call only; threads and nested calls never mix their summaries."""

import threading

import numpy as np
import torch

from tests.conftest import build_gpt2, build_llama, prompt_ids
from tests.support.capture import capture


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_exist_only_during_the_call(models):
    model = models["llama"]
    before = _hook_count(model)
    during = []

    from transformers import StoppingCriteria, StoppingCriteriaList

    class CountHooks(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            during.append(_hook_count(model))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    capture(model, prompt_ids(), max_new_tokens=3, do_sample=False, stopping_criteria=StoppingCriteriaList([CountHooks()]))
    assert min(during) > before
    assert _hook_count(model) == before


def _summaries_alone(model, ids):
    return capture(model, ids, max_new_tokens=8, do_sample=False)[1]


def test_two_threads_on_a_shared_model_keep_their_own_summaries():
    model = build_llama()
    prompts = [prompt_ids(seed=21), prompt_ids(seed=22, length=9)]
    expected = [_summaries_alone(model, ids) for ids in prompts]
    results = [None, None]
    barrier = threading.Barrier(2)

    def work(index):
        barrier.wait()
        for _ in range(3):
            results[index] = capture(model, prompts[index], max_new_tokens=8, do_sample=False)[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got.logits, want.logits, atol=1e-5)
        np.testing.assert_allclose(got.hidden, want.hidden, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got.attention, want.attention, atol=1e-5)
    assert _hook_count(model) == 0


def test_nested_generate_keeps_each_calls_summaries_apart():
    outer_model, inner_model = build_llama(), build_gpt2()
    outer_ids, inner_ids = prompt_ids(seed=31), prompt_ids(seed=32)
    expected_outer = _summaries_alone(outer_model, outer_ids)
    expected_inner = _summaries_alone(inner_model, inner_ids)
    inner_results = []

    from transformers import StoppingCriteria, StoppingCriteriaList

    class GenerateInside(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if not inner_results:
                inner_results.append(_summaries_alone(inner_model, inner_ids))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    _, outer, _ = capture(
        outer_model, outer_ids, max_new_tokens=8, do_sample=False,
        stopping_criteria=StoppingCriteriaList([GenerateInside()]),
    )
    np.testing.assert_allclose(outer.logits, expected_outer.logits, atol=1e-5)
    np.testing.assert_allclose(inner_results[0].logits, expected_inner.logits, atol=1e-5)
