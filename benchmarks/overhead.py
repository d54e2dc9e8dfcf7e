"""Overhead of CoreVital on generate: instrumented vs plain, in one process, alternating runs.

    python benchmarks/overhead.py --preset cpu-small
    python benchmarks/overhead.py --preset llama3-8b --prompts 512 --batches 1 8

Reports, per prompt length x batch, the median wall time of each capture mode over the median
of plain generate (ratio), and the peak device memory each mode used beyond plain generate, as
a share of the model's own weights. `original` reproduces the original CoreVital's approach
(eager attention plus output_attentions / output_hidden_states / output_scores) for scale.
`listener` is summary mode with a (no-op) step listener attached, `health_stop` summary mode
with a CoreVitalStoppingCriteria whose rules are all off: both pay the per-step host copy and
the analysis of the steps so far, and neither shortens the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import transformers
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from transformers import LlamaConfig, LlamaForCausalLM

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, CoreVitalStoppingCriteria

PRESETS = {
    "cpu-small": dict(
        config=dict(num_hidden_layers=4, hidden_size=256, intermediate_size=688, num_attention_heads=8,
                    num_key_value_heads=4, vocab_size=32000),
        device="cpu", dtype=torch.float32, prompts=[128], batches=[1, 4], new_tokens=64,
    ),
    "llama3-8b": dict(
        config=dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
        device="cuda", dtype=torch.bfloat16, prompts=[512, 4096], batches=[1, 8], new_tokens=128,
    ),
}
DEFAULT_MODES = ["off", "summary", "full", "on_risk", "original"]
LIVE_MODES = ("listener", "health_stop")  # summary capture plus real-time health on every step


class _Discard(SpanExporter):
    """Spans go through the real SDK pipeline and are dropped at the end."""

    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


@dataclass
class Run:
    seconds: float
    peak_bytes: int | None
    failed: str | None = None
    cpu_seconds: float = float("nan")  # CPU time of the generating thread


def build_model(preset: dict) -> torch.nn.Module:
    config = LlamaConfig(max_position_embeddings=8192, eos_token_id=None, bos_token_id=None, **preset["config"])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(preset["device"]):
        model = LlamaForCausalLM(config).to(preset["dtype"]).eval()
    return model


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_generate(model, ids, new_tokens: int, device: str, original: bool = False, **extra) -> Run:
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **extra)
    if original:
        kwargs.update(output_attentions=True, output_hidden_states=True, output_scores=True,
                      return_dict_in_generate=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    started, started_cpu = time.perf_counter(), time.thread_time()
    try:
        output = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        _sync(device)
    except torch.OutOfMemoryError as exc:
        return Run(float("nan"), None, f"out of memory: {str(exc).splitlines()[0][:120]}")
    seconds, cpu_seconds = time.perf_counter() - started, time.thread_time() - started_cpu
    del output
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return Run(seconds, peak, cpu_seconds=cpu_seconds)


class Modes:
    """Switches between plain generate and each capture mode between timed runs."""

    def __init__(self, model):
        self.model = model
        self.instrumentor = CoreVitalInstrumentor()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def run(self, mode: str, ids, new_tokens: int, device: str) -> Run:
        if mode == "plain":
            return timed_generate(self.model, ids, new_tokens, device)
        if mode == "original":
            self.model.set_attn_implementation("eager")
            try:
                return timed_generate(self.model, ids, new_tokens, device, original=True)
            finally:
                self.model.set_attn_implementation("sdpa")
        name, _, option = mode.partition(":")
        settings = dict(capture_mode="summary" if name in LIVE_MODES else name)
        if option:
            key, value = option.split("=")
            settings[key] = int(value)
        extra = {}
        if name == "listener":
            settings["on_step"] = lambda step: None
        elif name == "health_stop":
            rules_off = dict(stop_on_repetition_loop=False, stop_on_nonfinite=False, risk_threshold=None)
            extra["stopping_criteria"] = [CoreVitalStoppingCriteria(**rules_off)]
        self.instrumentor.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **settings
        )
        try:
            return timed_generate(self.model, ids, new_tokens, device, **extra)
        finally:
            self.instrumentor.uninstrument()


def measure(modes: Modes, modes_list, prompt: int, batch: int, new_tokens: int, repeats: int, device: str):
    """Each measured run of a mode is paired with a plain run right before it, so slow drift
    of a shared host cancels in the ratio. `original` switches the attention implementation,
    which disturbs later runs, so its pairs come last."""
    generator = torch.Generator().manual_seed(prompt * 31 + batch)
    ids = torch.randint(10, modes.model.config.vocab_size, (batch, prompt), generator=generator).to(device)
    rotation = [m for m in modes_list if m != "original"]
    pairs = {mode: [] for mode in modes_list}
    for mode in ["plain", *rotation]:  # warm-up: kernels, allocator, first-call imports
        modes.run(mode, ids, min(new_tokens, 8), device)
    schedule = []
    for repeat in range(repeats):
        schedule += rotation[repeat % len(rotation):] + rotation[: repeat % len(rotation)]
    if "original" in modes_list:
        schedule += ["original"] * max(2, repeats // 2)
    for mode in schedule:
        plain = modes.run("plain", ids, new_tokens, device)
        pairs[mode].append((plain, modes.run(mode, ids, new_tokens, device)))
    return pairs


def summarise(pairs: dict, model_bytes: int) -> dict:
    plain_runs = [plain for runs in pairs.values() for plain, _ in runs]
    plain_peak = max((r.peak_bytes or 0) for r in plain_runs)
    rows = {"plain": dict(seconds=round(statistics.median(r.seconds for r in plain_runs), 4))}
    for mode, runs in pairs.items():
        failures = [run.failed for _, run in runs if run.failed]
        if failures:
            rows[mode] = dict(failed=failures[0])
            continue
        ratios = [run.seconds / plain.seconds for plain, run in runs]
        cpu_ratios = [run.cpu_seconds / plain.cpu_seconds for plain, run in runs]
        row = dict(
            seconds=round(statistics.median(run.seconds for _, run in runs), 4),
            ratio=round(statistics.median(ratios), 3),
            cpu_ratio=round(statistics.median(cpu_ratios), 3),
            pair_ratios=[round(x, 3) for x in ratios],
        )
        if runs[0][1].peak_bytes is not None:
            extra = max(run.peak_bytes for _, run in runs) - plain_peak
            row.update(extra_peak_mib=round(extra / 2**20, 1), extra_peak_pct_of_model=round(100 * extra / model_bytes, 3))
        rows[mode] = row
    return rows


def environment() -> dict:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return dict(
        device=device,
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        command=" ".join(["python", *sys.argv]),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--prompts", type=int, nargs="*")
    parser.add_argument("--batches", type=int, nargs="*")
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="*", default=DEFAULT_MODES)
    parser.add_argument("--json", help="write results here as JSON")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    device = preset["device"]
    model = build_model(preset)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    modes = Modes(model)
    results = dict(environment=environment(), preset=args.preset, model_bytes=model_bytes, cases=[])
    new_tokens = args.new_tokens or preset["new_tokens"]
    for prompt in args.prompts or preset["prompts"]:
        for batch in args.batches or preset["batches"]:
            pairs = measure(modes, args.modes, prompt, batch, new_tokens, args.repeats, device)
            case = dict(prompt=prompt, batch=batch, new_tokens=new_tokens, modes=summarise(pairs, model_bytes))
            results["cases"].append(case)
            print(json.dumps(case), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    print(render_table(results))
    return 0


def render_table(results: dict) -> str:
    modes = [m for m in results["cases"][0]["modes"] if m != "plain"] if results["cases"] else []
    lines = [
        "Each cell: median of paired wall-time ratios / of paired CPU-time ratios vs plain generate"
        " (+ extra peak device memory as % of the model's weights).",
        "",
        "| prompt | batch | plain s | " + " | ".join(modes) + " |",
        "|---" * (3 + len(modes)) + "|",
    ]
    for case in results["cases"]:
        cells = []
        for mode in modes:
            row = case["modes"][mode]
            if "failed" in row:
                cells.append("OOM" if "memory" in row["failed"] else "failed")
                continue
            cell = f"{row['ratio']:.3f}x / {row['cpu_ratio']:.3f}x"
            if "extra_peak_pct_of_model" in row:
                cell += f" (+{row['extra_peak_pct_of_model']:.2f}% mem)"
            cells.append(cell)
        plain = case["modes"]["plain"]["seconds"]
        lines.append(f"| {case['prompt']} | {case['batch']} | {plain:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
