"""Host instructions CoreVital adds per decoding step, counted by valgrind (no timing noise).

Wall and CPU time on a shared host move by more than CoreVital's per-step cost; the number of
instructions the host executes barely moves: a little between processes (memory layout), which
`--repeats` measures and a long span between the two lengths divides down (8 and 104 new
tokens: the slopes of two processes differ by under 0.1M instructions per step). Each (mode,
new tokens) runs in its own process under callgrind, which counts only inside one
`operator.call` around a single generate call (after warm-up). The count grows linearly with
the new tokens: its slope between two lengths is the host's work per decoding step (the model's
Python and dispatch, CoreVital's probes, and the per-token share of the end of the call), its
intercept the work per call. Counted on the CPU, so the model's arithmetic is in the count too:
use a preset whose arithmetic is small next to its dispatch (`cpu-deep`).

    python benchmarks/host_instructions.py --preset cpu-deep --modes plain summary listener --json out.json

Needs valgrind (`apt-get install valgrind`) and Python 3.11+ (operator.call).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import operator
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import PRESETS, Modes, build_model, prompt_batch  # noqa: E402

# the C function of operator.call: the only place callgrind counts
_COUNTED_FUNCTION = "_operator_call"


def _child(preset_name: str, mode: str, prompt: int, batch: int, new_tokens: int) -> None:
    """One generate call of `mode`, counted; everything before it (imports, model, warm-up) is not."""
    import gc

    torch.set_num_threads(1)
    preset = PRESETS[preset_name]
    model = build_model(preset)
    modes = Modes(model)
    ids = prompt_batch(model, prompt, batch, preset["device"])
    for warm in ("plain", mode, mode):
        modes.run(warm, ids, 4, preset["device"])
    gc.collect()
    gc.disable()  # a collection's cost depends on the heap, not on the call
    operator.call(modes.run, mode, ids, new_tokens, preset["device"])


def count(preset: str, mode: str, prompt: int, batch: int, new_tokens: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={_COUNTED_FUNCTION}",
            f"--callgrind-out-file={out}", sys.executable, __file__, "--child",
            preset, mode, str(prompt), str(batch), str(new_tokens),
        ]
        # a fixed hash seed: string hashes decide dict probing, and so part of the count
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"{mode} x {new_tokens}: valgrind failed: {done.stderr.strip().splitlines()[-1:]}")
        match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        if match is None or int(match.group(1)) == 0:
            raise RuntimeError(f"{mode} x {new_tokens}: nothing was counted inside {_COUNTED_FUNCTION}")
        return int(match.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        preset, mode, prompt, batch, new_tokens = sys.argv[2:7]
        _child(preset, mode, int(prompt), int(batch), int(new_tokens))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-deep", choices=[n for n, p in PRESETS.items() if p["device"] == "cpu"])
    parser.add_argument("--modes", nargs="+", default=["plain", "summary", "full", "listener"])
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", nargs=2, type=int, default=[8, 104], metavar=("SHORT", "LONG"))
    parser.add_argument("--repeats", type=int, default=2, help="processes per (mode, length); the spread of their slopes is the figure's noise")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed: install it (apt-get install valgrind) to count host instructions")
    modes = args.modes if "plain" in args.modes else ["plain", *args.modes]
    short, long = sorted(args.steps)
    if short == long:
        parser.error("--steps needs two different lengths: the count per step is the slope between them")
    cells = [(mode, steps, r) for r in range(args.repeats) for mode in modes for steps in (short, long)]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        counts = dict(zip(cells, pool.map(lambda c: count(args.preset, c[0], args.prompt, args.batch, c[1]), cells)))
    repeats = range(args.repeats)
    # one slope per repeat: the spread between them is the cross-process noise of the figure
    slopes = {m: [(counts[m, long, r] - counts[m, short, r]) / (long - short) for r in repeats] for m in modes}
    per_step = {m: sum(v) / len(v) for m, v in slopes.items()}
    per_call = {m: sum(counts[m, short, r] for r in repeats) / args.repeats - short * per_step[m] for m in modes}
    rows = {
        m: dict(
            instructions_per_step=round(per_step[m]),
            added_per_step=round(per_step[m] - per_step["plain"]),
            added_share_of_plain_step=round(per_step[m] / per_step["plain"] - 1, 4),
            added_per_call=round(per_call[m] - per_call["plain"]),
            per_step_spread=round(max(slopes[m]) - min(slopes[m])),
            counts={str(n): [counts[m, n, r] for r in repeats] for n in (short, long)},
        )
        for m in modes
    }
    for m, row in rows.items():
        print(f"{m:12s} {row['instructions_per_step'] / 1e6:8.3f}M per step  added {row['added_per_step'] / 1e6:+7.3f}M"
              f" ({row['added_share_of_plain_step']:+.1%})  per call {row['added_per_call'] / 1e6:+8.2f}M"
              f"  spread {row['per_step_spread'] / 1e6:.3f}M")
    if args.json:
        record = dict(
            command=" ".join(["python", *sys.argv]), preset=args.preset, prompt=args.prompt, batch=args.batch,
            steps=[short, long], repeats=args.repeats, python=platform.python_version(), torch=torch.__version__,
            transformers=__import__("transformers").__version__, machine=platform.machine(), modes=rows,
        )
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
