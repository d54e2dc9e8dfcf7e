"""Where CoreVital's per-step CPU time goes: cProfile over one instrumented generate.

    python benchmarks/profile_step.py --preset llama3-8b --prompt 512 --batch 1 --mode summary
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch

from overhead import PRESETS, Modes, build_model


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--mode", default="summary")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    model = build_model(preset)
    modes = Modes(model)
    ids = torch.randint(10, model.config.vocab_size, (args.batch, args.prompt)).to(preset["device"])
    modes.run(args.mode, ids, 8, preset["device"])
    profiler = cProfile.Profile()
    profiler.enable()
    modes.run(args.mode, ids, args.new_tokens, preset["device"])
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    stats.print_stats(25)
    stats.sort_stats("cumulative").print_stats("corevital", 20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
