"""The full recompute the live health used to run at every step, kept as the reference that
analysis/running.py must equal: the analysis functions over a sequence's steps so far."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from opentelemetry_instrumentation_corevital.analysis.early_warning import early_warning_of
from opentelemetry_instrumentation_corevital.analysis.health import nonfinite_steps
from opentelemetry_instrumentation_corevital.analysis.risk import risk_features_of, risk_score
from opentelemetry_instrumentation_corevital.analysis.running import StepRows
from opentelemetry_instrumentation_corevital.analysis.sequence import sequence_view
from opentelemetry_instrumentation_corevital.capture.stats import chosen_surprisal_bits
from opentelemetry_instrumentation_corevital.profiles import RISK_FEATURE_NAMES, Profile, load_profile
from opentelemetry_instrumentation_corevital.summaries import ATTENTION_STATS, LOGIT_STATS, RunSummaries

# Means of finite values are summed in step order live and pairwise by numpy.
MEAN_FEATURES = ("entropy_mean", "surprisal_mean", "confidence_mean", "answer_uncertainty", "chosen_probability_mean")
COLLAPSED = ATTENTION_STATS.index("collapsed_heads")


@dataclass(frozen=True)
class Expected:
    features: dict[str, float]
    risk: float
    signals: tuple[str, ...]
    repetition_loop: bool
    nonfinite: bool


def expected_at(summaries: RunSummaries, sequence: int, step: int, profile: Profile) -> Expected:
    view = sequence_view(summaries, sequence, step)
    features = risk_features_of(view, profile)
    return Expected(
        features=features,
        risk=risk_score(features, profile),
        signals=early_warning_of(view, profile, live=True).signals,
        repetition_loop=features["repetition_loop"] > 0,
        nonfinite=bool(nonfinite_steps(view)[step]),
    )


def step_rows(summaries: RunSummaries, step: int) -> StepRows:
    def at(array):
        return None if array is None else array[:, step]

    return StepRows(
        token_ids=summaries.token_ids[:, step],
        valid=summaries.valid[:, step],
        logits=summaries.logits[:, step],
        hidden=summaries.hidden[:, step],
        collapsed_heads=None if summaries.attention is None else summaries.attention[:, step, :, COLLAPSED],
        repetition_cosine=at(summaries.repetition_cosine),
    )


def assert_features_equal(live: dict[str, float], expected: dict[str, float], where: str) -> None:
    assert live.keys() == expected.keys(), where
    for name, value in expected.items():
        if name in MEAN_FEATURES:
            assert np.isclose(live[name], value, rtol=1e-12, atol=1e-12), f"{where}: {name} {live[name]!r} != {value!r}"
        elif np.isnan(value):  # not measured (yet)
            assert np.isnan(live[name]), f"{where}: {name} {live[name]!r} != {value!r}"
        else:
            assert live[name] == value, f"{where}: {name} {live[name]!r} != {value!r}"


# A calibrated-style profile whose risk model weighs every feature, so each one moves the score.
EVERY_FEATURE = {
    "calibrated": True,
    "risk_model": {
        "features": list(RISK_FEATURE_NAMES),
        "weights": [0.7, 0.1, 0.2, 1.1, 0.9, 2.0, 3.0, 2.5, 1.5, 1.2, 0.8, -1.3, 2.2, -0.9, 1.7, -6.0, -4.0],
        "bias": -3.0,
        "reference": [0.0] * len(RISK_FEATURE_NAMES),
    },
}


def every_feature_profile(**overrides) -> Profile:
    return load_profile("default", {**EVERY_FEATURE, **overrides})


def full_recompute(session, input_ids: torch.Tensor, eos_token_ids: set[int]) -> RunSummaries:
    """What the live health computed before it was incremental: every step so far, resolved as
    at the end of the call, with the newest token's surprisal taken from this step's log-probs."""
    step = session.step
    host = session.buffers.to_host(step + 1, input_ids)
    summaries = session.resolve(host, input_ids.detach().cpu().numpy(), eos_token_ids)
    newest = chosen_surprisal_bits(session.buffers.log_probs, input_ids[:, -1]).float().cpu().numpy()
    summaries.logits[:, step, LOGIT_STATS.index("surprisal")] = newest
    return summaries
