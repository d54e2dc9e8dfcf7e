"""The store never changes a file it did not create or recognise.

Another application's SQLite database, a corrupt file, a newer schema and a locked file are
refused by the exporter, by `corevital run` and by the read commands, and stay byte for byte
as they were: content checksum, the header's journal-mode bytes (18-19: 1 rollback, 2 WAL),
and no journal, WAL or shared-memory file left beside them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from opentelemetry_instrumentation_corevital.store import SCHEMA_VERSION, RunStore, SQLiteSpanExporter

from .conftest import cli_main, one_line_error

SIDE_FILES = ("-wal", "-shm", "-journal")


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        connection.execute("INSERT INTO orders (total) VALUES (9.5)")
    sqlite3.connect(path).close()


def _foreign_with_meta(path: Path) -> None:
    """Another application that also keeps a `meta` table with a schema version."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        connection.execute("INSERT INTO meta VALUES ('schema_version', '7')")
        connection.execute("PRAGMA user_version = 7")


def _corrupt(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\x13\x37" * 2000)


def _newer_schema(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    connection.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY)")
    connection.execute(f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION + 1}')")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()


FILES = {"foreign": _foreign, "foreign_with_meta": _foreign_with_meta, "corrupt": _corrupt, "newer_schema": _newer_schema}
EXPECTED = {
    "foreign": "database of something else",
    "foreign_with_meta": "database of something else",
    "corrupt": "not a valid run store",
    "newer_schema": "newer corevital",
}


def _fingerprint(path: Path) -> tuple[str, bytes, list[str]]:
    data = path.read_bytes()
    beside = [suffix for suffix in SIDE_FILES if Path(f"{path}{suffix}").exists()]
    return hashlib.sha256(data).hexdigest(), data[18:20], beside


def test_the_fingerprint_sees_a_journal_switch(tmp_path):
    """The check below can fail: switching a database to WAL changes its header bytes."""
    path = tmp_path / "app.db"
    _foreign(path)
    before = _fingerprint(path)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
    assert _fingerprint(path)[1] != before[1]


@pytest.mark.parametrize("kind", FILES)
def test_unrecognised_files_are_refused_and_left_byte_identical(tmp_path, llama_dir, capsys, kind):
    path = tmp_path / "the.db"
    FILES[kind](path)
    before = _fingerprint(path)
    assert before[2] == []

    assert SQLiteSpanExporter(path).export([]) is SpanExportResult.SUCCESS  # nothing to store: not even opened
    assert _export_one_run(path) is SpanExportResult.FAILURE
    for args in (
        ["run", "zq5", "--model", str(llama_dir), "--db", str(path), "--quiet"],
        ["runs", "list", "--db", str(path)],
        ["runs", "compare", "--db", str(path)],
        ["report", "0123", "--db", str(path), "--html", str(tmp_path / "page.html")],
    ):
        code, _, err = cli_main(args, capsys)
        assert code == 2, (args, err)
        assert EXPECTED[kind] in one_line_error(err), args
        assert _fingerprint(path) == before, args
    assert _fingerprint(path) == before


@pytest.mark.parametrize("kind", ["foreign", "run_store"])
def test_a_locked_file_is_refused_and_left_byte_identical(tmp_path, llama_dir, capsys, kind):
    """Another process holds the write lock: of another application's database, or of a run store (WAL)."""
    path = tmp_path / "the.db"
    if kind == "foreign":
        _foreign(path)
    else:
        assert _export_one_run(path) is SpanExportResult.SUCCESS
    before = _fingerprint(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, _, err = cli_main(["run", "zq5", "--model", str(llama_dir), "--db", str(path), "--db-timeout", "0.2",
                                 "--quiet"], capsys)
        assert code == 1 and "locked by another process" in one_line_error(err)
        assert _export_one_run(path, timeout_s=0.2) is SpanExportResult.FAILURE
        assert _fingerprint(path)[:2] == before[:2]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _fingerprint(path) == before


def test_bad_model_or_device_creates_no_store(tmp_path, llama_dir, capsys):
    path = tmp_path / "new.db"
    for args in (["--model", str(tmp_path / "missing")], ["--model", str(llama_dir), "--device", "toaster"]):
        code, _, err = cli_main(["run", "zq5", *args, "--db", str(path), "--quiet"], capsys)
        assert code == 2, err
    assert not path.exists()
    code, _, err = cli_main(["run", "zq5", "--model", str(llama_dir), "--max-new-tokens", "2", "--db", str(path),
                             "--quiet"], capsys)
    assert code == 0, err
    assert len(RunStore(path).runs()) == 1  # the store is created when there is a run to keep


def _export_one_run(path: Path, timeout_s: float = 10.0):
    """Export a real CoreVital span of the tiny Llama into `path` with SQLiteSpanExporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
    from tests.conftest import build_llama, prompt_ids

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        build_llama().generate(prompt_ids(), max_new_tokens=2, do_sample=False)
    finally:
        instrumentor.uninstrument()
    return SQLiteSpanExporter(path, timeout_s=timeout_s).export(memory.get_finished_spans())
