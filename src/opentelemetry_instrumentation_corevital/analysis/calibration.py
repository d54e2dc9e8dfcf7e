"""Label-free calibration: from a model's own generations to a profile fitted on that model.

No person labels anything. Each prompt is answered greedily and by a few seeded samples; the
greedy run counts as a failure when its text degenerates into a loop (text.degeneration) or,
for a question (a prompt ending in "?", before an "A:" answer cue), when most samples do not
repeat its answer (the model does not know it: answer-level uncertainty). Open-ended prompts
are never "unsure": their samples differ by nature, and that is not a failure. Risk weights are
a logistic regression of those labels on the greedy runs' risk features, Platt-recalibrated on
out-of-fold logits; the held-out check scores that procedure fitted without the held-out prompts,
and the profile gets it fitted on every prompt. Thresholds come from the model's own healthy runs. Pure numpy: the caller
generates, this module only fits and reports.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from ..profiles import RISK_FEATURE_NAMES, Profile
from ..summaries import RunSummaries
from .risk import risk_features
from .text import degeneration

L2_PENALTY = 1.0  # on standardised weights; keeps constant or separable features finite
RECALIBRATION_FOLDS = 5  # out-of-fold logits for the Platt step (prompts split by index)
AGREEMENT_WORDS = 12  # the answer's opening words are what samples must agree on
AGREEMENT_MIN_OVERLAP = 0.5  # a sample agrees when it shares half the content words of the shorter answer
DISAGREEMENT_LABEL = 0.5  # below this fraction of agreeing samples the greedy answer is "unsure"
# Words that carry no answer ("The answer is 8." agrees with "8").
_FILLER = frozenset(
    "a an the is are was were be of to in on at for and or it its this that these those as by with "
    "answer answers result so i we you he she they there here".split()
)
MIN_RUNS = 12  # fewer labelled runs than this cannot support a fit
ECE_BINS = 10
_WORDS = re.compile(r"[^\W_]+")

# Profile settings that change what a risk feature measures (risk.risk_features_of).
FEATURE_SETTINGS = (
    "high_entropy_bits", "low_entropy_bits", "low_entropy_min_run", "low_margin", "confident_probability",
    "answer_steps", "repetition_cosine", "repetition_relative_cosine", "repetition_min_steps",
    "repetition_max_period", "l2_explosion_multiplier", "collapse_persistence", "blame_collapse_excess_fraction",
    "early_warning_window",
)

# A fit can weigh the whole opening of the answer; the hand-set default reads only its first
# step (the one that compares across models), see docs/evaluation.md.
CALIBRATION_ANSWER_STEPS = 8

# A calibrated risk model weighs every feature (NaN/Inf is an override, never a feature) but the
# hidden-state spread: fitted on calibrate's few prompts, a hidden-state term learnt which *kind*
# of prompt fails (docs/evaluation.md, third round), so it stays the default's hand-set term.
HIDDEN_STATE_FEATURES = ("hidden_norm_spread", "hidden_norm_spread_call")
CALIBRATION_FEATURES = tuple(name for name in RISK_FEATURE_NAMES if name not in HIDDEN_STATE_FEATURES)


@dataclass(frozen=True)
class CalibrationRun:
    """One prompt's greedy run (its summaries, N = 1) and the texts of its samples."""

    prompt_index: int
    summaries: RunSummaries
    greedy_text: str
    sample_texts: tuple[str, ...]


@dataclass(frozen=True)
class RunLabel:
    failure: bool
    reason: str  # degenerate | disagreement | ok
    agreement: float


def is_question(prompt: str) -> bool:
    text = prompt.strip()
    if text.endswith("A:"):
        text = text[:-2].rstrip()
    return text.endswith("?")


def answer_words(text: str, prompt: str = "") -> set[str]:
    """Content words of the answer's first line (its opening words), minus the prompt's own words."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return set()
    asked = set(_WORDS.findall(prompt.lower()))
    return {w for w in _WORDS.findall(lines[0].lower())[:AGREEMENT_WORDS] if w not in _FILLER and w not in asked}


def agreement(greedy_text: str, sample_texts: tuple[str, ...], prompt: str = "") -> float:
    """Fraction of samples that share at least half the content words of the shorter answer."""
    if not sample_texts:
        return 1.0
    reference = answer_words(greedy_text, prompt)
    agreeing = 0
    for text in sample_texts:
        words = answer_words(text, prompt)
        shorter = min(len(reference), len(words))
        if shorter == 0:
            agreeing += reference == words
        elif len(reference & words) / shorter >= AGREEMENT_MIN_OVERLAP:
            agreeing += 1
    return agreeing / len(sample_texts)


def label_run(run: CalibrationRun, prompt: str) -> RunLabel:
    agreed = agreement(run.greedy_text, run.sample_texts, prompt)
    if degeneration(run.greedy_text).degenerate:
        return RunLabel(True, "degenerate", agreed)
    if is_question(prompt) and agreed < DISAGREEMENT_LABEL:
        return RunLabel(True, "disagreement", agreed)
    return RunLabel(False, "ok", agreed)


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty=L2_PENALTY, iterations: int = 100, offset=0.0):
    """L2-penalised logistic regression by Newton steps; returns (weights in raw units, bias).

    Features are standardised for the fit and the weights mapped back, so the profile applies
    them to risk_features() as they are. `penalty` is one L2 penalty or one per column; `offset`
    is a fixed term added to every row's logit (a part of the model that is not fitted).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((x.shape[0], 1)), (x - mean) / scale])
    theta = np.zeros(z.shape[1])
    ridge = np.empty(z.shape[1])
    ridge[0] = 1e-3  # barely: keeps the intercept finite when one class is missing
    ridge[1:] = penalty
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(z @ theta + offset, -60, 60)))
        gradient = z.T @ (p - y) + ridge * theta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = theta[1:] / scale
    return weights, float(theta[0] - weights @ mean)


def risk_model_of(x: np.ndarray, y: np.ndarray, features: tuple[str, ...]) -> dict:
    """The profile's `risk_model` entry fitted on feature rows `x` and 0/1 failure labels `y`."""
    weights, bias = fit_logistic(x, y)
    healthy = x[y == 0] if (y == 0).any() else x
    return {
        "features": list(features),
        "weights": [round(float(w), 6) for w in weights],
        "bias": round(bias, 6),
        "reference": [round(float(v), 6) for v in healthy.mean(axis=0)],
    }


def out_of_fold_logits(x: np.ndarray, y: np.ndarray, folds: int = RECALIBRATION_FOLDS) -> np.ndarray:
    """Each row's logit from a fit that did not see it (rows dealt to folds in turn)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    fold = np.arange(y.size) % folds
    logits = np.zeros(y.size)
    for k in range(folds):
        rest = fold != k
        if not (fold == k).any() or len(set(y[rest].tolist())) < 2:
            return np.full(y.size, np.nan)
        weights, bias = fit_logistic(x[rest], y[rest])
        logits[fold == k] = x[fold == k] @ weights + bias
    return logits


def recalibrated_risk_model(x: np.ndarray, y: np.ndarray, features: tuple[str, ...]) -> dict:
    """risk_model_of, then Platt-scaled: a one-feature logistic regression of the labels on the
    out-of-fold logits gives a slope a and an offset c, folded into the weights (w * a, b * a + c).
    A fit on a few dozen prompts is overconfident on prompts it has not seen; the slope measures
    by how much, on the model's own prompts, and shrinks the logits accordingly (never flips them)."""
    model = risk_model_of(x, y, features)
    logits = out_of_fold_logits(x, y)
    if not np.isfinite(logits).all():
        return model
    (slope,), offset = fit_logistic(logits[:, None], y, penalty=1e-3)
    if not slope > 0:  # no ranking left out of fold: keep the fit as it is rather than invert it
        return model
    model["weights"] = [round(float(w) * slope, 6) for w in model["weights"]]
    model["bias"] = round(model["bias"] * slope + offset, 6)
    return model


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random failure scores above a random success (ties count half)."""
    labels = np.asarray(labels, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(scores, float))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-width probability bins, weighted by bin size."""
    labels, probabilities = np.asarray(labels, float), np.asarray(probabilities, float)
    if labels.size == 0:
        return math.nan
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    total = sum(
        (which == b).sum() * abs(labels[which == b].mean() - probabilities[which == b].mean())
        for b in range(bins) if (which == b).any()
    )
    return float(total / labels.size)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def held_out(prompt_indices: np.ndarray, fraction: float) -> np.ndarray:
    """bool mask: every k-th prompt (k = round(1 / fraction)) is held out, deterministically."""
    every = max(2, int(round(1 / fraction)))
    return (np.asarray(prompt_indices) % every) == every - 1


def thresholds_of(runs: list[CalibrationRun], labels: list[RunLabel], profile: Profile) -> dict:
    """Thresholds from the model's own healthy greedy runs: a step is highly uncertain above
    the 99th percentile of their per-step entropy (in bits, so per vocabulary)."""
    entropies = [
        run.summaries.logit("entropy")[run.summaries.valid]
        for run, label in zip(runs, labels) if not label.failure
    ]
    values = np.concatenate(entropies) if entropies else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size < 20:
        return {}
    high = float(np.percentile(values, 99))
    high = min(max(high, profile.low_entropy_bits + 0.5), 32.0)
    return {"high_entropy_bits": round(high, 3)}


def calibrate(runs: list[CalibrationRun], prompts: list[str], base: Profile,
              held_out_fraction: float = 0.25) -> tuple[dict, dict]:
    """(profile keys to write, report): fit on the runs not held out, score the held-out ones.
    `prompts[run.prompt_index]` is each run's prompt.

    Raises ValueError when there are too few runs or only one kind of label to learn from.
    """
    if len(runs) < MIN_RUNS:
        raise ValueError(f"only {len(runs)} prompts were generated; calibration needs at least {MIN_RUNS}")
    labels = [label_run(run, prompts[run.prompt_index]) for run in runs]
    y = np.array([label.failure for label in labels], float)
    # Features are measured exactly as the written profile will measure them: under the
    # thresholds it sets, and with every setting that defines a feature pinned in the file
    # (a later change of the shipped default must not change what the weights apply to).
    thresholds = thresholds_of(runs, labels, base)
    measured = dataclasses.replace(base, **thresholds, answer_steps=CALIBRATION_ANSWER_STEPS)
    pinned = {key: getattr(measured, key) for key in FEATURE_SETTINGS}
    x = np.array([[risk_features(run.summaries, 0, measured)[name] for name in CALIBRATION_FEATURES] for run in runs])
    test = held_out(np.array([run.prompt_index for run in runs]), held_out_fraction)
    train = ~test
    if len(set(y[train].tolist())) < 2:
        kind = "failed" if y[train].all() else "looked healthy"
        raise ValueError(
            f"all {int(train.sum())} training prompts {kind}; add prompts of mixed difficulty "
            "(questions with short answers and open-ended tasks)"
        )
    # The check: the whole procedure (fit + recalibration) on the training prompts, scored on
    # the held-out ones. The profile then gets the same procedure on every prompt.
    model = recalibrated_risk_model(x[train], y[train], CALIBRATION_FEATURES)
    weights, bias = np.array(model["weights"]), model["bias"]
    scores = 1 / (1 + np.exp(-np.clip(x[test] @ weights + bias, -60, 60)))
    if len(set(y.tolist())) == 2:
        model = recalibrated_risk_model(x, y, CALIBRATION_FEATURES)
    keys = {"calibrated": True, "risk_model": model, **pinned}
    reasons = [label.reason for label in labels]
    report = {
        "prompts": len(runs),
        "held_out": int(test.sum()),
        "failures": int(y.sum()),
        "degenerate": reasons.count("degenerate"),
        "disagreement": reasons.count("disagreement"),
        "held_out_auroc": auroc(y[test].astype(bool), scores),
        "held_out_ece": ece(y[test], scores),
    }
    return keys, report
