"""Overhead of CoreVital on generate: instrumented vs plain, in one process, alternating runs.

    python benchmarks/overhead.py --preset cpu-small
    python benchmarks/overhead.py --preset llama3-8b --prompts 512 --batches 1 8
    python benchmarks/overhead.py --preset llama3-1b --compile static --modes off summary full listener

Reports, per prompt length x batch, the median of each capture mode's paired ratios to plain
generate (ratio, with their interquartile range and the ratio of the two sides' fastest runs:
a noisy host only ever adds time), and the peak device memory each mode used beyond plain
generate, as a share of the model's own weights. `original` reproduces the original CoreVital's approach
(eager attention plus output_attentions / output_hidden_states / output_scores) for scale.
`listener` is summary mode with a (no-op) step listener attached, `health_stop` summary mode
with a CoreVitalStoppingCriteria whose rules are all off and no risk threshold (the call keeps
the stop rules' state only, as the default criterion's does), `health_stop_risk` the same with
a risk threshold that never applies (the full live state, as a listener has): all pay the
per-step host copy and the running health update, and none shortens the run.

`--compile static` runs the compiled path: a static cache, with which transformers compiles
the forward by itself (its default CompileConfig: inductor with CUDA graphs, "reduce-overhead");
`--compile static-inductor` the same without CUDA graphs. There the table also gives how many
graphs Dynamo compiled after the warm-up (0 is the target: any is a recompile CoreVital caused),
and plain generate's median before any instrumented run and after the last one.
`probe_floor` is plain generate with probes that see every layer at every step and do
nothing: a forward hook on each decoder layer and a pass-through wrapper in transformers'
attention registry (the two call paths summary mode probes through), no CoreVital at all: the
floor of summary's per-step cost on the dynamic path. `probe_floor_forward` replaces the hooks
with a pass-through `forward` on each layer instance, the cheapest way Python can see a layer's
output (no hook dispatch).
`plain_control` among the modes pairs plain generate with itself, before any instrumented
run (the noise floor of a paired ratio); on the compiled path plain generate is then timed
again, so a drift of the host shows apart from anything instrumented runs leave behind.
`--step-cost` times the live health per decoding step at steps 32 and 256 (constant work per
step shows as a flat figure). `--launches` counts, with torch.profiler, the device kernels (CPU: top-level aten operators)
each mode adds to plain generate per decoding step (from a short and a long call) and once per call.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import contextlib
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
from torch._dynamo.utils import counters
from transformers import CompileConfig, LlamaConfig, LlamaForCausalLM
from transformers.modeling_utils import AttentionInterface

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, CoreVitalStoppingCriteria

PRESETS = {
    "cpu-small": dict(
        config=dict(num_hidden_layers=4, hidden_size=256, intermediate_size=688, num_attention_heads=8,
                    num_key_value_heads=4, vocab_size=32000),
        device="cpu", dtype=torch.float32, prompts=[128], batches=[1, 4], new_tokens=64,
    ),
    # 32 narrow layers and a small vocabulary: generate is bound by the host's Python and dispatch,
    # as an 8B model's eager decoding is on a GPU, so CoreVital's per-layer host cost shows here
    "cpu-deep": dict(
        config=dict(num_hidden_layers=32, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=4096),
        device="cpu", dtype=torch.float32, prompts=[128], batches=[1], new_tokens=64,
    ),
    "llama3-1b": dict(
        config=dict(num_hidden_layers=16, hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
        device="cuda", dtype=torch.bfloat16, prompts=[256], batches=[1], new_tokens=128,
    ),
    "llama3-8b": dict(
        config=dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
        device="cuda", dtype=torch.bfloat16, prompts=[512, 4096], batches=[1, 8], new_tokens=128,
    ),
}
DEFAULT_MODES = ["off", "summary", "full", "on_risk", "original"]
LIVE_MODES = ("listener", "health_stop", "health_stop_risk")  # summary capture plus real-time health on every step
CONTROL = "plain_control"  # plain generate paired with itself
FLOORS = ("probe_floor", "probe_floor_forward")  # plain generate with empty probes at every layer


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


COMPILE_MODES = ("none", "static", "static-inductor")


def build_model(preset: dict, compile_mode: str = "none") -> torch.nn.Module:
    config = LlamaConfig(max_position_embeddings=8192, eos_token_id=None, bos_token_id=None, **preset["config"])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(preset["device"]):
        model = LlamaForCausalLM(config).to(preset["dtype"]).eval()
    if compile_mode != "none":
        compile_config = CompileConfig(mode="default" if compile_mode == "static-inductor" else "reduce-overhead")
        compile_config._compile_all_devices = preset["device"] == "cpu"  # transformers compiles on accelerators only
        model.generation_config.compile_config = compile_config
        model.generation_config.cache_implementation = "static"
    return model


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


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


@contextlib.contextmanager
def empty_probes(model, hooks: bool = True):
    """A pass-through wrapper around every attention function in transformers' registry, and on
    every decoder layer a forward hook that does nothing (`hooks`) or a pass-through `forward`
    set on the instance: summary mode's call paths into each layer, with nothing done in them."""
    registry = AttentionInterface._global_mapping
    originals = dict(registry)

    def through(function):
        def probed(module, query, key, value, attention_mask, *args, **kwargs):
            return function(module, query, key, value, attention_mask, *args, **kwargs)
        return probed

    def nothing(module, args, output):
        return None

    def seen(forward):
        def observed(*args, **kwargs):
            return forward(*args, **kwargs)
        return observed

    layers = model.model.layers
    handles = [layer.register_forward_hook(nothing) for layer in layers] if hooks else []
    if not hooks:
        for layer in layers:
            layer.forward = seen(layer.forward)
    registry.update({name: through(function) for name, function in originals.items()})
    try:
        yield
    finally:
        registry.update(originals)
        for handle in handles:
            handle.remove()
        if not hooks:
            for layer in layers:
                del layer.forward


class Modes:
    """Switches between plain generate and each capture mode between timed runs."""

    def __init__(self, model):
        self.model = model
        self.instrumentor = CoreVitalInstrumentor()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def run(self, mode: str, ids, new_tokens: int, device: str) -> Run:
        if mode in ("plain", CONTROL):
            return timed_generate(self.model, ids, new_tokens, device)
        if mode in FLOORS:
            with empty_probes(self.model, hooks=mode == "probe_floor"):
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
            settings[key] = value  # instrument() parses it as it would the environment variable
        extra = {}
        if name == "listener":
            settings["on_step"] = lambda step: None
        elif name == "health_stop":
            rules_off = dict(stop_on_repetition_loop=False, stop_on_nonfinite=False, risk_threshold=None)
            extra["stopping_criteria"] = [CoreVitalStoppingCriteria(**rules_off)]
        elif name == "health_stop_risk":  # the risk rule would apply from a step no call reaches
            rules_off = dict(stop_on_repetition_loop=False, stop_on_nonfinite=False, risk_threshold=1.0)
            extra["stopping_criteria"] = [CoreVitalStoppingCriteria(**rules_off, min_steps=1 << 30)]
        self.instrumentor.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **settings
        )
        try:
            return timed_generate(self.model, ids, new_tokens, device, **extra)
        finally:
            self.instrumentor.uninstrument()


def measure(modes: Modes, modes_list, prompt: int, batch: int, new_tokens: int, repeats: int, device: str,
            compiled: bool = False):
    """Each measured run of a mode is paired with a plain run right before it, so slow drift
    of a shared host cancels in the ratio. `original` switches the attention implementation,
    which disturbs later runs, so its pairs come last. On the compiled path the warm-up runs
    at full length (a static cache's shape follows max_new_tokens) and plain generate is also
    timed before any instrumented run and after the last one."""
    ids = prompt_batch(modes.model, prompt, batch, device)
    rotation = [m for m in modes_list if m not in ("original", CONTROL)]
    pairs = {mode: [] for mode in modes_list}
    for mode in ["plain", *rotation]:  # warm-up: kernels, allocator, first-call imports, compilation
        for _ in range(2 if compiled else 1):
            modes.run(mode, ids, new_tokens if compiled else min(new_tokens, 8), device)
    compiled_before = compiled_graphs()
    plain_only = [modes.run("plain", ids, new_tokens, device) for _ in range(repeats if compiled else 0)]
    extra = {}
    if CONTROL in modes_list:
        for _ in range(repeats):
            pairs[CONTROL].append((modes.run("plain", ids, new_tokens, device), modes.run(CONTROL, ids, new_tokens, device)))
        if compiled:
            after_control = [modes.run("plain", ids, new_tokens, device) for _ in range(repeats)]
            extra["plain_after_control_s"] = round(statistics.median(r.seconds for r in after_control), 4)
    schedule = []
    for repeat in range(repeats):
        schedule += rotation[repeat % len(rotation):] + rotation[: repeat % len(rotation)]
    if "original" in modes_list:
        schedule += ["original"] * max(2, repeats // 2)
    for mode in schedule:
        plain = modes.run("plain", ids, new_tokens, device)
        pairs[mode].append((plain, modes.run(mode, ids, new_tokens, device)))
        run = pairs[mode][-1][1]
        print(f"pair {mode}: plain {plain.seconds:.4f} s, ratio {run.seconds / plain.seconds:.3f}, "
              f"CPU-time ratio {run.cpu_seconds / plain.cpu_seconds:.3f}", file=sys.stderr, flush=True)
    if compiled:
        plain_after = [modes.run("plain", ids, new_tokens, device) for _ in range(repeats)]
        extra.update(
            graphs_compiled_after_warmup=compiled_graphs() - compiled_before,
            plain_before_s=round(statistics.median(r.seconds for r in plain_only), 4),
            plain_after_s=round(statistics.median(r.seconds for r in plain_after), 4),
        )
    return pairs, extra


def prompt_batch(model, prompt: int, batch: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(prompt * 31 + batch)
    return torch.randint(10, model.config.vocab_size, (batch, prompt), generator=generator).to(device)


def _top_level_operator(event) -> bool:
    """An aten operator not called from inside another (CPU has no kernel launches to count)."""
    parent = event.cpu_parent
    return event.name.startswith("aten::") and (parent is None or not parent.name.startswith("aten::"))


def launches_per_step(modes: Modes, modes_list, prompt: int, batch: int, device: str, steps=(8, 40)) -> dict:
    """Kernels (CPU: top-level aten operators) each mode adds to plain generate: per decoding step
    (the difference between a short and a long call, over the steps between them) and once per
    call (prefill, the end of the call's reductions and host copies)."""
    from torch.profiler import ProfilerActivity, profile

    ids = prompt_batch(modes.model, prompt, batch, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])

    def count(mode: str, new_tokens: int) -> int:
        modes.run(mode, ids, new_tokens, device)  # same shapes as the profiled run: nothing compiles in it
        with profile(activities=activities) as prof:
            modes.run(mode, ids, new_tokens, device)
        events = prof.events()
        if device == "cuda":
            return sum(1 for e in events if e.device_type.name == "CUDA")
        return sum(1 for e in events if _top_level_operator(e))

    short, long = steps
    added = {}
    for mode in ["plain", *(m for m in modes_list if m not in ("original", CONTROL))]:
        few, many = count(mode, short), count(mode, long)
        per_step = (many - few) / (long - short)
        added[mode] = (per_step, few - short * per_step)
    plain_step, plain_call = added.pop("plain")
    return {
        mode: dict(per_step=round(step - plain_step, 1), per_call=round(call - plain_call))
        for mode, (step, call) in added.items()
    }


def live_step_cost(modes: Modes, prompt: int, batch: int, device: str, at=(32, 256), repeats: int = 3) -> dict:
    """Microseconds the live health takes per decoding step around each step in `at` (median
    over steps s-4..s+3 of `repeats` listener runs): LiveMonitor.advance, i.e. the packed host
    copy (which waits for the step on an accelerator), the health update and the summaries.
    Flat from step 32 to step 256 means constant work per step."""
    from opentelemetry_instrumentation_corevital.live.monitor import LiveMonitor

    ids = prompt_batch(modes.model, prompt, batch, device)
    durations: dict[int, list[float]] = {}
    advance = LiveMonitor.advance

    def timed(monitor, input_ids):
        started = time.perf_counter()
        try:
            return advance(monitor, input_ids)
        finally:
            durations.setdefault(monitor.computer.session.step, []).append(time.perf_counter() - started)

    LiveMonitor.advance = timed
    try:
        for _ in range(repeats):
            modes.run("listener", ids, max(at) + 4, device)
    finally:
        LiveMonitor.advance = advance
    return {
        f"step_{step}_us": round(1e6 * statistics.median(d for t in range(step - 4, step + 4) for d in durations[t]), 1)
        for step in at
    }


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
            ratio_iqr=[round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]] if len(ratios) > 1 else None,
            # the least disturbed run of each side: a noisy host only ever adds time
            fastest_ratio=round(min(run.seconds for _, run in runs) / min(plain.seconds for plain, _ in runs), 3),
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
        triton=importlib.util.find_spec("triton") and importlib.metadata.version("triton"),  # the fused attention kernel's
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
    parser.add_argument("--compile", choices=COMPILE_MODES, default="none", help="the compiled path (static cache)")
    parser.add_argument("--launches", action="store_true", help="count kernels added per step (torch.profiler)")
    parser.add_argument("--launches-only", action="store_true", help="count kernels added per step, time nothing")
    parser.add_argument("--device", help="override the preset's device (e.g. cpu for a dry run)")
    parser.add_argument("--step-cost", action="store_true",
                        help="time the live health per step at steps 32 and 256 (listener runs of 260 tokens)")
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.device:
        preset.update(device=args.device, dtype=torch.float32 if args.device == "cpu" else preset["dtype"])
    device = preset["device"]
    model = build_model(preset, args.compile)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    modes = Modes(model)
    results = dict(
        environment=environment(), preset=args.preset, compile=args.compile, model_bytes=model_bytes, cases=[]
    )
    new_tokens = args.new_tokens or preset["new_tokens"]
    compiled = args.compile != "none"
    for prompt in args.prompts or preset["prompts"]:
        for batch in args.batches or preset["batches"]:
            case = dict(prompt=prompt, batch=batch, new_tokens=new_tokens)
            if not args.launches_only:
                pairs, extra = measure(modes, args.modes, prompt, batch, new_tokens, args.repeats, device, compiled)
                case.update(modes=summarise(pairs, model_bytes), **extra)
            if args.launches or args.launches_only:
                case["launches_added_per_step"] = launches_per_step(modes, args.modes, prompt, batch, device)
            if args.step_cost:
                case["live_step_cost"] = live_step_cost(modes, prompt, batch, device)
            results["cases"].append(case)
            print(json.dumps(case), flush=True)
            if args.json:  # after every case: a run stopped at a time limit keeps what it measured
                with open(args.json, "w") as handle:
                    json.dump(results, handle, indent=2)
    print(render_table(results))
    return 0


def render_table(results: dict) -> str:
    timed = [case for case in results["cases"] if "modes" in case]
    modes = [m for m in timed[0]["modes"] if m != "plain"] if timed else []
    lines = [
        "Each cell: median of paired wall-time ratios / of paired CPU-time ratios vs plain generate"
        " (+ extra peak device memory as % of the model's weights).",
        "",
        "| prompt | batch | plain s | " + " | ".join(modes) + " |",
        "|---" * (3 + len(modes)) + "|",
    ]
    for case in timed:
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
    for case in results["cases"]:
        notes = {key: case[key] for key in (
            "graphs_compiled_after_warmup", "plain_before_s", "plain_after_control_s", "plain_after_s",
            "launches_added_per_step",
            "live_step_cost",
        ) if key in case}
        if notes:
            lines.append(f"prompt {case['prompt']} batch {case['batch']}: {json.dumps(notes)}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
