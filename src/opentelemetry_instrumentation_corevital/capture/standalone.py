"""Capture one generate call without the instrumentor: what the evaluation harness and
`corevital calibrate` record their runs with.

Invariant: the capture options are built as the instrumentor's handler builds them for the same
call (step budget, the model's EOS ids, batch size, the profile's capture thresholds), and no
probe or patch is left on the model when `generate_captured` returns or raises.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..profiles import Profile
from ..profiles.resolver import capture_thresholds
from ..summaries import RunSummaries
from .session import CaptureOptions, CaptureSession


class CapturedGenerate(NamedTuple):
    """generate's sequences and their summaries; `summaries` is None when capture failed, and
    `fault` then says where."""

    sequences: torch.Tensor
    summaries: RunSummaries | None
    fault: str | None


def eos_token_ids_of(model) -> set[int]:
    """The end-of-sequence ids generate stops on by default (generation_config may hold one or a list)."""
    eos = model.generation_config.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos or ())


def generate_captured(
    model, inputs: dict, generate_kwargs: dict, profile: Profile, *, max_steps: int, attention_stride: int
) -> CapturedGenerate:
    """`model.generate(**inputs, **generate_kwargs)` under no_grad, captured for `max_steps` steps."""
    eos_ids = eos_token_ids_of(model)
    options = CaptureOptions(
        attention_stride=attention_stride,
        max_steps=max_steps,
        eos_token_ids=tuple(sorted(eos_ids)),
        input_batch=int(inputs["input_ids"].shape[0]),
        **capture_thresholds(profile),
    )
    session = CaptureSession(model, options)
    with session.attached(), session.active(), torch.no_grad():
        sequences = model.generate(**inputs, **generate_kwargs)
    summaries = session.finish(sequences, eos_ids)
    return CapturedGenerate(sequences, summaries, None if summaries is not None else str(session.fault))
