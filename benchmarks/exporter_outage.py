"""generate latency with the OTLP endpoint down, hung or resetting, against a working one.

    OMP_NUM_THREADS=1 python benchmarks/exporter_outage.py --rounds 7

Every condition exports through the real SDK pipeline (BatchSpanProcessor +
OTLPSpanExporter, PeriodicExportingMetricReader + OTLPMetricExporter, HTTP) to its own
loopback endpoint: `working` answers like a collector, `down` is a closed port, `slow`
accepts and never answers, `reset` accepts and resets the connection. Each measured block of
calls under an outage is paired with a block under `working` right before it, and the table
gives the median of the paired ratios; `plain` (uninstrumented) is paired the same way for
scale. Then the exit test: the app in tests/reliability/outage_app.py runs against each
endpoint with OTEL_EXPORTER_OTLP_TIMEOUT, and the seconds from its last generate to process
exit are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.version import __version__ as SDK_VERSION
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor  # noqa: E402
from tests.reliability.helpers import OTLPReceiver  # noqa: E402

OUTAGES = ("down", "slow", "reset")
APP = REPO / "tests" / "reliability" / "outage_app.py"


def build_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=4, hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=4,
        vocab_size=32000, eos_token_id=None, bos_token_id=None, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


class Condition:
    """One endpoint and the SDK providers exporting to it, kept for the whole run like a real process's."""

    def __init__(self, receiver: OTLPReceiver, export_timeout_s: float):
        self.receiver = receiver
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        spans = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=export_timeout_s)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(spans, schedule_delay_millis=100))
        metrics = OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics", timeout=export_timeout_s)
        reader = PeriodicExportingMetricReader(metrics, export_interval_millis=500)
        self.meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)


def time_block(model, ids, calls: int, new_tokens: int, instrumentor=None, condition=None) -> float:
    if condition is not None:
        instrumentor.instrument(tracer_provider=condition.tracer_provider, meter_provider=condition.meter_provider)
    try:
        started = time.perf_counter()
        for _ in range(calls):
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return (time.perf_counter() - started) / calls
    finally:
        if condition is not None:
            instrumentor.uninstrument()


def latency(args) -> dict:
    model = build_model()
    ids = torch.randint(3, 32000, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    instrumentor = CoreVitalInstrumentor()
    receivers = {name: OTLPReceiver(name).__enter__() for name in ("working", *OUTAGES)}
    receivers["working"].mode = "ok"
    conditions = {name: Condition(receiver, args.export_timeout) for name, receiver in receivers.items()}
    block = dict(calls=args.calls, new_tokens=args.new_tokens)
    time_block(model, ids, **block, instrumentor=instrumentor, condition=conditions["working"])  # warm-up
    ratios = {name: [] for name in ("plain", *OUTAGES)}
    seconds = {name: [] for name in ("working", "plain", *OUTAGES)}
    for _ in range(args.rounds):
        for name in ("plain", *OUTAGES):
            working = time_block(model, ids, **block, instrumentor=instrumentor, condition=conditions["working"])
            other = time_block(model, ids, **block, instrumentor=instrumentor, condition=conditions.get(name))
            ratios[name].append(other / working)
            seconds["working"].append(working)
            seconds[name].append(other)
    stuck = receivers["slow"].connections > 0 and not receivers["slow"].released.is_set()
    delivered = len(receivers["working"].bodies.get("/v1/traces", []))
    for receiver in receivers.values():
        receiver.__exit__(None, None, None)
    return {
        "median_ratio_vs_working": {name: statistics.median(values) for name, values in ratios.items()},
        "median_seconds_per_call": {name: statistics.median(values) for name, values in seconds.items()},
        "ratios": ratios,
        "slow_endpoint_held_an_unanswered_export": stuck,
        "working_endpoint_trace_requests": delivered,
    }


def exit_seconds(mode: str, export_timeout_s: float) -> float:
    with OTLPReceiver(mode) as receiver:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_EXPORTER_OTLP_TIMEOUT=str(export_timeout_s))
        process = subprocess.Popen([sys.executable, str(APP)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        process.stdout.readline()
        done = time.monotonic()
        process.wait(timeout=300)
        return time.monotonic() - done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3, help="generate calls per timed block")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--export-timeout", type=float, default=10.0, help="exporter timeout during the latency runs")
    parser.add_argument("--exit-timeouts", type=float, nargs="*", default=[2.0, 5.0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "exporter_outage_cpu.json")
    args = parser.parse_args()

    results = {
        "command": " ".join(sys.argv),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "opentelemetry-sdk": SDK_VERSION,
        },
        "settings": vars(args) | {"out": str(args.out)},
        "latency": latency(args),
        "exit_seconds": {
            str(timeout): {mode: exit_seconds(mode, timeout) for mode in ("ok", "down", "slow", "reset")}
            for timeout in args.exit_timeouts
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    ratios = results["latency"]["median_ratio_vs_working"]
    print("| condition | median s/call | ratio vs working |")
    print("|---|---|---|")
    for name, value in results["latency"]["median_seconds_per_call"].items():
        print(f"| {name} | {value:.4f} | {ratios.get(name, 1.0):.3f}x |")
    print("exit seconds after the last generate:", json.dumps(results["exit_seconds"]))


if __name__ == "__main__":
    main()
