"""Probes live for one call only; threads and nested calls never mix their summaries."""

import threading

import numpy as np
import torch

from tests.conftest import build_gpt2, build_llama, prompt_ids
from tests.support.capture import capture


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _probed_layer_count(model):
    """Modules with a `forward` of their own: the layer probes while a call is captured."""
    return sum("forward" in m.__dict__ for m in model.modules())


def test_probes_exist_only_during_the_call(models):
    model = models["llama"]
    hooks_before = _hook_count(model)
    during = []

    from transformers import StoppingCriteria, StoppingCriteriaList

    class CountProbes(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            during.append((_hook_count(model), _probed_layer_count(model)))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    capture(model, prompt_ids(), max_new_tokens=3, do_sample=False, stopping_criteria=StoppingCriteriaList([CountProbes()]))
    assert min(hooks for hooks, _ in during) > hooks_before
    assert {layers for _, layers in during} == {model.config.num_hidden_layers}
    assert _hook_count(model) == hooks_before
    assert _probed_layer_count(model) == 0


def test_a_forward_set_on_a_layer_runs_under_the_probe_and_is_put_back():
    """accelerate (device_map, offload) keeps its hook as the layer's own `forward`."""
    model, ids = build_llama(), prompt_ids(seed=23)
    expected = _summaries_alone(model, ids)
    layer = model.model.layers[1]
    calls = []

    def offload_hook(*args, **kwargs):
        calls.append(1)
        return type(layer).forward(layer, *args, **kwargs)

    layer.forward = offload_hook
    got = _summaries_alone(model, ids)
    assert layer.__dict__["forward"] is offload_hook
    assert len(calls) == 8  # one forward per step: the probe called through it
    np.testing.assert_allclose(got.hidden, expected.hidden, rtol=1e-5, atol=1e-5)


def test_a_forward_hook_that_rewrites_a_layer_output_is_seen_by_the_probe():
    """Steering and patching tools rewrite a layer's output in a forward hook: the layer state
    recorded is the one the next layer receives. Here layer 1 is skipped (its input returned),
    so its recorded state is layer 0's."""
    model, ids = build_llama(), prompt_ids(seed=26)
    layer = model.model.layers[1]

    def skip_layer(module, args, kwargs, output):
        skipped = args[0] if args else kwargs["hidden_states"]
        return (skipped, *output[1:]) if isinstance(output, tuple) else skipped

    handle = layer.register_forward_hook(skip_layer, with_kwargs=True)
    try:
        got = _summaries_alone(model, ids)
        assert _hook_count(model) == 1 and _probed_layer_count(model) == 0
    finally:
        handle.remove()
    np.testing.assert_allclose(got.hidden[:, :, 1], got.hidden[:, :, 0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(_summaries_alone(model, ids).hidden[:, :, 1], got.hidden[:, :, 0], atol=1e-3)


def test_with_a_global_forward_hook_layers_are_probed_by_hooks_with_the_same_values():
    """A global forward hook (profilers, debuggers) may rewrite any module's output, so layers
    are then probed by a hook after it; the values do not depend on the probe."""
    from torch.nn.modules.module import register_module_forward_hook

    from transformers import StoppingCriteria, StoppingCriteriaList

    model, ids = build_llama(), prompt_ids(seed=27)
    expected = _summaries_alone(model, ids)
    during = []

    class CountProbes(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            during.append((sum(len(layer._forward_hooks) for layer in model.model.layers), _probed_layer_count(model)))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    handle = register_module_forward_hook(lambda module, args, output: None)
    try:
        got = capture(model, ids, max_new_tokens=8, do_sample=False, stopping_criteria=StoppingCriteriaList([CountProbes()]))[1]
    finally:
        handle.remove()
    assert set(during) == {(model.config.num_hidden_layers, 0)}
    assert _hook_count(model) == 0
    np.testing.assert_allclose(got.hidden, expected.hidden, rtol=1e-6, atol=1e-6)


def test_another_models_layers_run_inside_the_call_are_not_recorded_as_its_own():
    """A logits processor may run another model whose layers carry the probe for a session in
    another thread: this call's session records its own layers only."""
    model, other = build_llama(), build_llama(layers=4)
    ids, other_ids = prompt_ids(seed=24), prompt_ids(seed=25)
    expected = _summaries_alone(model, ids)
    other_holds_probes, done = threading.Event(), threading.Event()

    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    class WaitInside(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            other_holds_probes.set()
            done.wait(timeout=60)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    holder = threading.Thread(target=lambda: capture(
        other, other_ids, max_new_tokens=2, do_sample=False, stopping_criteria=StoppingCriteriaList([WaitInside()])
    ))
    holder.start()
    assert other_holds_probes.wait(timeout=60)

    class RunOtherModel(LogitsProcessor):
        def __call__(self, input_ids, scores):
            with torch.no_grad():
                other(other_ids)
            return scores

    try:
        got = capture(model, ids, max_new_tokens=8, do_sample=False, logits_processor=LogitsProcessorList([RunOtherModel()]))[1]
    finally:
        done.set()
        holder.join(timeout=60)
    np.testing.assert_allclose(got.hidden, expected.hidden, rtol=1e-5, atol=1e-5)
    assert _probed_layer_count(other) == 0


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
