"""The step-event sampler and the event builders (pure functions, no model)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from opentelemetry_instrumentation_corevital.telemetry import events


def test_everything_fits():
    assert events.sample_steps(range(5), [2], 5) == [0, 1, 2, 3, 4]
    assert events.sample_steps(range(5), [], 64) == [0, 1, 2, 3, 4]
    assert events.sample_steps([], [], 3) == []


def test_stride_keeps_first_last_and_flagged():
    chosen = events.sample_steps(range(20), [7, 13], 5)
    assert len(chosen) == 5
    assert {0, 7, 13, 19} <= set(chosen)


def test_stride_is_even_without_flags():
    chosen = events.sample_steps(range(100), [], 6)
    assert chosen[0] == 0 and chosen[-1] == 99 and len(chosen) == 6
    gaps = np.diff(chosen)
    assert gaps.max() - gaps.min() <= 2, chosen


def test_too_many_flagged_steps_never_exceed_the_cap():
    flagged = list(range(10, 20))
    chosen = events.sample_steps(range(20), flagged, 5)
    assert len(chosen) == 5
    assert chosen[0] == 0 and chosen[-1] == 19
    assert 10 in chosen  # where the trouble began
    assert set(chosen[1:-1]) <= set(flagged)


def test_cap_one_and_two():
    assert events.sample_steps(range(10), [5], 1) == [0]
    assert events.sample_steps(range(10), [5], 2) == [0, 9]


def test_flagged_steps_outside_the_candidates_are_ignored():
    chosen = events.sample_steps([0, 2, 4, 6, 8, 10], [3, 100], 4)
    assert set(chosen) <= {0, 2, 4, 6, 8, 10} and len(chosen) == 4


@pytest.mark.parametrize("seed", range(200))
def test_sampler_properties(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 300)
    steps = sorted(rng.sample(range(0, 2 * n + 1), n))
    flagged = [s for s in steps if rng.random() < rng.choice([0.0, 0.05, 0.5])]
    cap = rng.randint(1, 80)
    chosen = events.sample_steps(steps, flagged, cap)
    assert chosen == sorted(set(chosen))
    assert set(chosen) <= set(steps)
    assert len(chosen) == min(cap, len(steps))
    if steps and cap >= 2:
        assert steps[0] in chosen and steps[-1] in chosen
    if len(set(flagged) | {steps[0], steps[-1]} if steps else ()) <= cap:
        assert set(flagged) <= set(chosen)


def test_step_event_leaves_non_finite_numbers_out_and_converts_numpy():
    name, values = events.step_event(
        step=np.int64(3), sequence=0, token_id=np.int64(17), entropy=np.float32(1.5),
        surprisal=np.float32("nan"), margin=math.inf, topk_mass=np.float64(0.25), flagged=np.bool_(True),
    )
    assert name == attrs.STEP_EVENT
    assert values == {
        attrs.STEP_INDEX: 3, attrs.STEP_SEQUENCE: 0, attrs.STEP_TOKEN_ID: 17, attrs.STEP_FLAGGED: True,
        attrs.STEP_ENTROPY: 1.5, attrs.STEP_TOPK_MASS: 0.25,
    }
    assert all(type(v) in (int, float, bool) for v in values.values())


def test_evaluation_sequence_and_intervention_events():
    name, values = events.evaluation_event(score=np.float64(0.5), label="warning", explanation="Two sentences. Here.")
    assert name == "gen_ai.evaluation.result"
    assert values == {
        "gen_ai.evaluation.name": "corevital.risk", "gen_ai.evaluation.score.value": 0.5,
        "gen_ai.evaluation.score.label": "warning", "gen_ai.evaluation.explanation": "Two sentences. Here.",
    }
    name, values = events.sequence_event(
        index=1, risk_score=1.0, label="critical", flags=("nan_detected",), output_tokens=4, finish_reason="length"
    )
    assert name == "corevital.sequence"
    assert values[attrs.SEQUENCE_FLAGS] == ["nan_detected"] and values[attrs.SEQUENCE_OUTPUT_TOKENS] == 4
    name, values = events.intervention_event(step=5, reason="repetition_loop")
    assert name == "corevital.intervention"
    assert values == {attrs.INTERVENTION_STEP: 5, attrs.INTERVENTION_REASON: "repetition_loop"}
