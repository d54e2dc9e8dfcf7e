"""Kernels and time per decoding step of CoreVital's logit statistics, on the device.

    python benchmarks/logit_stats_kernels.py --rows 1 8 --json out.json

For logits as wide as Llama 3's vocabulary, checks that the statistics equal their float64
definitions and that the two-round top-k equals torch.topk; then counts the device kernels of
one call (torch.profiler) and times 200 calls back to back (the host launching them included,
as in generate's loop).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch.profiler import ProfilerActivity, profile

from opentelemetry_instrumentation_corevital.capture import stats


def reference(logits: torch.Tensor) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.double(), -1)
    probs = log_probs.exp()
    top = probs.topk(stats.TOP_K_MASS, -1).values
    return torch.stack(
        (torch.special.entr(probs).sum(-1) / math.log(2), top[:, 0] - top[:, 1], top.sum(-1), top[:, 0],
         logits.isnan().sum(-1).double(), logits.isinf().sum(-1).double()),
        dim=-1,
    ).float()


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def kernels(call, device: str) -> int:
    call()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        call()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        return sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None)


def microseconds(call, device: str, calls: int = 200) -> float:
    for _ in range(10):
        call()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    if device == "cuda":
        torch.cuda.synchronize()
    return round((time.perf_counter() - started) / calls * 1e6, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = dict(device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                   torch=torch.__version__, vocab=args.vocab, cases=[])
    for rows in args.rows:
        generator = torch.Generator().manual_seed(rows)
        logits = (torch.randn(rows, args.vocab, generator=generator) * 4).to(torch.bfloat16).float()
        if rows > 1:
            logits[1, 3] = float("nan")
        logits = logits.to(args.device)
        tokens = torch.randint(0, args.vocab, (rows,), generator=generator).to(args.device)
        out, surprisal = torch.empty(rows, 6, device=args.device), torch.empty(rows, device=args.device)
        expected = reference(logits)
        eager, log_probs = stats.logit_stats(logits, out=torch.empty_like(out))
        case = dict(
            rows=rows,
            max_error=float((eager - expected).abs().nan_to_num().max()),
            nan_in_same_places=bool(torch.equal(expected.isnan(), eager.isnan())),
            two_round_topk_equal=same(stats.chunked_top_values(logits, 10), logits.topk(10).values),
            kernels=dict(
                logit_stats=kernels(lambda: stats.logit_stats(logits, out=out), args.device),
                surprisal=kernels(lambda: stats.chosen_surprisal_bits(log_probs, tokens, out=surprisal), args.device),
            ),
            microseconds_per_call=microseconds(lambda: stats.logit_stats(logits, out=out), args.device),
        )
        results["cases"].append(case)
        print(json.dumps(case), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
