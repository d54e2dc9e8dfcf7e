"""Helpers shared by the delivery tests: loopback ports, external binaries, bounded processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "delivery" / "app.py"
COLLECTOR_CONFIG = ROOT / "collector-config"
LOOPBACK = "127.0.0.1"
SERVICE_NAME = "corevital-delivery-test"
APP_TIMEOUT_S = 120

# A randomly initialised model is near uniform (~8 bits over 256 tokens) at every step: only
# entropy above 9 bits counts as high, and the bias is lowered, so the sound call scores low.
RANDOM_MODEL_PROFILE = {"high_entropy_bits": 9.0, "risk_model": {"bias": -12.0}}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str, fix: str):
    """Skip locally, fail under CI: CI must have installed everything (scripts/ci/delivery.sh)."""
    message = f"{what} is not available: {fix}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        missing(name, "run `bash scripts/ci/delivery.sh`")
    return found


def require_module(name: str):
    try:
        return __import__(name)
    except ImportError:
        missing(f"Python package {name}", "run `bash scripts/ci/delivery.sh`")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{process.args[0]} did not listen on {LOOPBACK}:{port} within {timeout_s} s")


@contextmanager
def background(command: list[str], log: Path, **popen) -> Iterator[subprocess.Popen]:
    """Run `command` with its output in `log`; always stopped (terminate, then kill) on exit."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


def app_env(**variables: str) -> dict[str, str]:
    """The environment of an app run: no inherited OTEL_* settings, offline, the test profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_INSTRUMENTATION_COREVITAL_PROFILE_OVERRIDES=json.dumps(RANDOM_MODEL_PROFILE),
    )
    env.update(variables)
    return env


def instrumented_app(*app_args: str, traces: str, metrics: str, logs: str = "none") -> list[str]:
    """The zero-code command line: opentelemetry-instrument … python app.py."""
    return [
        require_binary("opentelemetry-instrument"),
        "--traces_exporter", traces,
        "--metrics_exporter", metrics,
        "--logs_exporter", logs,
        sys.executable, str(APP), *app_args,
    ]


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
