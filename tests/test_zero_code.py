"""Zero-code path: `opentelemetry-instrument python app.py` finds CoreVital by its entry point.

examples/zero_code/app.py contains no OpenTelemetry code. Run under opentelemetry-instrument
with the console exporter, it must print exactly one GenAI span for its one generate() call,
and print the same tokens as when it runs uninstrumented.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "zero_code" / "app.py"
SERVICE_NAME = "corevital-zero-code-test"
TIMEOUT_S = 120


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


def generated_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("generated token ids:")]
    assert len(lines) == 1, f"expected one 'generated token ids:' line in:\n{stdout}"
    return lines[0]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(HF_HUB_OFFLINE="1", OTEL_SERVICE_NAME=SERVICE_NAME, PYTHONUNBUFFERED="1")
    return env


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def instrument_command() -> str:
    # The console script of the same environment as this interpreter, so a venv is respected.
    found = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    found = found or shutil.which("opentelemetry-instrument")
    if not found:
        pytest.fail("opentelemetry-instrument not found: pip install opentelemetry-distro (in the test extra)")
    return found


@pytest.fixture(scope="module")
def instrumented_run() -> subprocess.CompletedProcess:
    entry_points = importlib.metadata.entry_points(group="opentelemetry_instrumentor")
    if "corevital" not in {ep.name for ep in entry_points}:
        pytest.fail(
            "entry point opentelemetry_instrumentor:corevital is not registered; "
            "install the package first: pip install -e '.[test]'"
        )
    return run(
        [
            instrument_command(),
            "--traces_exporter", "console",
            "--metrics_exporter", "none",
            "--logs_exporter", "none",
            sys.executable, str(APP),
        ]
    )


def test_zero_code_emits_one_genai_span(instrumented_run):
    spans = console_spans(instrumented_run.stdout)
    genai = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "text_completion"]
    assert len(genai) == 1, (
        f"expected one text_completion span, got {len(genai)} of {len(spans)} spans\n"
        f"--- stdout\n{instrumented_run.stdout}\n--- stderr\n{instrumented_run.stderr}"
    )
    span = genai[0]
    attrs = span["attributes"]

    # A model built from a config has no name_or_path: the class name stands in.
    assert attrs["gen_ai.request.model"] == "GPT2LMHeadModel"
    assert span["name"] == "text_completion GPT2LMHeadModel"
    assert span["kind"] == "SpanKind.INTERNAL"
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert attrs["gen_ai.provider.name"] == "huggingface"
    assert attrs["gen_ai.usage.input_tokens"] == 6
    assert attrs["gen_ai.usage.output_tokens"] == 8
    assert attrs["corevital.capture.mode"] == "summary"
    assert "corevital.error" not in attrs, attrs["corevital.error"]
    assert span["status"]["status_code"] != "ERROR"
    assert span["resource"]["attributes"]["service.name"] == SERVICE_NAME


def test_zero_code_does_not_change_the_output(instrumented_run):
    plain = run([sys.executable, str(APP)])
    assert console_spans(plain.stdout) == []
    assert generated_line(instrumented_run.stdout) == generated_line(plain.stdout)
