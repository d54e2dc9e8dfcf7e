"""Wall time of `corevital --help` and `corevital runs list`, against importing the OTel SDK.

    python benchmarks/cli_startup.py --pairs 15
    python benchmarks/cli_startup.py --pairs 15 --src /path/to/another/checkout/src   # compare a version

Each pair times, in a fresh process each and in alternating order, the reference
`python -c "import opentelemetry.sdk.trace"` and one CLI command; the figure is the median
of the per-pair ratios (pairs share the machine's momentary load). The CLI runs as the
installed console script does (`from ...cli import main; main()`), with PYTHONPATH set to
the sources under test; `runs list` reads an empty run store made for the purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
REFERENCE = [sys.executable, "-c", "import opentelemetry.sdk.trace"]
CONSOLE_SCRIPT = [sys.executable, "-c", "import sys; from opentelemetry_instrumentation_corevital.cli import main; sys.exit(main())"]


def wall_time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def empty_store(folder: Path, env: dict[str, str]) -> Path:
    path = folder / "runs.db"
    create = "import sys; from opentelemetry_instrumentation_corevital.store.schema import connect; connect(sys.argv[1]).close()"
    subprocess.run([sys.executable, "-c", create, str(path)], env=env, check=True)
    return path


def measure(commands: dict[str, list[str]], env: dict[str, str], pairs: int) -> dict[str, dict[str, float]]:
    for command in [REFERENCE, *commands.values()]:  # warm the file cache; not counted
        wall_time(command, env)
    results = {}
    for name, command in commands.items():
        reference_s, command_s = [], []
        for pair in range(pairs):
            order = [(REFERENCE, reference_s), (command, command_s)]
            for argv, times in order if pair % 2 == 0 else reversed(order):
                times.append(wall_time(argv, env))
        ratios = [c / r for c, r in zip(command_s, reference_s)]
        results[name] = {
            "median_ratio": statistics.median(ratios),
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "median_s": statistics.median(command_s),
            "reference_median_s": statistics.median(reference_s),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--src", type=Path, default=REPO_SRC, help="the sources to time (default: this checkout's src)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="corevital-startup-") as folder:
        store = empty_store(Path(folder), env)
        commands = {
            "corevital --help": [*CONSOLE_SCRIPT, "--help"],
            "corevital runs list": [*CONSOLE_SCRIPT, "runs", "list", "--db", str(store)],
        }
        results = measure(commands, env, args.pairs)
    print(json.dumps({
        "src": str(args.src), "pairs": args.pairs, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_average": os.getloadavg(), "results": results,
    }, indent=2))
    for name, result in results.items():
        print(f"{name}: median {result['median_s'] * 1000:.0f} ms, "
              f"{result['median_ratio']:.2f}x the SDK import ({result['reference_median_s'] * 1000:.0f} ms), "
              f"pairs {result['min_ratio']:.2f}x-{result['max_ratio']:.2f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
