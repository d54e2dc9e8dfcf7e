"""`corevital calibrate` end to end on a tiny real llama (seconds), and the profile it writes
loaded by `instrument(profile=...)` and `OTEL_INSTRUMENTATION_COREVITAL_PROFILE`.

The tiny model's output head is scaled up so that it is sure of some continuations and not of
others: its greedy runs then split into loops, answers its samples repeat, and answers they do
not, which is what the label-free calibration learns from.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from opentelemetry_instrumentation_corevital.analysis.calibration import CALIBRATION_FEATURES
from opentelemetry_instrumentation_corevital.config import Settings
from opentelemetry_instrumentation_corevital.profiles import load_profile_file
from tests.cli.conftest import cli_main, one_line_error, save_tiny
from tests.conftest import build_llama, prompt_ids

PROFILE_NAME = "corevital.profile.name"
PROFILE_CALIBRATED = "corevital.profile.calibrated"
PROMPTS = 24
ARGS = ["--max-new-tokens", "24", "--samples", "2", "--device", "cpu", "--batch-size", "8"]


@pytest.fixture(scope="module")
def sure_llama(tmp_path_factory):
    model = build_llama()
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    return save_tiny(model, tmp_path_factory.mktemp("sure-llama"))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    # Every other prompt is a question: only a question's unsure answer counts as a failure.
    lines = [" ".join(f"zq{(k * 7 + j * 3) % 60 + 4}" for j in range(3 + k % 4)) + " ?" * (k % 2)
             for k in range(PROMPTS)]
    path.write_text("# my prompts\n\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def calibrated(sure_llama, prompts_file, tmp_path_factory):
    """(exit code, stdout, stderr, profile path) of one calibration; the work folder is kept."""
    out = tmp_path_factory.mktemp("out") / "mine.json"
    capsys = _Capture()
    with capsys:
        code = _main(["calibrate", "--model", str(sure_llama), "--prompts", str(prompts_file), "--out", str(out),
                      *ARGS])
    return code, capsys.out, capsys.err, out


def test_calibrate_writes_a_loadable_calibrated_profile_and_reports_held_out_quality(calibrated, sure_llama):
    code, out, err, path = calibrated
    assert code == 0, err
    profile = load_profile_file(path)
    assert profile.calibrated and profile.name == f"calibrated-{sure_llama.name}"
    assert profile.risk_model.features == CALIBRATION_FEATURES
    document = json.loads(path.read_text())
    report = document["calibration"]
    assert report["prompts"] == PROMPTS and report["held_out"] == PROMPTS // 4
    assert 0 < report["failures"] < PROMPTS and report["degenerate"] > 0 and report["disagreement"] > 0
    assert 0.0 <= report["held_out_auroc"] <= 1.0 and 0.0 <= report["held_out_ece"] <= 1.0
    assert f"AUROC {report['held_out_auroc']:.3f}" in out and str(path) in out
    assert f"{PROMPTS}/{PROMPTS} prompts" in err  # progress lines on stderr


def test_a_second_run_resumes_from_the_work_folder_and_writes_the_same_profile(calibrated, sure_llama, prompts_file):
    _, _, _, path = calibrated
    first = path.read_text()
    capsys = _Capture()
    with capsys:
        code = _main(["calibrate", "--model", str(sure_llama), "--prompts", str(prompts_file), "--out", str(path),
                      *ARGS])
    assert code == 0, capsys.err
    assert f"{PROMPTS}/{PROMPTS} prompts (cached)" in capsys.err
    assert path.read_text() == first


def test_the_span_names_the_calibrated_profile_from_the_keyword_and_from_the_environment(
    calibrated, sure_llama, instrument, telemetry, monkeypatch
):
    _, _, _, path = calibrated
    model = _load(sure_llama)
    instrument(profile=str(path))
    model.generate(prompt_ids(), max_new_tokens=6, do_sample=False)
    attributes = telemetry.only_span().attributes
    assert attributes[PROFILE_NAME] == load_profile_file(path).name
    assert attributes[PROFILE_CALIBRATED] is True
    monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_PROFILE", str(path))
    assert Settings.resolve().profile == str(path)
    assert Settings.resolve({"profile": path}, environ={}).profile == str(path)  # a Path works too
    assert Settings.resolve({"profile": None}).profile is None  # None switches the file off


def test_without_a_profile_file_the_span_names_the_architecture_profile(sure_llama, instrument, telemetry):
    model = _load(sure_llama)
    model.config.model_type = "gemma3_text"  # an architecture CoreVital ships no profile for
    instrument()
    model.generate(prompt_ids(), max_new_tokens=6, do_sample=False)
    attributes = telemetry.only_span().attributes
    assert (attributes[PROFILE_NAME], attributes[PROFILE_CALIBRATED]) == ("default", False)


def test_a_bad_profile_file_is_refused_by_instrument_and_ignored_from_the_environment(tmp_path, caplog, monkeypatch):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="profile file .*nope.json: not found"):
        Settings.resolve({"profile": str(missing)}, environ={})
    with pytest.raises(ValueError, match="'profile': must be the path of a profile file"):
        Settings.resolve({"profile": 5}, environ={})
    with caplog.at_level(logging.WARNING):
        settings = Settings.resolve(environ={"OTEL_INSTRUMENTATION_COREVITAL_PROFILE": str(missing)})
    assert settings.profile is None
    assert "OTEL_INSTRUMENTATION_COREVITAL_PROFILE" in caplog.text


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--prompts", "{missing}"], "--prompts {missing}: no such file"),
        (["--prompts", "{few}"], "2 prompts; calibration needs at least 12"),
        (["--out", "{tmp}/no/such/folder/p.json"], "does not exist; create it first"),
        (["--max-minutes", "0"], "only 0 prompts were generated; calibration needs at least 12"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(sure_llama, prompts_file, tmp_path, capsys, extra, expected):
    few = tmp_path / "few.txt"
    few.write_text("zq5 zq6\nzq7 zq8\n")
    names = {"missing": tmp_path / "missing.txt", "few": few, "tmp": tmp_path}
    args = {"--prompts": str(prompts_file), "--out": str(tmp_path / "p.json"), "--work-dir": str(tmp_path / "w")}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value.format(**names)
    argv = ["calibrate", "--model", str(sure_llama), *ARGS, *[x for pair in args.items() for x in pair]]
    code, _, err = cli_main(argv, capsys)
    assert code != 0
    assert expected.format(**names) in one_line_error(err)


def _load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()


def _main(argv):
    from opentelemetry_instrumentation_corevital.cli import main

    return main(argv)


class _Capture:
    """stdout/stderr of a CLI call made in a module-scoped fixture (capsys is function-scoped)."""

    def __enter__(self):
        import contextlib
        import io

        self._out, self._err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self._out))
        self._stack.enter_context(contextlib.redirect_stderr(self._err))
        return self

    def __exit__(self, *exc):
        self._stack.close()
        self.out, self.err = self._out.getvalue(), self._err.getvalue()
