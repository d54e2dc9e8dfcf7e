"""python -m benchmarks.eval.calibrated --model M --out DIR: `corevital calibrate` on the model's fit-half prompts.

The prompts are the evaluation's fit-half prompts without their labels (each distinct prompt
once), written as the model is asked in the evaluation: a base model without a chat template
gets its questions in "Q: ...\\nA:" form. The held-out half is then scored by transfer.py (c).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opentelemetry_instrumentation_corevital.cli import main as corevital

from .dataset import FIT, build_items
from .models import MODELS, load_model
from .transfer import PER_TEMPLATE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.calibrated", description=__doc__)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for prompts, profile and work files")
    parser.add_argument("--max-minutes", default="40")
    args = parser.parse_args(argv)
    _, tokenizer = load_model(args.model)
    folder = _model_folder(args.model)
    prompts = []
    for item in build_items(PER_TEMPLATE):
        if item.split != FIT:
            continue
        text = f"Q: {item.prompt}\nA:" if item.chat and not tokenizer.chat_template else item.prompt
        if text not in prompts:
            prompts.append(text)
    args.out.mkdir(parents=True, exist_ok=True)
    prompts_file = args.out / f"prompts-{args.model}.jsonl"
    prompts_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return corevital(["calibrate", "--model", folder, "--prompts", str(prompts_file),
                      "--out", str(args.out / f"calibrated-{args.model}.json"), "--name", f"calibrated-{args.model}",
                      "--device", "cpu", "--max-minutes", args.max_minutes])


def _model_folder(name: str) -> str:
    """The float32 copy benchmarks.eval.models keeps, as a folder `corevital calibrate --model` loads."""
    from opentelemetry_instrumentation_corevital.default_model import cache_dir

    pattern = "smollm2-*" if name == "smollm2" else "gemma3-270m-float32"
    found = sorted(p for p in cache_dir().glob(pattern) if (p / "config.json").is_file())
    if not found:
        raise SystemExit(f"no float32 copy of {name} under {cache_dir()}; run python -m benchmarks.eval --model {name}")
    return str(found[-1])


if __name__ == "__main__":
    raise SystemExit(main())
