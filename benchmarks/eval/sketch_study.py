"""python -m benchmarks.eval.sketch_study: a probe on a fixed-size sketch of a middle layer's hidden vector.

What capture does not record today, measured with a forward hook of this script's own: at every
forward pass, the middle decoder layer's newest hidden vector, projected to SKETCH_SIZE numbers by a
seeded Gaussian matrix. Per call: the sketch at the prompt's last position (step 0, before the
answer) and the mean over the answer's first 8 steps. The calibrate prompts are run greedily again,
batched as `corevital calibrate` batched them (so the texts are the ones its labels judged), the
320 held-out items as `--split heldout` generated them (same batches, same seeds). Fitting as in
probe_study (calibrate's prompts and labels only); scored on the held-out rows with text labels.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path

import numpy as np

from .generation import batches, generate_all, prompt_text
from .labels import failure
from .metrics import auroc, bootstrap, ece
from .models import MODELS, load_model
from .probe_study import FEATURES, calibrate_work, cross_validated, fitted, sigmoid
from .transfer import heldout_items

SKETCH_SIZE = 32
SKETCH_STEPS = 8
PENALTIES = (10.0, 100.0)
CALIBRATE_BATCH = 8  # corevital calibrate's default --batch-size
CALIBRATE_TOKENS = 48


class _Sketcher:
    """Forward hook on one decoder layer: the newest position's hidden vector, projected."""

    def __init__(self, layer, width: int):
        import torch

        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(width, SKETCH_SIZE, generator=generator) / SKETCH_SIZE ** 0.5
        self.steps: list[np.ndarray] = []
        self.handle = layer.register_forward_hook(self._record)

    def _record(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        self.steps.append((hidden[:, -1, :].float() @ self.projection).numpy())

    def take(self) -> np.ndarray:
        """[B, steps, SKETCH_SIZE] of the forward passes since the last take."""
        out, self.steps = np.stack(self.steps, axis=1), []
        return out


def _features(sketch: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(sketch at step 0, mean over the first valid answer steps), one row."""
    steps = np.flatnonzero(valid)[:SKETCH_STEPS]
    steps = steps[steps < sketch.shape[0]]
    return np.concatenate([sketch[0], sketch[steps].mean(axis=0) if steps.size else sketch[0]])


def _generate(model, tokenizer, sketcher, texts: list[str], kwargs: dict, add_special_tokens: bool):
    import torch

    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    with torch.no_grad():
        output = model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **kwargs)
    texts_out = [tokenizer.decode(row[inputs["input_ids"].shape[1]:], skip_special_tokens=True) for row in output]
    return sketcher.take(), texts_out


def collect(model_name: str, calibrate_dir: Path, heldout_cache: Path) -> dict:
    import torch

    from opentelemetry_instrumentation_corevital.analysis import calibration
    from opentelemetry_instrumentation_corevital.analysis.risk import risk_features
    from opentelemetry_instrumentation_corevital.profiles import load_profile_file

    model, tokenizer = load_model(model_name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    layers = model.model.layers
    sketcher = _Sketcher(layers[len(layers) // 2], model.config.hidden_size)
    profile = load_profile_file(calibrate_dir / f"calibrated-{model_name}.json")

    prompts, runs = calibrate_work(calibrate_dir, model_name)
    by_index = {run.prompt_index: run for run in runs}
    templated = bool(tokenizer.chat_template)
    fit_rows, same_text = [], 0
    for start in range(0, len(prompts), CALIBRATE_BATCH):
        indices = list(range(start, min(start + CALIBRATE_BATCH, len(prompts))))
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompts[i]}], tokenize=False,
                                               add_generation_prompt=True) if templated else prompts[i]
                 for i in indices]
        sketch, outs = _generate(model, tokenizer, sketcher, texts,
                                 {"max_new_tokens": CALIBRATE_TOKENS, "do_sample": False}, not templated)
        for row, i in enumerate(indices):
            run = by_index[i]
            same_text += outs[row] == run.greedy_text
            label = calibration.label_run(run, prompts[i])
            fit_rows.append((label.failure, [risk_features(run.summaries, 0, profile)[n] for n in FEATURES],
                             _features(sketch[row], run.summaries.valid[0])))

    items = heldout_items()
    generations = generate_all(items, heldout_cache / model_name, model_name=model_name, log=lambda _: None)
    eval_rows, same_eval = [], 0
    for k, batch in enumerate(batches(items, 16)):
        torch.manual_seed(k)  # as generate_all seeds each batch
        kwargs = {"max_new_tokens": batch[0].max_new_tokens, "do_sample": False, **batch[0].generate_kwargs}
        texts = [prompt_text(tokenizer, item) for item in batch]
        sketch, outs = _generate(model, tokenizer, sketcher, texts, kwargs, not templated)
        for row, item in enumerate(batch):
            generation = generations[item.id]
            same_eval += outs[row] == generation.text
            failed, reason = failure(item, generation.text)
            eval_rows.append({"failure": failed, "reason": reason, "category": item.category,
                              "risk": [risk_features(generation.summaries, 0, profile)[n] for n in FEATURES],
                              "sketch": _features(sketch[row], generation.summaries.valid[0])})
    sketcher.handle.remove()
    return {"fit": fit_rows, "eval": eval_rows, "fit_same_text": same_text / len(fit_rows),
            "eval_same_text": same_eval / len(eval_rows)}


def score(data: dict, part: str, penalty: float) -> dict:
    y = np.array([row[0] for row in data["fit"]], float)
    x_risk = np.array([row[1] for row in data["fit"]])
    pick = slice(0, SKETCH_SIZE) if part == "step0" else slice(SKETCH_SIZE, 2 * SKETCH_SIZE)
    x_sketch = np.array([row[2][pick] for row in data["fit"]])
    rows = data["eval"]
    labels = np.array([r["failure"] for r in rows], bool)
    loop = np.array([r["reason"] == "degenerate" for r in rows])
    qa = np.array([r["category"] in ("arithmetic", "fact") for r in rows]) & ~loop
    e_risk = np.array([r["risk"] for r in rows])
    e_sketch = np.array([r["sketch"][pick] for r in rows])
    risk_penalties = np.ones(len(FEATURES))
    both_penalties = np.r_[risk_penalties, np.full(SKETCH_SIZE, penalty)]
    w0, b0 = fitted(x_risk, y, risk_penalties)
    w1, b1 = fitted(np.hstack([x_risk, x_sketch]), y, both_penalties)
    before, after = sigmoid(e_risk @ w0 + b0), sigmoid(np.hstack([e_risk, e_sketch]) @ w1 + b1)
    return {
        "cross_validated": {"before": cross_validated(x_risk, y, risk_penalties),
                            "after": cross_validated(np.hstack([x_risk, x_sketch]), y, both_penalties)},
        "auroc": {"before": auroc(labels, before), "after": auroc(labels, after),
                  "difference": bootstrap(lambda t, a, b: auroc(t, b) - auroc(t, a), labels, before, after)},
        "auroc_wrong": {"before": auroc(labels[qa], before[qa]), "after": auroc(labels[qa], after[qa]),
                        "difference": bootstrap(lambda t, a, b: auroc(t, b) - auroc(t, a),
                                                labels[qa], before[qa], after[qa])},
        "ece": {"before": ece(labels, before), "after": ece(labels, after)},
        "critical_on_healthy": {"before": float(np.mean(before[~labels] >= 0.7)),
                                "after": float(np.mean(after[~labels] >= 0.7))},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval.sketch_study", description=__doc__)
    parser.add_argument("--calibrate", type=Path, required=True)
    parser.add_argument("--heldout-cache", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the collected sketches (resumable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "sketch_study.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for model_name in MODELS:
        path = args.work / f"{model_name}.pkl"
        if not path.is_file():
            data = collect(model_name, args.calibrate, args.heldout_cache)
            with open(path, "wb") as file:
                pickle.dump(data, file)
        with open(path, "rb") as file:
            data = pickle.load(file)
        results[model_name] = {"fit_same_text": data["fit_same_text"], "eval_same_text": data["eval_same_text"],
                               **{f"{part}_penalty_{penalty:g}": score(data, part, penalty)
                                  for part in ("step0", "answer") for penalty in PENALTIES}}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
