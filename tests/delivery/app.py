"""A transformers app with no OpenTelemetry code, run by the delivery tests.

Run it under `opentelemetry-instrument` with any exporter. It builds a tiny randomly
initialised GPT-2 (fixed seed, no download) and makes rounds of two greedy generate calls:

1. a sound one: 6 prompt tokens, 8 new tokens;
2. a broken one: a forward hook writes NaN into the middle decoder layer's output, as an
   fp16 overflow would, so CoreVital raises `nan_detected` and scores the call 1.0.

By default it makes one round and exits. With `--serve SECONDS` it behaves like a live
service: a round every `--interval` seconds until stdin closes or SECONDS have passed,
so a Prometheus scraping it sees counters grow. It prints `round N done` after each round.

A randomly initialised model is close to uniform (~8 bits of entropy over 256 tokens) at
every step; the tests tell CoreVital so with a profile override, or the sound call would
score as risky too.
"""

from __future__ import annotations

import argparse
import select
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

PROMPT_IDS = [17, 54, 3, 181, 42, 200]
NEW_TOKENS = 8
BROKEN_LAYER = 1


def build_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=3,
        n_embd=64,
        n_head=4,
        vocab_size=256,
        n_positions=128,
        bos_token_id=None,  # no end-of-sequence token: every call runs NEW_TOKENS steps
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config).eval()


def write_nan(module, args, output):
    hidden = output[0] if isinstance(output, tuple) else output
    hidden = torch.full_like(hidden, float("nan"))
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def generate(model: GPT2LMHeadModel) -> None:
    input_ids = torch.tensor([PROMPT_IDS])
    model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=NEW_TOKENS, do_sample=False
    )


def one_round(model: GPT2LMHeadModel) -> None:
    generate(model)
    hook = model.transformer.h[BROKEN_LAYER].register_forward_hook(write_nan)
    try:
        generate(model)
    finally:
        hook.remove()


def stdin_closed_within(seconds: float) -> bool:
    """Wait up to `seconds`; True as soon as stdin reaches end of file."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sys.stdin], [], [], left)
        if readable and not sys.stdin.readline():
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=float, default=0.0, help="keep making rounds for this many seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds when serving")
    args = parser.parse_args()

    model = build_model()
    deadline = time.monotonic() + args.serve
    rounds = 0
    while True:
        one_round(model)
        rounds += 1
        print(f"round {rounds} done", flush=True)
        if time.monotonic() >= deadline or stdin_closed_within(min(args.interval, deadline - time.monotonic())):
            break


if __name__ == "__main__":
    main()
