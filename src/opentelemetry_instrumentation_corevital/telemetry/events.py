"""Span-event builders (step, sequence, evaluation, intervention) and the step sampler.

Builders return `(name, attributes)` pairs holding OTel-valid values only: str, bool, int,
float and homogeneous lists of them. A non-finite number (a NaN logit statistic at a step
where the model produced NaN) is left out of the event rather than sent as NaN, which
JSON-based exporters cannot carry. No torch here; numpy values are converted.
"""

from __future__ import annotations

import heapq
import math
from typing import Iterable, Mapping, Sequence

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from . import attributes as attrs

Event = tuple[str, dict]


def event_parts(event) -> tuple[str, Mapping]:
    """(name, attributes) of an SDK span event or of an `Event` pair."""
    if isinstance(event, tuple):
        return event[0], event[1] or {}
    return event.name, event.attributes or {}


def finite_float(value) -> float | None:
    """`value` as a Python float, or None when it is missing or not finite."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def put_float(target: dict, key: str, value) -> None:
    """Set `target[key]` to a finite Python float; leave the key out otherwise."""
    number = finite_float(value)
    if number is not None:
        target[key] = number


# -- step sampling -----------------------------------------------------------------------


def _spread(items: Sequence[int], count: int) -> list[int]:
    """`count` items evenly spaced over `items`, both ends included."""
    size = len(items)
    if count <= 0 or size == 0:
        return []
    if count >= size:
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[round(j * (size - 1) / (count - 1))] for j in range(count)]


def sample_steps(steps: Sequence[int], flagged: Iterable[int], cap: int) -> list[int]:
    """Which of `steps` (sorted step indices) get a step event: at most `cap` of them.

    Always keeps the first and the last step and every flagged step, then fills the remaining
    room with steps at an even stride. The cap is never exceeded: when the flagged steps alone
    do not fit, the first and last steps are kept and the flagged ones are thinned at an even
    stride (the first flagged step, where trouble began, always stays); with `cap` 1 only the
    first step is kept. Without flagged steps the stride is regular; with them, the room left
    goes to the widest gaps between kept steps, halving one gap at a time.
    """
    steps = sorted({int(s) for s in steps})
    cap = max(int(cap), 0)
    if len(steps) <= cap:
        return steps
    if cap == 0:
        return []
    if cap == 1:
        return [steps[0]]
    ends = {steps[0], steps[-1]}
    present = set(steps)
    marked = sorted({int(s) for s in flagged} & (present - ends))
    room = cap - len(ends)
    if len(marked) >= room:
        return sorted(ends | set(_spread(marked, room)))
    if not marked:
        return _spread(steps, cap)  # a regular stride
    return _fill_largest_gaps(steps, ends | set(marked), cap)


def _fill_largest_gaps(steps: list[int], kept: set[int], cap: int) -> list[int]:
    """Add steps to `kept` until there are `cap`, each time halving the widest gap between kept steps."""
    position = {step: i for i, step in enumerate(steps)}
    chosen = sorted(position[s] for s in kept)
    gaps = [(-(b - a), a, b) for a, b in zip(chosen, chosen[1:]) if b - a > 1]
    heapq.heapify(gaps)
    picked = set(chosen)
    while len(picked) < cap and gaps:
        _, a, b = heapq.heappop(gaps)
        middle = (a + b) // 2
        picked.add(middle)
        for low, high in ((a, middle), (middle, b)):
            if high - low > 1:
                heapq.heappush(gaps, (-(high - low), low, high))
    return [steps[i] for i in sorted(picked)]


# -- builders ----------------------------------------------------------------------------


def step_event(
    *,
    step: int,
    sequence: int,
    token_id: int | None,
    entropy,
    surprisal,
    margin,
    topk_mass,
    flagged: bool,
    token_text: str | None = None,
) -> Event:
    values: dict = {
        attrs.STEP_INDEX: int(step),
        attrs.STEP_SEQUENCE: int(sequence),
        attrs.STEP_FLAGGED: bool(flagged),
    }
    if token_id is not None:  # only with content capture: an id decodes to the completion
        values[attrs.STEP_TOKEN_ID] = int(token_id)
    put_float(values, attrs.STEP_ENTROPY, entropy)
    put_float(values, attrs.STEP_SURPRISAL, surprisal)
    put_float(values, attrs.STEP_MARGIN, margin)
    put_float(values, attrs.STEP_TOPK_MASS, topk_mass)
    if token_text is not None:
        values[attrs.STEP_TOKEN_TEXT] = str(token_text)
    return attrs.STEP_EVENT, values


def evaluation_event(*, score, label: str, explanation: str) -> Event:
    values: dict = {
        gen_ai.GEN_AI_EVALUATION_NAME: attrs.EVALUATION_NAME,
        gen_ai.GEN_AI_EVALUATION_SCORE_LABEL: str(label),
    }
    put_float(values, gen_ai.GEN_AI_EVALUATION_SCORE_VALUE, score)
    if explanation:
        values[gen_ai.GEN_AI_EVALUATION_EXPLANATION] = str(explanation)
    return attrs.EVALUATION_EVENT, values


def sequence_event(
    *,
    index: int,
    risk_score,
    label: str,
    flags: Sequence[str],
    output_tokens: int | None,
    finish_reason: str | None,
) -> Event:
    values: dict = {
        attrs.SEQUENCE_INDEX: int(index),
        attrs.SEQUENCE_RISK_LABEL: str(label),
        attrs.SEQUENCE_FLAGS: [str(flag) for flag in flags],
    }
    put_float(values, attrs.SEQUENCE_RISK_SCORE, risk_score)
    if output_tokens is not None:
        values[attrs.SEQUENCE_OUTPUT_TOKENS] = int(output_tokens)
    if finish_reason is not None:
        values[attrs.SEQUENCE_FINISH_REASON] = str(finish_reason)
    return attrs.SEQUENCE_EVENT, values


def intervention_event(*, step: int, reason: str, sequence: int | None = None) -> Event:
    values: dict = {attrs.INTERVENTION_STEP: int(step), attrs.INTERVENTION_REASON: str(reason)}
    if sequence is not None:
        values[attrs.INTERVENTION_SEQUENCE] = int(sequence)
    return attrs.INTERVENTION_EVENT, values
