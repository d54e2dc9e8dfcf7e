"""Instrumented generate returns exactly what plain generate returns."""

import pytest
import torch

from tests.conftest import prompt_ids

MODES = ["summary", "full", "on_risk", "off"]


def _run(model, ids, seed, **kwargs):
    torch.manual_seed(seed)
    return model.generate(ids, **kwargs)


def _assert_identical(plain, traced):
    assert type(plain) is type(traced)
    if isinstance(plain, torch.Tensor):
        assert torch.equal(plain, traced)
        return
    assert torch.equal(plain.sequences, traced.sequences)
    for field in ("scores", "logits"):
        ours, theirs = getattr(plain, field, None), getattr(traced, field, None)
        assert (ours is None) == (theirs is None)
        for a, b in zip(ours or (), theirs or ()):
            assert torch.equal(a, b)


DECODING = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9),
    "beam": dict(do_sample=False, num_beams=3, num_return_sequences=2),
}


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2", "t5"])
@pytest.mark.parametrize("decoding", sorted(DECODING))
def test_outputs_are_bit_identical(models, instrument, name, decoding):
    model = models[name]
    ids = prompt_ids(batch=2)
    kwargs = dict(max_new_tokens=8, **DECODING[decoding])
    plain = _run(model, ids, 7, **kwargs)
    instrument(capture_mode="full")
    traced = _run(model, ids, 7, **kwargs)
    _assert_identical(plain, traced)


@pytest.mark.parametrize("mode", MODES)
def test_dict_outputs_with_scores_are_identical(models, instrument, mode):
    model = models["llama"]
    ids = prompt_ids()
    kwargs = dict(max_new_tokens=6, do_sample=True, return_dict_in_generate=True, output_scores=True, output_logits=True)
    plain = _run(model, ids, 11, **kwargs)
    instrument(capture_mode=mode)
    traced = _run(model, ids, 11, **kwargs)
    _assert_identical(plain, traced)


def test_no_output_flags_or_attention_switch(models, instrument, telemetry):
    """Capture never turns on output_* flags nor changes the attention implementation."""
    model = models["gpt2"]
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a, k: seen.append(dict(k)), with_kwargs=True)
    try:
        instrument()
        model.generate(prompt_ids(), max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert model.config._attn_implementation == "sdpa"
    for kwargs in seen:
        for flag in ("output_attentions", "output_hidden_states"):
            assert not kwargs.get(flag)
