"""Correctness on a GPU before timing there: identical outputs and finite summaries per mode,
no per-step sync in summary mode, the default health stop stopping where the full live
state does, and the fused attention kernel giving the torch reduction's values.

    python benchmarks/cuda_check.py
"""

from __future__ import annotations

import warnings

import torch
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from transformers import LlamaConfig, LlamaForCausalLM

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, CoreVitalStoppingCriteria, observe
from opentelemetry_instrumentation_corevital.capture import attention_kernel, stats
from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession


def _syncs_during(generate) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            generate()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def count_added_syncs(model, ids, provider) -> int:
    """Summary mode adds no per-step host synchronisation: its extra syncs (the one copy of
    the summaries to the host at the end) are the same for 24 and 48 generated tokens."""
    extra = {}
    instrumentor = CoreVitalInstrumentor()
    for steps in (24, 48):
        run = lambda: model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)  # noqa: E731
        run()
        plain = _syncs_during(run)
        instrumentor.instrument(tracer_provider=provider, capture_mode="summary")
        try:
            extra[steps] = _syncs_during(run) - plain
        finally:
            instrumentor.uninstrument()
    print(f"extra host syncs per call: {extra}")
    return 0 if extra[48] - extra[24] < 12 else 1  # a per-step sync would add 24


def stop_rules_match_full_state(provider, exporter) -> int:
    """A health stop alone keeps the stop rules' state; under observe() the call keeps the full
    state: on a tiny greedy model that loops, both stop the same sequences at the same steps."""
    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(3, 128, (4, 6), generator=torch.Generator().manual_seed(1)).cuda()
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        kwargs = dict(max_new_tokens=60, do_sample=False, attention_mask=torch.ones_like(ids))
        with observe():
            full = model.generate(ids, stopping_criteria=[CoreVitalStoppingCriteria()], **kwargs)
        full_span = exporter.get_finished_spans()[-1]
        alone = model.generate(ids, stopping_criteria=[CoreVitalStoppingCriteria()], **kwargs)
        alone_span = exporter.get_finished_spans()[-1]
    finally:
        instrumentor.uninstrument()

    def stops(span):
        return [dict(e.attributes) for e in span.events if e.name == "corevital.intervention"]

    same = torch.equal(full, alone) and stops(full_span) == stops(alone_span)
    error = alone_span.attributes.get("corevital.error")
    print(f"health stop alone vs full state: identical={same} stops={len(stops(alone_span))} error={error}")
    return 0 if same and stops(alone_span) and error is None else 1


def _attention_case(layers, rows, heads, kv_heads, keys, dim, dtype, mask, softcap, scaling):
    generator = torch.Generator(device="cuda").manual_seed(keys)
    queries = [torch.randn(rows, heads, 1, dim, device="cuda", generator=generator).to(dtype) for _ in range(layers)]
    keys_ = [torch.randn(rows, kv_heads, keys, dim, device="cuda", generator=generator).to(dtype) for _ in range(layers)]
    if mask == "padding":
        mask = torch.zeros(rows, 1, 1, keys + 3, device="cuda", dtype=dtype)
        mask[0, ..., :9] = torch.finfo(dtype).min
    elif mask == "keep":
        mask = torch.ones(rows, keys, dtype=torch.bool, device="cuda")
        mask[-1, :5] = False
    pending = [(q, k, mask, scaling, softcap) for q, k in zip(queries, keys_)]
    fused = attention_kernel.fused_newest_query_attention(pending)
    reference = stats.newest_query_attention_layers([(q.float(), k.float(), *rest) for q, k, *rest in pending])
    as_dtype = stats.newest_query_attention_layers(pending)
    if fused is None:
        return float("inf"), float("inf")
    return ((fused - reference).abs().max().item(), (fused - as_dtype).abs().max().item())


def fused_attention_matches_torch() -> int:
    """The fused kernel gives the torch reduction's values (from float32 copies of the same
    inputs) on the layouts models hand it, and a call's attention statistics agree with the
    kernel on and off (bf16: the torch reduction rounds the scores to bf16 first)."""
    failures = 0
    cases = [
        (32, 1, 32, 8, 640, 128, torch.bfloat16, None, None, None),
        (32, 8, 32, 8, 700, 128, torch.bfloat16, "padding", None, None),
        (16, 2, 8, 8, 333, 64, torch.float16, "keep", None, 0.1),
        (8, 3, 8, 4, 4100, 256, torch.bfloat16, "padding", 50.0, 0.0625),
        (4, 2, 12, 2, 90, 80, torch.float32, None, None, None),
    ]
    for case in cases:
        to_float32, to_dtype = _attention_case(*case)
        ok = to_float32 < 2e-3
        failures += not ok
        print(f"fused attention {case[:6]} {case[6]} mask={case[7]} softcap={case[8]}: "
              f"max |fused - float32 torch| {to_float32:.2e}, vs torch in the inputs' dtype {to_dtype:.2e} ok={ok}")
    config = LlamaConfig(num_hidden_layers=4, hidden_size=256, intermediate_size=512, num_attention_heads=8,
                         num_key_value_heads=2, vocab_size=1000, eos_token_id=None)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(3, 1000, (2, 40), generator=torch.Generator().manual_seed(2)).cuda()
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # left padding: the kernel reads the mask row
    heads = {}
    for fused in (True, False):
        session = CaptureSession(model, CaptureOptions(max_steps=20, fused_attention=fused))
        with session.attached(), session.active(), torch.no_grad():
            sequences = model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
        session.finish(sequences, set())
        heads[fused] = session.buffers.heads[1:20]  # the decoding steps (the prompt's is never fused)
    worst = (heads[True] - heads[False]).abs().nan_to_num(0.0).max().item()
    same_nan = torch.equal(heads[True].isnan(), heads[False].isnan())
    ok = same_nan and worst < 5e-2
    print(f"a call's attention statistics, fused vs torch: max difference {worst:.2e}, same NaN={same_nan} ok={ok}")
    return failures + (not ok)


def main() -> int:
    config = LlamaConfig(num_hidden_layers=4, hidden_size=512, intermediate_size=1024, num_attention_heads=8,
                         num_key_value_heads=2, vocab_size=32000, eos_token_id=None)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(10, 32000, (4, 256), device="cuda")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    failures = 0
    for decoding in (dict(do_sample=False), dict(do_sample=True), dict(num_beams=3, do_sample=False)):
        torch.manual_seed(1)
        plain = model.generate(ids, max_new_tokens=24, **decoding)
        for mode in ("summary", "full", "on_risk"):
            instrumentor = CoreVitalInstrumentor()
            instrumentor.instrument(tracer_provider=provider, capture_mode=mode)
            torch.manual_seed(1)
            traced = model.generate(ids, max_new_tokens=24, **decoding)
            instrumentor.uninstrument()
            span = exporter.get_finished_spans()[-1]
            same = torch.equal(plain, traced)
            error = span.attributes.get("corevital.error")
            failures += (not same) + (error is not None)
            print(f"{decoding} {mode}: identical={same} error={error} attrs={len(span.attributes)} events={len(span.events)}")
    failures += count_added_syncs(model, ids, provider)
    failures += stop_rules_match_full_state(provider, exporter)
    failures += fused_attention_matches_torch()
    print("FAILURES", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
