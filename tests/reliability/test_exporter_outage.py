"""The OTLP endpoint down, hung or resetting: generate never waits for export, and the
process exits within the SDK's configured export timeout.

Real OTLPSpanExporter / OTLPMetricExporter (HTTP) behind the SDK's BatchSpanProcessor and
PeriodicExportingMetricReader, against a loopback socket. Latency ratios are measured in
benchmarks/exporter_outage.py, not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.conftest import build_gpt2, prompt_ids
from tests.support.reliability import OTLPReceiver, exported_spans

APP = Path(__file__).with_name("outage_app.py")
REPO = APP.parents[2]
EXPORT_TIMEOUT_S = 2
SIGNALS = 2  # traces and metrics each get one export attempt window at shutdown
TEARDOWN_SLACK_S = 4  # interpreter teardown of torch and transformers on a loaded CI machine
WAIT_S = 30


@pytest.fixture(scope="module")
def model():
    return build_gpt2()


def generate(model):
    return model.generate(prompt_ids(), max_new_tokens=4, do_sample=False)


def wait_for(condition, seconds=WAIT_S):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def exporting_provider(receiver: OTLPReceiver, timeout_s: float) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=timeout_s)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1))
    return provider


def test_generate_completes_while_the_exporter_is_stuck_and_nothing_is_lost(model, instrument, telemetry):
    expected = generate(model)
    with OTLPReceiver("slow") as receiver:
        provider = exporting_provider(receiver, timeout_s=WAIT_S)
        telemetry.tracer_provider = provider
        instrument()
        generate(model)
        wait_for(lambda: receiver.connections == 1)  # the export thread now waits on an unanswered request
        outputs = [generate(model) for _ in range(5)]
        assert not receiver.released.is_set() and receiver.connections == 1  # still stuck: generate never waited
        assert all(torch.equal(output, expected) for output in outputs)
        receiver.release()  # the collector recovers: every queued span is delivered
        assert provider.force_flush(WAIT_S * 1000)
        provider.shutdown()
    spans = exported_spans(receiver)
    assert len(spans) == 6
    assert all(span.name.startswith("text_completion") for span in spans)


@pytest.mark.parametrize("mode", ["down", "reset"])
def test_generate_is_unaffected_by_a_refusing_endpoint(model, instrument, telemetry, mode):
    expected = generate(model)
    with OTLPReceiver(mode) as receiver:
        provider = exporting_provider(receiver, timeout_s=1)
        telemetry.tracer_provider = provider
        instrument()
        for _ in range(5):
            assert torch.equal(generate(model), expected)
        provider.shutdown()
        if mode == "reset":
            assert receiver.connections >= 1  # the exporter did try, and was reset
    assert exported_spans(receiver) == []


def test_process_exits_within_the_configured_export_timeout():
    """Spans go to a hung collector (and to a healthy one), metrics to a port nobody listens on.

    The app returns and the SDK's exit handlers shut the providers down: the hung and the
    refused exports are each abandoned after OTEL_EXPORTER_OTLP_TIMEOUT, and the spans still
    queued for the healthy collector are flushed, not dropped.
    """
    with OTLPReceiver("slow") as hung, OTLPReceiver("down") as refusing, OTLPReceiver("ok") as healthy:
        env = dict(
            os.environ,
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{hung.endpoint}/v1/traces",
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{refusing.endpoint}/v1/metrics",
            OUTAGE_APP_HEALTHY_TRACES_ENDPOINT=f"{healthy.endpoint}/v1/traces",
            OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT_S),
            OMP_NUM_THREADS="1",
        )
        process = subprocess.Popen(
            [sys.executable, str(APP)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            line = process.stdout.readline()
            done = time.monotonic()
            process.wait(timeout=120)
            exit_seconds = time.monotonic() - done
        finally:
            if process.poll() is None:
                process.kill()
        _, stderr = process.communicate()
        assert line.startswith("generated 3"), (line, stderr[-2000:])
        assert hung.connections >= 1 and not hung.released.is_set()  # the export really hung
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    assert exit_seconds < SIGNALS * EXPORT_TIMEOUT_S + TEARDOWN_SLACK_S, exit_seconds
    assert len(exported_spans(healthy)) == 3
