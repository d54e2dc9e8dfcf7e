"""Correctness on a GPU before timing there: identical outputs and finite summaries per mode.

    python benchmarks/cuda_check.py
"""

from __future__ import annotations

import torch
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from transformers import LlamaConfig, LlamaForCausalLM

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor


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
    print("FAILURES", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
