"""Device memory held by a capture does not scale with steps x hidden size or prompt length squared."""

import torch

from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
from tests.conftest import VOCAB, _build
from transformers import LlamaConfig, LlamaForCausalLM


def _wide_llama():
    config = LlamaConfig(
        num_hidden_layers=2, hidden_size=512, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=4096, eos_token_id=None,
    )
    return _build(LlamaForCausalLM, config)


def _captured_bytes(model, prompt_length, new_tokens):
    ids = torch.randint(3, VOCAB, (1, prompt_length), generator=torch.Generator().manual_seed(0))
    session = CaptureSession(model, CaptureOptions(max_steps=new_tokens))
    try:
        session.attach()
        with session.active():
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    finally:
        session.detach()
    buffers = session.buffers
    tensors = [getattr(buffers, name) for name in vars(buffers)]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def test_buffers_grow_far_slower_than_steps_times_hidden():
    model = _wide_llama()
    short, long = _captured_bytes(model, 8, 32), _captured_bytes(model, 8, 512)
    hidden_per_step = model.config.hidden_size * 4  # one float32 hidden vector
    # keeping one hidden vector per step would add 480 * 512 * 4 bytes; summaries add a few stats per layer
    assert long - short < (512 - 32) * hidden_per_step / 4


def test_buffers_do_not_depend_on_prompt_length():
    model = _wide_llama()
    assert _captured_bytes(model, 16, 8) == _captured_bytes(model, 1024, 8)
