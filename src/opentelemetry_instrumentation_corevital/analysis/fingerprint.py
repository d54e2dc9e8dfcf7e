"""Run fingerprint (a fixed-length behaviour vector for clustering runs) and prompt hash."""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np

from ..profiles import Profile
from ..summaries import RunSummaries
from .repetition import repetition_loop_of
from .risk import risk_features_of
from .sequence import SequenceView, finite_max, finite_mean, sequence_view

# Entry k of every fingerprint is the quantity named FINGERPRINT_LAYOUT[k]. Append only: a
# stored fingerprint must keep its meaning when new entries are added.
FINGERPRINT_LAYOUT = (
    "valid_steps_log2",  # log2(1 + valid steps)
    "entropy_mean",  # bits, raw logits
    "entropy_std",
    "entropy_max",
    "surprisal_mean",  # bits
    "surprisal_max",
    "margin_mean",  # top-1 minus top-2 probability
    "topk_mass_mean",
    "max_prob_mean",
    "high_entropy_fraction",
    "low_margin_fraction",
    "low_entropy_run_fraction",
    "repetition_fraction",
    "repetition_period",  # 0 without a loop
    "hidden_l2_log2_growth",  # mean over steps of log2(L2 last layer / L2 first layer)
    "attention_entropy_mean",  # bits, mean over heads, layers and observed steps
    "collapsed_cell_fraction",  # (step, layer) cells with at least one collapsed head
    "focused_cell_fraction",  # (step, layer) cells with at least one focused head
    "nan_or_inf",
    "mid_layer_anomaly",
    "attention_collapse_fraction",
    "repetition_loop",
    "entropy_rise",
    "risk_score",
    "failure_risk",
)

_LIMIT = 1e6  # keeps every entry finite and JSON-safe


def fingerprint_of(
    view: SequenceView, profile: Profile, features: Mapping[str, float], risk_score: float, failure_risk: float
) -> list[float]:
    entropy = view.logit("entropy")
    surprisal = view.logit("surprisal")
    repetition = repetition_loop_of(view, profile)
    values = {
        **features,
        "valid_steps_log2": float(np.log2(1 + entropy.size)),
        "entropy_std": float(np.std(entropy[np.isfinite(entropy)])) if np.isfinite(entropy).any() else 0.0,
        "surprisal_max": finite_max(surprisal),
        "margin_mean": finite_mean(view.logit("margin")),
        "topk_mass_mean": finite_mean(view.logit("topk_mass")),
        "max_prob_mean": finite_mean(view.logit("max_prob")),
        "repetition_period": float(repetition.period) if repetition else 0.0,
        "hidden_l2_log2_growth": _l2_log2_growth(view),
        **_attention_stats(view),
        "risk_score": risk_score,
        "failure_risk": failure_risk,
    }
    vector = np.array([values[name] for name in FINGERPRINT_LAYOUT], dtype=np.float64)
    return np.clip(np.nan_to_num(vector, nan=0.0, posinf=_LIMIT, neginf=-_LIMIT), -_LIMIT, _LIMIT).tolist()


def fingerprint(
    summaries: RunSummaries, i: int, profile: Profile, *, risk_score: float, failure_risk: float
) -> list[float]:
    view = sequence_view(summaries, i)
    return fingerprint_of(view, profile, risk_features_of(view, profile), risk_score, failure_risk)


def prompt_hash(prompt: str | Sequence[int], model_id: str) -> str:
    """sha256 hex of model id + prompt. Text is whitespace-normalised (runs of whitespace become
    one space, ends stripped; case kept, it matters to the model); token ids are joined with
    commas. The kind is hashed too, so text "1,2" and ids [1, 2] never collide."""
    if isinstance(prompt, str):
        kind, normalised = "text", " ".join(prompt.split())
    else:
        kind, normalised = "ids", ",".join(str(int(token)) for token in prompt)
    return hashlib.sha256(f"{model_id}\n{kind}\n{normalised}".encode("utf-8")).hexdigest()


def _l2_log2_growth(view: SequenceView) -> float:
    l2 = view.hidden_stat("l2_norm")[view.valid]
    if l2.shape[0] == 0 or l2.shape[1] == 0:
        return 0.0
    first, last = l2[:, 0], l2[:, -1]
    usable = np.isfinite(first) & np.isfinite(last) & (first > 0) & (last > 0)
    return float(np.log2(last[usable] / first[usable]).mean()) if usable.any() else 0.0


def _attention_stats(view: SequenceView) -> dict[str, float]:
    entropy = view.attention_stat("entropy_mean")
    if entropy is None:
        return {"attention_entropy_mean": 0.0, "collapsed_cell_fraction": 0.0, "focused_cell_fraction": 0.0}
    valid = view.valid
    observed = np.isfinite(entropy[valid])
    collapsed = view.attention_stat("collapsed_heads")[valid] > 0
    focused = view.attention_stat("focused_heads")[valid] > 0
    cells = max(int(observed.sum()), 1)
    return {
        "attention_entropy_mean": finite_mean(entropy[valid]),
        "collapsed_cell_fraction": float((collapsed & observed).sum() / cells),
        "focused_cell_fraction": float((focused & observed).sum() / cells),
    }

