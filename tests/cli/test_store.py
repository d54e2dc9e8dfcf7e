"""The SQLite SpanExporter and RunStore with the real OTel SDK: round trip, concurrency, bad files."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.report import Report
from opentelemetry_instrumentation_corevital.store import (
    SCHEMA_VERSION,
    RunFilter,
    RunStore,
    SQLiteSpanExporter,
    StoreError,
    StoreLockedError,
    UnknownRunError,
)
from opentelemetry_instrumentation_corevital.store.records import SCOPE_NAME
from tests.conftest import build_llama, prompt_ids


@pytest.fixture(scope="module")
def generated_spans():
    """Two real CoreVital spans of the tiny Llama (full capture, summary capture), finished."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    model = build_llama()
    spans = []
    for mode in ("full", "summary"):
        instrumentor = CoreVitalInstrumentor()
        instrumentor.instrument(tracer_provider=provider, capture_mode=mode)
        try:
            model.generate(prompt_ids(), max_new_tokens=8, do_sample=False)
        finally:
            instrumentor.uninstrument()
        spans.append(memory.get_finished_spans()[-1])
    return spans


def test_batch_processor_stores_runs_that_rebuild_the_same_report(tmp_path, generated_spans):
    path = tmp_path / "runs.db"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter(path)))
    model = build_llama()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_mode="full")
    try:
        model.generate(prompt_ids(), max_new_tokens=6, do_sample=False)
        with provider.get_tracer("my.app").start_as_current_span("not a generate call"):
            pass
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    generate_span = next(s for s in memory.get_finished_spans() if s.instrumentation_scope.name == SCOPE_NAME)
    expected = Report.from_span(generate_span)
    store = RunStore(path)
    rows = store.runs()
    assert [row["run_id"] for row in rows] == [expected.span_id]  # the app's own span is not a run
    row = rows[0]
    assert row["risk_score"] == expected.risk.score
    assert row["model"] == expected.model == "LlamaForCausalLM"
    assert row["has_payload"] is True
    stored = store.report(expected.span_id[:7])  # a unique prefix is enough
    assert stored.model_dump() == expected.model_dump()  # payload, timelines and events survive the store
    assert stored.sequences[0].layers is not None


def test_schema_version_is_recorded_and_a_newer_one_is_refused(tmp_path, generated_spans):
    path = tmp_path / "runs.db"
    assert SQLiteSpanExporter(path).export(generated_spans) is SpanExportResult.SUCCESS
    assert RunStore(path).schema_version() == SCHEMA_VERSION
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer corevital"):
        RunStore(path).runs()


def test_exporting_a_span_twice_keeps_one_run(tmp_path, generated_spans):
    exporter = SQLiteSpanExporter(tmp_path / "runs.db")
    assert exporter.export(generated_spans[:1]) is SpanExportResult.SUCCESS
    assert exporter.export(generated_spans[:1]) is SpanExportResult.SUCCESS  # an SDK retry
    assert len(RunStore(exporter.path).runs()) == 1


def _write_runs(path: str, template, count: int) -> None:
    """A writer: its own provider and exporter, `count` CoreVital spans copied from `template`."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    tracer = provider.get_tracer(SCOPE_NAME)
    for _ in range(count):
        span = tracer.start_span(template.name, attributes=template.attributes)
        for event in template.events:
            span.add_event(event.name, event.attributes)
        span.end()
    provider.shutdown()


def _process_writer(path, attributes, events, name, count, errors):
    class Template:
        pass

    template = Template()
    template.name, template.attributes = name, attributes
    template.events = [type("E", (), {"name": n, "attributes": a}) for n, a in events]
    try:
        _write_runs(path, template, count)
    except BaseException as exc:  # reported to the parent, which fails the test
        errors.put(repr(exc))


def test_concurrent_writers_in_threads_and_processes_lose_nothing(tmp_path, generated_spans):
    path = str(tmp_path / "runs.db")
    template = generated_spans[0]
    per_writer = 15
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    events = [(e.name, dict(e.attributes)) for e in template.events]
    processes = [
        context.Process(target=_process_writer, args=(path, dict(template.attributes), events, template.name, per_writer, errors))
        for _ in range(3)
    ]
    threads = [threading.Thread(target=_write_runs, args=(path, template, per_writer)) for _ in range(3)]
    for worker in processes + threads:
        worker.start()
    for worker in processes + threads:
        worker.join(timeout=120)
    assert all(p.exitcode == 0 for p in processes)
    assert errors.empty()

    rows = RunStore(path).runs()
    assert len(rows) == 6 * per_writer
    assert len({row["run_id"] for row in rows}) == 6 * per_writer
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert RunStore(path).report(rows[0]["run_id"]).payload.present  # whole payloads, not torn writes


def test_locked_database_fails_the_export_without_raising(tmp_path, generated_spans, caplog):
    path = tmp_path / "runs.db"
    assert SQLiteSpanExporter(path).export(generated_spans[:1]) is SpanExportResult.SUCCESS
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        exporter = SQLiteSpanExporter(path, timeout_s=0.2)
        with caplog.at_level(logging.WARNING):
            assert exporter.export(generated_spans) is SpanExportResult.FAILURE
            assert exporter.export(generated_spans) is SpanExportResult.FAILURE
        locked = [r for r in caplog.records if "locked" in r.getMessage()]
        assert len(locked) == 1  # logged once per cause
        with pytest.raises(StoreLockedError, match="locked by another process"):
            RunStore(path, timeout_s=0.2).check_writable()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert SQLiteSpanExporter(path).export(generated_spans) is SpanExportResult.SUCCESS  # and recovers


def test_corrupt_file_fails_the_export_and_queries_name_the_problem(tmp_path, generated_spans):
    path = tmp_path / "runs.db"
    garbage = b"this is not an sqlite file " * 200
    path.write_bytes(garbage)
    assert SQLiteSpanExporter(path).export(generated_spans) is SpanExportResult.FAILURE
    with pytest.raises(StoreError, match="not a valid run store"):
        RunStore(path).runs()
    assert path.read_bytes() == garbage  # the user's file is left as it was


def test_other_sqlite_database_is_not_taken_over(tmp_path, generated_spans):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER)")
    assert SQLiteSpanExporter(path).export(generated_spans) is SpanExportResult.FAILURE
    with sqlite3.connect(path) as connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["orders"]


def test_filters_and_unknown_ids(tmp_path, generated_spans):
    path = tmp_path / "runs.db"
    SQLiteSpanExporter(path).export(generated_spans)
    store = RunStore(path)
    full, summary = (Report.from_span(s) for s in generated_spans)
    assert {r["capture_mode"] for r in store.runs()} == {"full", "summary"}
    same_prompt = store.runs(RunFilter(prompt_hash=full.prompt_hash[:10].upper()))
    assert {r["run_id"] for r in same_prompt} == {full.span_id, summary.span_id}
    assert store.runs(RunFilter(prompt_hash="0" * 64)) == []
    assert store.runs(RunFilter(min_risk=1.01)) == []
    assert len(store.runs(RunFilter(label=full.risk.label))) >= 1
    assert store.runs(RunFilter(model="gpt2")) == []
    assert len(store.runs(RunFilter(limit=1))) == 1
    # span ids are random: take a prefix that starts neither stored id
    unknown = next(prefix for prefix in ("0123", "4567") if not any(
        run_id.startswith(prefix) for run_id in (full.span_id, summary.span_id)))
    with pytest.raises(UnknownRunError, match=f"no run {unknown}"):
        store.report(unknown)
    with pytest.raises(UnknownRunError, match="not a run id"):
        store.report("xyz!")
    with pytest.raises(StoreError, match="no run store"):
        RunStore(tmp_path / "missing.db").runs()
