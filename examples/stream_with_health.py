"""Stream text and its health together: TextIteratorStreamer plus a CoreVital step listener.

    python examples/stream_with_health.py
    python examples/stream_with_health.py --prompt "Write a poem about the sea." --max-new-tokens 80

generate runs in a worker thread (`run.thread` keeps it inside the `observe()` block), the
main thread prints text as it streams, and after every chunk the health of the newest step:
entropy, running risk and any early-warning signal. At the end: the run's risk, narrative
and whether an application should intervene. Runs offline on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

from opentelemetry.sdk.trace import TracerProvider
from transformers import TextIteratorStreamer

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, StepSummary, observe

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


def health_line(step: StepSummary | None) -> str:
    if step is None:
        return "[health pending]"
    signals = f" warn={','.join(step.signals)}" if step.signals else ""
    return f"[step {step.step} entropy={step.entropy:.2f}b risk={step.risk:.2f}{signals}]"


def demo(model, tokenizer, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 48, out=print) -> dict:
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    chunks = []
    with observe(on_step=lambda step: None) as run:  # a listener: health is computed at every step
        worker = run.thread(
            model.generate, **inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer
        )
        for text in streamer:
            chunks.append((text, run.latest))
            out(f"{text!r:<24} {health_line(run.latest)}")
        worker.join()
    out(f"Risk {run.risk:.2f} ({run.label}); intervene: {run.should_intervene()}")
    out(f"Narrative: {run.narrative}")
    return {"chunks": chunks, "run": run}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=48, help="default: %(default)s")
    args = parser.parse_args(argv)

    tracer_provider = TracerProvider()
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        from opentelemetry_instrumentation_corevital.default_model import load_default_model

        print("Loading SmolLM2-135M-Instruct (offline, CPU)...", file=sys.stderr, flush=True)
        model, tokenizer = load_default_model()
        demo(model, tokenizer, args.prompt, args.max_new_tokens)
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
