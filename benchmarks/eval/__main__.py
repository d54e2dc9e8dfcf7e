"""python -m benchmarks.eval [--smoke] [--device cuda] [--out DIR]: generate, label, fit, report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from .models import MODELS

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent.parent / "docs" / "evaluation.md"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="one item of a few templates, 12 new tokens: checks the pipeline, not the numbers")
    parser.add_argument("--model", choices=MODELS, default="smollm2", help="which real model (default: %(default)s)")
    parser.add_argument("--per-template", type=int, default=None, help="keep the first n items of each template")
    parser.add_argument("--split", choices=("fit", "heldout"), default=None,
                        help="keep only the items of one half (e.g. a larger held-out set for transfer.py)")
    parser.add_argument("--generate-only", action="store_true", help="generate and cache the summaries, then stop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    parser.add_argument("--cache", type=Path, default=None, help="summaries cache (default OUT/MODEL/cache)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--write-profile", action="store_true",
                        help="write the fitted risk_model into the shipped profile (no shipped profile is fitted "
                             "today: fitting is `corevital calibrate`'s job on the user's model)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()

    import torch

    from opentelemetry_instrumentation_corevital.analysis.calibration import CALIBRATION_FEATURES
    from opentelemetry_instrumentation_corevital.profiles import load_profile

    from .dataset import build_items, smoke_items
    from .fit import risk_model_of
    from .generation import generate_all
    from .report import evaluate, write
    from .signals import rows_of, rescore

    if args.threads:
        torch.set_num_threads(args.threads)
    items = smoke_items() if args.smoke else build_items(args.per_template)
    if args.split:
        items = [item for item in items if item.split == args.split]
    cache = args.cache or args.out / args.model / "cache"
    generations = generate_all(items, cache, model_name=args.model, device=args.device, batch_size=args.batch_size,
                               log=lambda message: print(message, flush=True))
    generated = time.perf_counter()
    if args.generate_only:
        return {"generations": generations}

    model_type = next(iter(generations.values())).summaries.model_type
    shipped = load_profile(model_type)
    rows = rows_of(items, generations, shipped)
    for row in rows:
        row["risk_score_before"] = row["risk_score"]
    # fitted on the features `corevital calibrate` fits (the hidden-state spread stays hand-set)
    risk_model = risk_model_of([r for r in rows if r["split"] == "fit"], CALIBRATION_FEATURES)
    rescore(rows, items, generations, load_profile(model_type, {"risk_model": risk_model}))
    results = evaluate(rows, resamples=args.bootstrap)
    results["risk_model"] = risk_model
    if args.write_profile:
        _write_profile(shipped.name, risk_model)
    meta = _meta(args, argv, items, started, generated, shipped.name)
    table = write(args.out, rows, results, meta)
    if not args.smoke and DOCS.is_file():
        _update_docs(table, meta)
    print(table)
    print(f"total {meta['runtime_seconds']:.0f} s (generation {meta['generation_seconds']:.0f} s)")
    return {"rows": rows, "results": results, "meta": meta}


def _write_profile(name: str, risk_model: dict) -> None:
    from opentelemetry_instrumentation_corevital import profiles

    path = Path(profiles.__file__).parent / f"{name}.json"
    data = json.loads(path.read_text())
    data["risk_model"] = risk_model
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"fitted risk_model written to {path}")


def _meta(args, argv, items, started, generated, profile_name) -> dict:
    import numpy
    import torch
    import transformers

    from opentelemetry_instrumentation_corevital.version import __version__

    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name()})"
    return {
        "command": "python -m benchmarks.eval " + " ".join(sys.argv[1:] if argv is None else argv),
        "generations": len(items),
        "profile": profile_name,
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "bootstrap_resamples": args.bootstrap,
        "runtime_seconds": time.perf_counter() - started,
        "generation_seconds": generated - started,
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__,
            "opentelemetry-instrumentation-corevital": __version__,
        },
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _update_docs(table: str, meta: dict) -> None:
    text = DOCS.read_text()
    if RESULTS_START not in text or RESULTS_END not in text:
        return
    run = (f"Run: `{meta['command']}`, {meta['generations']} generations on {meta['device']} "
           f"({meta['cpu_count']} CPUs, {meta['torch_threads']} torch threads, batch {meta['batch_size']}), "
           f"{meta['runtime_seconds'] / 60:.1f} min in all, finished {meta['finished']}; "
           + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    body = f"{RESULTS_START}\n{run}\n\n{table}{RESULTS_END}"
    DOCS.write_text(re.sub(re.escape(RESULTS_START) + ".*?" + re.escape(RESULTS_END), lambda _: body, text,
                           flags=re.S))


if __name__ == "__main__":
    main()
