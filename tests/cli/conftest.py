"""Tiny models saved to disk (what `corevital run --model DIR` loads) and helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build_gpt2, build_llama
from tests.support.tokenizers import tiny_tokenizer

CLI_MODULE = "opentelemetry_instrumentation_corevital.cli"


def save_tiny(model, folder: Path) -> Path:
    # no EOS: every run generates exactly --max-new-tokens (fixed-length runs keep the tests exact)
    model.generation_config.eos_token_id = None
    model.config.eos_token_id = None
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny(build_llama(), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny(build_gpt2(), tmp_path_factory.mktemp("tiny-gpt2"))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: offline, one thread, no OTel settings from the caller,
    importing the same sources as this test process (whatever its working directory)."""
    import opentelemetry_instrumentation_corevital

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", NO_COLOR="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(opentelemetry_instrumentation_corevital.__file__).parents[1])
    env.update(extra)
    return env


def console_script() -> str:
    """The installed `corevital` script next to this interpreter."""
    script = Path(sys.executable).parent / "corevital"
    assert script.is_file(), f"{script} missing: run `pip install -e .` so the console script is installed"
    return str(script)


def run_cli(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run(
        [console_script(), *args], cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout
    )


def cli_main(args: list[str], capsys) -> tuple[int, str, str]:
    """The CLI in this process (same code as the script); returns (exit code, stdout, stderr)."""
    from opentelemetry_instrumentation_corevital.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(stderr: str) -> str:
    """The single error line the CLI must print; fails on tracebacks or multi-line errors."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("corevital: error:")]
    assert len(errors) == 1, stderr
    return errors[0]
