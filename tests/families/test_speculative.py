"""Assisted decoding is one user call: the assistant's own generate calls are part of it.

The matrix checks the assisted call itself (one span, exact counts, the reason it has no
per-token health); here: the assistant stays an ordinary model outside that call.
"""

import torch

from tests.families.zoo import ASSISTANT, STEPS, family, inputs, models


def test_the_assistant_called_directly_afterwards_gets_its_own_span(telemetry, instrument):
    model, assistant = models("gpt2")[0], models(ASSISTANT)[0]
    instrument()
    kwargs = {**inputs(family("gpt2")), "max_new_tokens": STEPS, "do_sample": False}
    with torch.no_grad():
        model.generate(**kwargs, assistant_model=assistant)
        assistant.generate(**kwargs)
    spans = telemetry.finished()
    assert [s.attributes["gen_ai.request.model"] for s in spans] == ["GPT2LMHeadModel", "LlamaForCausalLM"]
    assert "corevital.error" not in spans[1].attributes
    assert any(e.name == "corevital.step" for e in spans[1].events)


def test_self_speculative_decoding_is_one_call(telemetry, instrument):
    """assistant_early_exit drafts with the model's own first layers, through a nested generate on the same model."""
    model = models("llama")[0]
    kwargs = {**inputs(family("llama")), "max_new_tokens": STEPS, "do_sample": False, "assistant_early_exit": 1}
    with torch.no_grad():
        expected = model.generate(**kwargs)
        instrument()
        output = model.generate(**kwargs)
    assert torch.equal(output, expected)
    a = telemetry.only_span().attributes
    assert "corevital.error" not in a
    assert a["gen_ai.usage.input_tokens"] == kwargs["input_ids"].shape[1]
    assert a["gen_ai.usage.output_tokens"] == output.shape[1] - kwargs["input_ids"].shape[1]
    assert a["corevital.capture.unavailable_reason"]
