"""Run generate under a bare capture session (no OTel) and hand back the summaries."""

from __future__ import annotations

import math

import numpy as np
import torch

from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
from opentelemetry_instrumentation_corevital.capture.standalone import eos_token_ids_of


def capture(model, inputs, **generate_kwargs):
    """Returns (generate output, RunSummaries, session)."""
    eos = generate_kwargs.get("eos_token_id")
    eos = {eos} if eos is not None else eos_token_ids_of(model)
    options = CaptureOptions(
        max_steps=generate_kwargs.get("max_new_tokens", 20),
        num_beams=generate_kwargs.get("num_beams", 1),
        eos_token_ids=tuple(sorted(eos)),
    )
    session = CaptureSession(model, options)
    try:
        session.attach()
        with session.active():
            output = model.generate(inputs, **generate_kwargs)
    finally:
        session.detach()
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    summaries = session.finish(sequences, eos)
    return output, summaries, session


def entropy_bits(logits: torch.Tensor) -> np.ndarray:
    log_probs = torch.log_softmax(logits.double(), -1)
    return (-(log_probs.exp() * log_probs).sum(-1) / math.log(2)).numpy()


def surprisal_bits(logits: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
    log_probs = torch.log_softmax(logits.double(), -1)
    return (-log_probs.gather(1, tokens[:, None]).squeeze(1) / math.log(2)).numpy()
