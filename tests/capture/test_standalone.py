"""generate_captured, the capture the evaluation harness and `corevital calibrate` record with:
generate's own sequences, summaries of the raw logits, and no probe left on the model."""

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.capture.standalone import generate_captured
from opentelemetry_instrumentation_corevital.profiles import load_profile
from tests.conftest import prompt_ids
from tests.support.capture import entropy_bits
from tests.support.reliability import probe_count

STEPS = 5


def test_sequences_are_generates_own_and_summaries_describe_its_logits(models):
    model = models["llama"]
    inputs = {"input_ids": prompt_ids(batch=2)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    reference = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, output_logits=True,
                               return_dict_in_generate=True)
    sequences, summaries, fault = generate_captured(
        model, inputs, {"max_new_tokens": STEPS, "do_sample": False}, load_profile("llama"),
        max_steps=STEPS, attention_stride=1,
    )
    assert fault is None
    assert torch.equal(sequences, reference.sequences)
    for step, raw in enumerate(reference.logits):
        np.testing.assert_allclose(summaries.logit("entropy")[:, step], entropy_bits(raw), atol=1e-3)
    assert probe_count(model) == 0


def test_a_generate_that_raises_leaves_no_probe_behind(models):
    model = models["llama"]
    before = probe_count(model)
    with pytest.raises(ValueError):
        generate_captured(model, {"input_ids": prompt_ids()}, {"max_new_tokens": STEPS, "do_sample": False, "num_return_sequences": 2},
                          load_profile("llama"), max_steps=STEPS, attention_stride=1)
    assert probe_count(model) == before == 0

