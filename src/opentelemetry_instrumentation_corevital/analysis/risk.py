"""Risk score: NaN/Inf is 1.0; otherwise a logistic model over named run features.

Failure modes pull entropy in opposite directions (wrong answers: high entropy and
surprisal; degenerate loops: abnormally low entropy plus repetition), so no single
monotone signal can rank both. Each mode gets its own features and the profile's logistic
weights combine them; calibration on labelled runs only replaces the numbers in the profile.
Invariant: a feature that could not be measured (NaN: hidden-state statistics under a
compiled forward, fewer steps than it needs) enters the model at its healthy reference, so
it moves neither the score nor the factors.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..health_vocabulary import RISK_CRITICAL, RISK_HEALTHY, RISK_WARNING
from ..profiles import Profile, load_profile
from ..summaries import RunSummaries
from .health import NAN_OR_INF, mid_layer_anomalies, nonfinite_steps
from .layers import unusual_collapse_layers
from .repetition import repetition_loop_of
from .sequence import (
    SequenceView, finite_max, finite_mean, fraction, per_count, run_lengths, sequence_view, trailing_window_means,
)

FACTOR_OF_FEATURE = {
    "entropy_mean": "high_entropy",
    "entropy_max": "high_entropy",
    "high_entropy_fraction": "high_entropy",
    "surprisal_mean": "high_surprisal",
    "low_margin_fraction": "low_margin",
    "low_entropy_run_fraction": "low_entropy_run",
    "repetition_loop": "repetition_loop",
    "repetition_fraction": "repetition_loop",
    "mid_layer_anomaly": "mid_layer_anomaly",
    "attention_collapse_fraction": "attention_collapse",
    "entropy_rise": "entropy_rising",
    "confidence_mean": "overconfident",
    "answer_uncertainty": "uncertain_answer",
    "chosen_probability_mean": "overconfident",
    "confident_run_fraction": "overconfident",
    "hidden_norm_spread": "unsteady_hidden_state",
    "hidden_norm_spread_call": "unsteady_hidden_state",
}

# A fitted weight may be negative: on SmolLM2, unusually *low* entropy and surprisal mark
# confident loops and confidently wrong answers. A feature below its healthy reference is then
# named for what it is; a feature moving against its factor's name never lists that factor.
FACTOR_BELOW_REFERENCE = {
    "entropy_mean": "low_entropy",
    "entropy_max": "low_entropy",
    "high_entropy_fraction": "low_entropy",
    "surprisal_mean": "low_surprisal",
    "confidence_mean": "low_confidence",
    "chosen_probability_mean": "low_confidence",
    "hidden_norm_spread": "steady_hidden_state",
    "hidden_norm_spread_call": "steady_hidden_state",
}

# Keeps garbage inputs (1e30 "entropies") from overflowing the logistic sum.
FEATURE_LIMIT = 1e6

# hidden_norm_spread reads the answer's first steps: how much the model's state moves while it
# starts answering (evaluated over 8 on two models, docs/evaluation.md).
NORM_SPREAD_STEPS = 8
# L2 norms are logged from here up, so an all-zero state gives a finite (huge) spread
NORM_FLOOR = 1e-12


def risk_features_of(view: SequenceView, profile: Profile) -> dict[str, float]:
    entropy = view.logit("entropy")
    margin = view.logit("margin")
    max_prob = view.logit("max_prob")
    steps = entropy.size
    repetition = repetition_loop_of(view, profile)
    high_entropy = entropy > profile.high_entropy_bits
    low_margin = margin < profile.low_margin
    low_entropy = entropy < profile.low_entropy_bits
    recent, earlier = trailing_window_means(entropy, profile.early_warning_window)
    rise = recent[-1] - earlier[-1] if steps else math.nan
    features = {
        NAN_OR_INF: float(nonfinite_steps(view).any()),
        "entropy_mean": finite_mean(entropy),
        "entropy_max": finite_max(entropy),
        "surprisal_mean": finite_mean(view.logit("surprisal")),
        "high_entropy_fraction": fraction(high_entropy),
        "low_margin_fraction": fraction(low_margin),
        "low_entropy_run_fraction": _long_run_fraction(low_entropy, profile.low_entropy_min_run),
        "repetition_loop": float(repetition is not None),
        "repetition_fraction": repetition.num_steps / steps if repetition else 0.0,
        "mid_layer_anomaly": float(mid_layer_anomalies(view, profile).any()),
        "attention_collapse_fraction": len(unusual_collapse_layers(view, profile)) / max(view.num_layers, 1),
        "entropy_rise": max(0.0, float(rise)) if math.isfinite(rise) else 0.0,
        # Probabilities, unlike bits, mean the same on a 49k and a 262k vocabulary.
        "confidence_mean": finite_mean(max_prob),
        "answer_uncertainty": 1.0 - finite_mean(max_prob[: profile.answer_steps], default=1.0),
        "chosen_probability_mean": finite_mean(np.exp2(-np.maximum(view.logit("surprisal"), 0.0))),
        "confident_run_fraction": _long_run_fraction(max_prob > profile.confident_probability,
                                                     profile.low_entropy_min_run),
        "hidden_norm_spread": hidden_norm_spread(view),
        "hidden_norm_spread_call": hidden_norm_spread_call(view),
    }
    return {name: float(np.clip(value, -FEATURE_LIMIT, FEATURE_LIMIT)) for name, value in features.items()}


def middle_layer(num_layers: int) -> int:
    """The middle decoder layer (the lower of the two middle ones for an even count)."""
    return (num_layers - 1) // 2


def log_norm_spread(l2_norms: np.ndarray) -> float:
    """Standard deviation of log max(L2, NORM_FLOOR) over the finite norms; NaN with fewer than 2."""
    finite = l2_norms[np.isfinite(l2_norms)]
    if finite.size < 2:
        return math.nan
    return float(np.log(np.maximum(finite, NORM_FLOOR)).std())


def hidden_norm_spread(view: SequenceView) -> float:
    """log_norm_spread of the middle layer's newest hidden state over the first NORM_SPREAD_STEPS
    valid steps (step 0, the prompt's last position, included). Scale-free: a log, no threshold.
    NaN where no hidden statistics were captured (no layers, a compiled forward's NaN rows)."""
    if view.num_layers == 0:
        return math.nan
    steps = view.valid_steps[:NORM_SPREAD_STEPS]
    return log_norm_spread(view.hidden_stat("l2_norm")[steps, middle_layer(view.num_layers)])


def shifted_log_norm_sums(l2_norms: np.ndarray) -> tuple[float, float, float, int]:
    """(shift, sum, sum of squares, count) of d = log max(L2, NORM_FLOOR) - shift over the finite
    norms in order, shift being the first finite one's log (it keeps the squares small). Summed one
    value after another (np.cumsum's order), so the live listener's running sums give the same floats."""
    finite = l2_norms[np.isfinite(l2_norms)]
    if finite.size == 0:
        return math.nan, 0.0, 0.0, 0
    logs = np.log(np.maximum(finite.astype(np.float64), NORM_FLOOR))
    deviations = logs - logs[0]
    total, squares = np.cumsum(deviations)[-1], np.cumsum(deviations * deviations)[-1]
    return float(logs[0]), float(total), float(squares), int(finite.size)


def spread_of_sums(total, squares, count):
    """Standard deviation from shifted_log_norm_sums' sums; NaN with fewer than 2 values. Takes
    arrays of sums too (the live listener's, one per sequence) and returns one spread each."""
    counts = np.asarray(count)
    usable = np.where(counts >= 2, counts, 0)  # a count of 0 gives NaN
    mean = per_count(np.asarray(total, np.float64), usable)
    spread = np.sqrt(np.maximum(per_count(np.asarray(squares, np.float64), usable) - mean * mean, 0.0))
    return float(spread) if spread.ndim == 0 else spread


def hidden_norm_spread_call(view: SequenceView) -> float:
    """hidden_norm_spread's statistic over every valid step so far (the whole call at its end): how
    much the middle layer's state moves over the call, not only while the answer starts. Like the
    means and fractions, a statistic of the steps so far, so on a prefix it is the same formula.
    NaN where no hidden statistics were captured or fewer than two steps exist."""
    if view.num_layers == 0:
        return math.nan
    norms = view.hidden_stat("l2_norm")[view.valid_steps, middle_layer(view.num_layers)]
    _, total, squares, count = shifted_log_norm_sums(norms)
    return spread_of_sums(total, squares, count)


def risk_features(summaries: RunSummaries, i: int, profile: Profile | None = None) -> dict[str, float]:
    """Named features of sequence i: `nan_or_inf` plus every name in RISK_FEATURE_NAMES."""
    profile = profile or load_profile(summaries.model_type)
    return risk_features_of(sequence_view(summaries, i), profile)


def _model_input(value: float, reference: float) -> float:
    """What the risk model reads for a feature: its reference where it was not measured (NaN, or
    None as a report read back writes it), else the value within +-FEATURE_LIMIT."""
    return reference if _not_measured(value) else min(max(value, -FEATURE_LIMIT), FEATURE_LIMIT)


def _not_measured(value: float | None) -> bool:
    return value is None or math.isnan(value)


def risk_logit(features: Mapping[str, float], profile: Profile) -> float:
    model = profile.risk_model
    return model.bias + sum(
        w * _model_input(features[name], reference)
        for name, w, reference in zip(model.features, model.weights, model.reference)
    )


def risk_score(features: Mapping[str, float], profile: Profile) -> float:
    if features.get(NAN_OR_INF):
        return 1.0
    z = min(max(risk_logit(features, profile), -60.0), 60.0)
    return 1.0 / (1.0 + math.exp(-z))


def risk_factors(features: Mapping[str, float], profile: Profile) -> list[str]:
    """Factors whose features raised the logit by at least `risk_factor_min_logit` above a
    healthy reference run, largest first; `nan_or_inf` always leads when present.

    A feature above its reference counts toward its factor (`FACTOR_OF_FEATURE`), one below it
    toward `FACTOR_BELOW_REFERENCE` (or nothing), so a name always says which way the run moved."""
    model = profile.risk_model
    pushes: dict[str, float] = {}
    for name, weight, reference in zip(model.features, model.weights, model.reference):
        if _not_measured(features[name]):  # it explains nothing
            continue
        delta = _model_input(features[name], reference) - reference
        factor = FACTOR_OF_FEATURE[name] if delta >= 0 else FACTOR_BELOW_REFERENCE.get(name)
        if factor is not None:
            pushes[factor] = pushes.get(factor, 0.0) + weight * delta
    ranked = sorted(
        (factor for factor, push in pushes.items() if push >= profile.risk_factor_min_logit),
        key=lambda factor: -pushes[factor],
    )
    return [NAN_OR_INF, *ranked] if features.get(NAN_OR_INF) else ranked


def risk_label(score: float, profile: Profile) -> str:
    if score >= profile.risk_threshold_critical:
        return RISK_CRITICAL
    if score >= profile.risk_threshold_warning:
        return RISK_WARNING
    return RISK_HEALTHY


def _long_run_fraction(mask: np.ndarray, min_run: int) -> float:
    """Fraction of positions inside runs of True at least `min_run` long."""
    if mask.size == 0:
        return 0.0
    lengths = run_lengths(mask)
    run_ends = mask & ~np.append(mask[1:], False)
    return float(lengths[run_ends & (lengths >= min_run)].sum() / mask.size)
