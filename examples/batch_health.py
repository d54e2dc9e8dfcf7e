"""Health per sequence in a batch: one looping prompt is stopped, the others finish normally.

    python examples/batch_health.py

Three prompts go through one batched, left-padded generate call with
`CoreVitalStoppingCriteria`. The looping one ("I am a cat. I am a cat. ...") is stopped when
its loop is confirmed (finish reason `corevital.repetition_loop`); the others run on. A
global step listener, set in `instrument(on_step=...)`, counts the steps of each sequence.
The span's `corevital.sequence` events give each sequence's risk. Runs offline on CPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, CoreVitalStoppingCriteria

PROMPTS = (
    "I am a cat. I am a cat. I am a cat.",
    "The capital of France is",
    "Water boils at a temperature of",
)


def demo(model, tokenizer, spans: InMemorySpanExporter, max_new_tokens: int = 48, out=print) -> dict:
    """Needs the model instrumented with the `spans` exporter's tracer provider."""
    inputs = tokenizer(list(PROMPTS), return_tensors="pt", padding=True, padding_side="left")
    output = model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False,
        stopping_criteria=[CoreVitalStoppingCriteria()],
    )
    span = spans.get_finished_spans()[-1]
    finish_reasons = list(span.attributes["gen_ai.response.finish_reasons"])
    sequences = {e.attributes["corevital.sequence.index"]: e.attributes for e in span.events
                 if e.name == "corevital.sequence"}
    width = inputs["input_ids"].shape[1]
    for i, prompt in enumerate(PROMPTS):
        text = tokenizer.decode(output[i, width:], skip_special_tokens=True)
        risk = sequences[i].get("corevital.sequence.risk.score", float("nan"))
        out(f"[{i}] {prompt!r} -> {finish_reasons[i]}, {sequences[i]['corevital.sequence.output_tokens']} tokens, "
            f"risk {risk:.2f}: {text!r}")
    return {"finish_reasons": finish_reasons, "sequences": sequences}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=48, help="default: %(default)s")
    args = parser.parse_args(argv)

    steps_per_sequence = collections.Counter()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, on_step=lambda step: steps_per_sequence.update([step.sequence])
    )
    try:
        from opentelemetry_instrumentation_corevital.default_model import load_default_model

        print("Loading SmolLM2-135M-Instruct (offline, CPU)...", file=sys.stderr, flush=True)
        model, tokenizer = load_default_model()
        demo(model, tokenizer, spans, args.max_new_tokens)
        print(f"Steps seen by the global listener, per sequence: {dict(sorted(steps_per_sequence.items()))}")
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
