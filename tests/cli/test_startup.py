"""Commands that never run a model start without importing torch or transformers.

Each command runs in a fresh interpreter that reports, after the command returned, which of
the heavy modules it imported. (Speed itself is measured in benchmarks/cli_startup.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from opentelemetry_instrumentation_corevital.cli import main

from .conftest import cli_env

HEAVY = ("torch", "transformers")
_DRIVER = (
    "import json, sys\n"
    "from opentelemetry_instrumentation_corevital.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exit:  # --help\n"
    "    code = exit.code\n"
    "print(json.dumps({'code': code, 'heavy': [m for m in %r if m in sys.modules]}), file=sys.stderr)\n" % (HEAVY,)
)


def _run_fresh(args: list[str], cwd) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=120
    )
    outcome = json.loads(result.stderr.strip().splitlines()[-1])
    return outcome, result.stdout


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, llama_dir):
    folder = tmp_path_factory.mktemp("startup")
    db = folder / "runs.db"
    code = main(["run", "zq5 zq6 zq7", "--model", str(llama_dir), "--max-new-tokens", "4", "--capture", "full",
                 "--db", str(db), "--json", str(folder / "run.json"), "--quiet"])
    assert code == 0
    run_id = json.loads((folder / "run.json").read_text())["span_id"]
    return folder, str(db), run_id


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["runs", "list", "--db", "{db}"],
        ["runs", "list", "--db", "{db}", "--format", "json"],
        ["runs", "show", "{run}", "--db", "{db}"],
        ["runs", "compare", "--db", "{db}"],
        ["report", "{run}", "--db", "{db}", "--html", "page.html"],
        ["report", "run.json", "--html", "page.html"],
    ],
    ids=lambda c: " ".join(a for a in c if not a.startswith("{")),
)
def test_commands_without_a_model_do_not_import_torch_or_transformers(stored_run, command):
    folder, db, run_id = stored_run
    args = [a.format(db=db, run=run_id[:8]) for a in command]
    outcome, stdout = _run_fresh(args, folder)
    assert outcome["code"] == 0
    assert outcome["heavy"] == []
    assert stdout  # the command did its work (help text, a table, a report, "written to")


def test_the_driver_sees_heavy_imports_when_a_command_loads_a_model(stored_run, llama_dir):
    """The check above can fail: `corevital run` does import both."""
    folder, db, _ = stored_run
    outcome, _ = _run_fresh(["run", "zq5", "--model", str(llama_dir), "--max-new-tokens", "1", "--no-store", "--quiet"], folder)
    assert outcome["code"] == 0
    assert outcome["heavy"] == list(HEAVY)


def test_package_import_is_lazy_and_the_public_names_still_resolve(tmp_path):
    script = (
        "import json, sys, opentelemetry_instrumentation_corevital as corevital\n"
        f"heavy_after_import = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "from importlib.metadata import entry_points\n"
        "entry = next(e for e in entry_points(group='opentelemetry_instrumentor') if e.name == 'corevital')\n"
        "print(json.dumps({'heavy_after_import': heavy_after_import,"
        " 'entry_point_is_the_class': entry.load() is corevital.CoreVitalInstrumentor,"
        " 'resolved': [getattr(corevital, name).__name__ for name in corevital.__all__ if name != '__version__']}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["heavy_after_import"] == []
    assert outcome["entry_point_is_the_class"]
    assert sorted(outcome["resolved"]) == sorted(
        ["CoreVitalInstrumentor", "CoreVitalStoppingCriteria", "RagContext", "StepSummary", "observe", "stream_health"]
    )


def test_bad_prompt_bytes_exit_2_before_anything_loads(tmp_path, llama_dir):
    """A prompt that is not UTF-8 (here Latin-1 bytes on the command line) is refused before torch is imported."""
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, "run", b"caf\xe9", "--model", str(llama_dir), "--db", "runs.db"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    outcome = json.loads(result.stderr.strip().splitlines()[-1])
    assert outcome == {"code": 2, "heavy": []}
    assert "corevital: error: PROMPT: not valid UTF-8 text" in result.stderr
    assert not (tmp_path / "runs.db").exists()
