"""`corevital run`, `runs list|show|compare` and the error paths, run in-process on tiny saved models."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest
from transformers import ViTConfig, ViTModel

from opentelemetry_instrumentation_corevital.cli import main
from opentelemetry_instrumentation_corevital.report import Report

from .conftest import cli_main, one_line_error

PROMPTS = ("zq5 zq6 zq7", "zq40 zq41", "zq90 zq91 zq92 zq93")


@pytest.fixture(scope="module")
def populated(tmp_path_factory, llama_dir, gpt2_dir):
    """Both models on the first two prompts, the Llama alone on the third."""
    folder = tmp_path_factory.mktemp("store")
    db = str(folder / "runs.db")
    runs = []
    for model_dir, prompts in ((llama_dir, PROMPTS), (gpt2_dir, PROMPTS[:2])):
        for prompt in prompts:
            out = folder / f"{len(runs)}.json"
            code = main(
                ["run", "--model", str(model_dir), "--prompt", prompt, "--max-new-tokens", "5", "--db", db,
                 "--json", str(out), "--quiet", "--capture", "full"]
            )
            assert code == 0
            runs.append((str(model_dir), prompt, Report.model_validate_json(out.read_text())))
    return db, runs


def test_list_filters_by_model_prompt_and_risk(populated, capsys):
    db, runs = populated
    code, out, _ = cli_main(["runs", "list", "--db", db, "--format", "json"], capsys)
    assert code == 0
    listed = json.loads(out)
    assert {row["run_id"] for row in listed} == {r.span_id for _, _, r in runs}
    assert all(row["prompt_hash"] == r.prompt_hash for row in listed for _, _, r in runs if r.span_id == row["run_id"])

    llama = runs[0][0]
    code, out, _ = cli_main(["runs", "list", "--db", db, "--model", llama, "--format", "json"], capsys)
    assert {row["run_id"] for row in json.loads(out)} == {r.span_id for m, _, r in runs if m == llama}

    first = runs[0][2]
    code, out, _ = cli_main(["runs", "list", "--db", db, "--prompt-hash", first.prompt_hash[:12], "--format", "json"], capsys)
    assert [row["run_id"] for row in json.loads(out)] == [first.span_id]

    threshold = sorted(r.risk.score for _, _, r in runs)[2]
    code, out, _ = cli_main(["runs", "list", "--db", db, "--min-risk", str(threshold), "--format", "json"], capsys)
    assert {row["run_id"] for row in json.loads(out)} == {r.span_id for _, _, r in runs if r.risk.score >= threshold}


def test_list_as_csv_and_table(populated, capsys):
    db, runs = populated
    code, out, _ = cli_main(["runs", "list", "--db", db, "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(runs)
    by_id = {r.span_id: r for _, _, r in runs}
    for row in rows:
        assert float(row["risk_score"]) == pytest.approx(by_id[row["run_id"]].risk.score)
        assert row["model"] == by_id[row["run_id"]].model
    code, out, _ = cli_main(["runs", "list", "--db", db, "--limit", "2"], capsys)
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["run", "id", "time"] and len(lines) == 3


def test_compare_uses_only_prompts_every_model_ran(populated, capsys):
    db, runs = populated
    code, out, _ = cli_main(["runs", "compare", "--db", db, "--format", "json"], capsys)
    assert code == 0
    table = {row["model"]: row for row in json.loads(out)}
    assert set(table) == {m for m, _, _ in runs}
    for model, row in table.items():
        shared = [r for m, p, r in runs if m == model and p in PROMPTS[:2]]  # the third prompt is the Llama's alone
        assert row["runs"] == 2 and row["prompts"] == 2
        assert row["mean_risk"] == pytest.approx(sum(r.risk.score for r in shared) / 2)
        assert row["mean_entropy"] == pytest.approx(sum(r.logits.entropy_mean for r in shared) / 2)
        repetition = sum(bool(r.health.repetition_loop_detected) for r in shared) / 2
        assert row["repetition_loop_rate"] == repetition
        assert row["high_entropy_rate"] == sum(bool(r.health.high_entropy_steps) for r in shared) / 2

    code, out, _ = cli_main(["runs", "compare", "--db", db, "--format", "csv", "--model", runs[0][0]], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["model"] for row in rows] == [runs[0][0]] and rows[0]["runs"] == "3"  # alone: all its prompts


def test_show_prints_the_stored_report(populated, capsys):
    db, runs = populated
    report = runs[1][2]
    code, out, _ = cli_main(["runs", "show", report.span_id[:8], "--db", db], capsys)
    assert code == 0
    assert f"run {report.span_id}" in out and f"{report.risk.score:.2f}" in out
    assert " ".join(report.narrative.split()) in " ".join(out.split())
    code, out, _ = cli_main(["runs", "show", report.span_id, "--db", db, "--json"], capsys)
    assert Report.model_validate_json(out) == report


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8, patch_size=4)
    ViTModel(config).save_pretrained(folder)
    return folder


def _error(args, capsys) -> tuple[int, str]:
    code, out, err = cli_main(args, capsys)
    return code, one_line_error(err)


def test_bad_run_input_gives_one_line_and_exit_2(tmp_path, llama_dir, vit_dir, capsys):
    db = ["--db", str(tmp_path / "runs.db"), "--quiet"]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n")
    cases = [
        (["run", "--prompt", "   ", *db], "--prompt is empty"),
        (["run", "--model", str(tmp_path / "missing"), "--prompt", "hi", *db], "no such folder"),
        (["run", "--model", str(tmp_path), "--prompt", "hi", *db], "no config.json"),
        (["run", "--model", "nobody-xyz/no-such-model", "--prompt", "hi", *db], "not in the Hugging Face cache"),
        (["run", "--model", str(vit_dir), "--prompt", "hi", *db], "without generate()"),
        (["run", "--model", str(llama_dir), "--prompt", "hi", "--device", "toaster", *db], "not a torch device"),
        (["run", "--model", str(llama_dir), "--prompt", "hi", "--rag-context", str(tmp_path / "nope.json"), *db], "no such file"),
        (["run", "--model", str(llama_dir), "--prompt", "hi", "--temperature", "0", *db], "must be above 0"),
        (["run", "--model", str(llama_dir), "--prompt", "hi", "--json", str(tmp_path / "no" / "r.json"), *db], "does not exist"),
        (["run", "--prompt"], "expected one argument"),
        (["runs", "frobnicate"], "invalid choice"),
        (["run", "--model", str(llama_dir), *db], "no prompt"),
        (["run", "hi", "--prompt", "hi", "--model", str(llama_dir), *db], "given more than once (PROMPT and --prompt)"),
        (["run", "--prompt-file", str(tmp_path / "none.txt"), "--model", str(llama_dir), *db], "no such file"),
        (["run", "--prompt-file", str(latin1), "--model", str(llama_dir), *db], "not UTF-8 text"),
        (["run", "--prompt-file", str(blank), "--model", str(llama_dir), *db], "is empty"),
        (["run", "caf\udce9", "--model", str(llama_dir), *db], "PROMPT: not valid UTF-8"),
    ]
    for args, expected in cases:
        code, line = _error(args, capsys)
        assert code == 2, (args, line)
        assert expected in line, (args, line)
    assert not (tmp_path / "runs.db").exists()  # nothing is created for a run that cannot happen


def test_prompt_as_argument_option_file_or_stdin_gives_the_same_run(tmp_path, llama_dir, capsys, monkeypatch):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("zq5 zq6 zq7\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"zq5 zq6 zq7\n"), encoding="utf-8"))
    hashes = []
    for how in (["zq5 zq6 zq7"], ["--prompt", "zq5 zq6 zq7"], ["--prompt-file", str(prompt_file)], ["--prompt-file", "-"]):
        out = tmp_path / "run.json"
        code, _, err = cli_main(["run", *how, "--model", str(llama_dir), "--max-new-tokens", "3", "--no-store",
                                 "--quiet", "--json", str(out)], capsys)
        assert code == 0, err
        hashes.append(Report.model_validate_json(out.read_text()).prompt_hash)
    assert len(set(hashes)) == 1 and hashes[0] is not None


def test_bad_rag_file_names_the_key(tmp_path, llama_dir, capsys):
    rag = tmp_path / "rag.json"
    rag.write_text(json.dumps({"context_tokens": -3}))
    code, line = _error(["run", "--model", str(llama_dir), "--prompt", "zq5", "--rag-context", str(rag), "--no-store"], capsys)
    assert code == 2 and "context_tokens" in line


def test_store_errors_give_one_line(tmp_path, populated, capsys):
    db, _ = populated
    code, line = _error(["runs", "show", "feedfacefeedface", "--db", db], capsys)
    assert code == 2 and "no run feedfacefeedface" in line
    code, line = _error(["report", "feedface", "--db", db, "--html", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "no run feedface" in line
    code, line = _error(["runs", "list", "--db", str(tmp_path / "none.db")], capsys)
    assert code == 2 and "no run store" in line

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 500)
    code, line = _error(["runs", "list", "--db", str(corrupt)], capsys)
    assert code == 2 and "not a valid run store" in line

    locked = tmp_path / "locked.db"
    sqlite3.connect(locked).close()
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, line = _error(["run", "--prompt", "zq5", "--db", str(locked), "--db-timeout", "0.2", "--quiet"], capsys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1 and "locked by another process" in line


def test_report_from_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, line = _error(["report", str(bad), "--html", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "not a CoreVital report JSON" in line
    assert not (tmp_path / "r.html").exists()


def test_summary_run_with_few_step_events_says_the_sparkline_is_sampled(tmp_path, llama_dir, capsys, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_MAX_STEP_EVENTS", "4")
    code, out, err = cli_main(
        ["run", "--model", str(llama_dir), "--prompt", "zq5 zq6", "--max-new-tokens", "12", "--no-store", "--quiet"],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    spark = next(i for i, line in enumerate(lines) if line.startswith("entropy"))
    assert len(lines[spark][15:].strip()) == 4  # one block per recorded step event
    assert "4 of 12 steps, sampled (step events)" in lines[spark + 1]
