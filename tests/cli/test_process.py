"""`corevital` as a real process: the console script, OTLP export, the default model, Ctrl-C.

Each process imports torch and transformers, so this file holds only what needs a process;
tests/cli/test_commands.py covers the commands in-process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess

from opentelemetry_instrumentation_corevital.default_model import DEFAULT_MODEL_ID
from opentelemetry_instrumentation_corevital.report import Report

from .conftest import cli_env, console_script, one_line_error, run_cli
from .otlp_receiver import OTLPReceiver, attribute_values

SPARK_BLOCKS = set("▁▂▃▄▅▆▇█")


def test_run_prints_the_report_stores_it_writes_json_and_exports_otlp(tmp_path, llama_dir):
    rag = tmp_path / "rag.json"
    rag.write_text(json.dumps({"context_tokens": 120, "document_ids": ["kb-7", "kb-9"], "metadata": {"retriever": "bm25"}}))
    with OTLPReceiver() as receiver:
        env = cli_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="cli-test")
        result = run_cli(
            ["run", "--model", str(llama_dir), "--prompt", "zq5 zq6 zq7", "--max-new-tokens", "12",
             "--capture", "full", "--rag-context", str(rag), "--json", "out.json"],
            cwd=tmp_path, env=env,
        )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Loading" in result.stderr and "Generating: done" in result.stderr and "12/12 tokens" in result.stderr

    report = Report.model_validate_json((tmp_path / "out.json").read_text())
    out = result.stdout
    assert f"run {report.span_id}" in out
    assert f"risk           {report.risk.score:.2f}  {report.risk.label.upper()}" in out
    assert " ".join(report.narrative.split()) in " ".join(out.split())
    spark = next(line for line in out.splitlines() if line.startswith("entropy"))
    assert len([c for c in spark if c in SPARK_BLOCKS]) == 12  # one block per generated step
    assert "blamed layers" in out and "completion" in out
    assert "rag context    120 context tokens; 2 documents: kb-7, kb-9; retriever=bm25" in out
    assert report.rag.document_ids == ["kb-7", "kb-9"]
    assert f"Spans exported over OTLP to {receiver.endpoint}" in out
    assert report.usage.output_tokens == 12 and report.sequences[0].layers is not None

    # the default store in the working directory holds the same run
    with sqlite3.connect(tmp_path / "corevital.db") as connection:
        stored = connection.execute("SELECT run_id, risk_score, service_name FROM runs").fetchall()
    assert stored == [(report.span_id, report.risk.score, "cli-test")]

    # the same span went over OTLP/HTTP, with the RAG context of --rag-context
    spans = receiver.spans()
    assert [span.span_id.hex() for span in spans] == [report.span_id]
    attributes = attribute_values(spans[0])
    assert attributes["corevital.risk.score"] == report.risk.score
    assert attributes["corevital.rag.context_tokens"] == 120
    assert attributes["corevital.rag.document_ids"] == ["kb-7", "kb-9"]
    assert attributes["corevital.rag.metadata.retriever"] == "bm25"
    assert "/v1/metrics" in receiver.paths


def test_run_without_model_uses_the_embedded_smollm2(tmp_path):
    result = run_cli(
        ["run", "--prompt", "Name one colour.", "--max-new-tokens", "6", "--json", "-", "--no-store"],
        cwd=tmp_path, timeout=400,
    )
    assert result.returncode == 0, result.stderr
    report = Report.model_validate_json(result.stdout)  # --json -: the report JSON alone on stdout
    assert report.model == DEFAULT_MODEL_ID
    assert report.usage.output_tokens == 6 or report.finish_reasons == ["stop"]
    assert "CoreVital health report" in result.stderr and "SmolLM2" in result.stderr
    assert not (tmp_path / "corevital.db").exists()  # --no-store
    # the text token by token (byte-level BPE, chat template): one piece per generated token, the
    # pieces spell the printed completion, and the prompt pieces spell the templated prompt
    text = json.loads(result.stdout)["token_text"]
    assert len(text["completion"][0]) == report.usage.output_tokens
    printed = result.stderr.split("\ncompletion\n")[1].split("\n\n")[0]
    assert " ".join(printed.split()) in " ".join("".join(text["completion"][0]).split())
    assert len(text["prompt"]) == report.usage.input_tokens and "Name one colour." in "".join(text["prompt"])


def test_ctrl_c_during_generation_exits_130_without_traceback(tmp_path, llama_dir):
    process = subprocess.Popen(
        [console_script(), "run", "--model", str(llama_dir), "--prompt", "zq9", "--max-new-tokens", "1000"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("Generating"):
            break
    process.send_signal(signal.SIGINT)
    stdout, rest = process.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert one_line_error(stderr) == "corevital: error: interrupted"
