"""Two threads generating at once on one compiled model: how often does Dynamo hit its
recompile limit, with and without CoreVital?

    OMP_NUM_THREADS=1 python -m benchmarks.compiled_threads --rounds 300 [--compile module]
    OMP_NUM_THREADS=1 python -m benchmarks.compiled_threads --rounds 300 --instrumented [--compile module]

A 2-layer Llama from tests/ (fixed seed) gets `model.forward = torch.compile(model.forward,
fullgraph=True)` (`--compile module`: `model.compile(fullgraph=True)`); three calls (batch 1 and 2, different prompt lengths and max_new_tokens) compile
every variant, instrumented too when asked; then each round starts two threads behind a barrier
that generate at once. Prints the rounds whose calls raised, and the versions. With
`TORCH_LOGS=recompiles` Dynamo prints why it recompiled.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading

import torch
import transformers

from tests.conftest import build_llama, prompt_ids

CALLS = [((1, 8), 5), ((2, 11), 3), ((1, 5), 7)]
THREADED = (0, 2)


def generate(model, index: int) -> torch.Tensor:
    (batch, length), new_tokens = CALLS[index]
    ids = prompt_ids(batch=batch, length=length, seed=length)
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)


def one_round(model) -> list[str]:
    barrier, errors = threading.Barrier(len(THREADED)), []

    def worker(index):
        try:
            barrier.wait()
            generate(model, index)
        except Exception as exc:  # counted, as the application would see it
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=worker, args=(index,)) for index in THREADED]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--instrumented", action="store_true", help="CoreVital (summary mode) on every call")
    parser.add_argument("--compile", choices=("forward", "module"), default="forward")
    args = parser.parse_args()

    model = build_llama(layers=2)
    if args.compile == "module":
        model.compile(fullgraph=True)
    else:
        model.forward = torch.compile(model.forward, fullgraph=True)
    for index in range(len(CALLS)):
        generate(model, index)
    if args.instrumented:
        from opentelemetry.sdk.trace import TracerProvider

        from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

        CoreVitalInstrumentor().instrument(tracer_provider=TracerProvider())
        for index in range(len(CALLS)):
            generate(model, index)
    failed = {}
    for round_index in range(args.rounds):
        if errors := one_round(model):
            failed[round_index] = errors
    print(json.dumps({
        "instrumented": args.instrumented, "compile": args.compile, "rounds": args.rounds, "rounds_failed": len(failed), "failures": failed,
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
