"""Host time of the live health per decoding step, apart from generate: `RunningHealth` fed
synthetic steps shaped like an 8B model's (32 layers, 32 heads, 32 repetition lags), then the
features, signals and risk a step listener receives, at every step.

Pure numpy on the host, so unlike wall time of a whole generate it is steady on a noisy
machine: the figure is the median over `--repeats` runs of the mean time per step.

    OMP_NUM_THREADS=1 python benchmarks/running_step.py --batches 1 8 --steps 128 --repeats 15
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from opentelemetry_instrumentation_corevital.analysis.risk import risk_score
from opentelemetry_instrumentation_corevital.analysis.running import RunningHealth, StepRows
from opentelemetry_instrumentation_corevital.profiles import load_profile
from opentelemetry_instrumentation_corevital.summaries import HIDDEN_STATS, LOGIT_STATS


def synthetic_steps(batch: int, steps: int, layers: int, heads: int, lags: int, seed: int = 0) -> list[StepRows]:
    """Fluent text in half the rows, a period-3 loop with high cosines from step 40 in the other half."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 32000, (batch, steps))
    cosine = rng.uniform(-0.1, 0.6, (batch, steps, lags)).astype(np.float32)
    for row in range(batch // 2, batch):
        for t in range(40, steps):
            tokens[row, t] = tokens[row, t - 3]
            cosine[row, t, 2] = 0.97
    cosine[:, np.arange(steps)[:, None] - 1 - np.arange(lags)[None, :] < 0] = np.nan
    logits = np.zeros((batch, steps, len(LOGIT_STATS)), np.float32)
    for name, low, high in (("entropy", 0, 6), ("margin", 0, 1), ("max_prob", 0.2, 1), ("surprisal", 0, 10)):
        logits[..., LOGIT_STATS.index(name)] = rng.uniform(low, high, (batch, steps))
    hidden = np.zeros((batch, steps, layers, len(HIDDEN_STATS)), np.float32)
    hidden[..., HIDDEN_STATS.index("l2_norm")] = rng.uniform(5, 15, (batch, steps, layers))
    collapsed = rng.integers(0, 3, (batch, steps, layers)).astype(np.float32)
    return [
        StepRows(
            token_ids=tokens[:, t], valid=np.ones(batch, bool), logits=logits[:, t], hidden=hidden[:, t],
            collapsed_heads=collapsed[:, t] if t % 4 == 0 else np.full((batch, layers), np.nan, np.float32),
            repetition_cosine=cosine[:, t],
        )
        for t in range(steps)
    ]


def seconds_per_step(rows: list[StepRows], profile, layers: int, heads: int) -> float:
    batch = rows[0].valid.size
    health = RunningHealth(profile, batch, layers, heads, capacity=len(rows) + 2)
    started = time.perf_counter()
    for step in rows:
        health.add_step(step)
        features, signals = health.features(), health.signals()
        for row in health.running.tolist():
            risk_score(features[row], profile)
    return (time.perf_counter() - started) / len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--json")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    cases = []
    for batch in args.batches:
        rows = synthetic_steps(batch, args.steps, args.layers, args.heads, lags=32)
        seconds_per_step(rows, profile, args.layers, args.heads)  # warm-up
        runs = [seconds_per_step(rows, profile, args.layers, args.heads) for _ in range(args.repeats)]
        case = dict(batch=batch, steps=args.steps, us_per_step=round(1e6 * statistics.median(runs), 1),
                    us_per_step_min=round(1e6 * min(runs), 1))
        cases.append(case)
        print(json.dumps(case))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(machine=platform.platform(), python=platform.python_version(), numpy=np.__version__,
                           layers=args.layers, heads=args.heads, profile=args.profile, cases=cases), handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
