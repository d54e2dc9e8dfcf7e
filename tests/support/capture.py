"""Run generate under a bare capture session (no OTel) and hand back the summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
from opentelemetry_instrumentation_corevital.capture.standalone import eos_token_ids_of


def capture(model, inputs, pending_bytes=None, **generate_kwargs):
    """Returns (generate output, RunSummaries, session); `pending_bytes` as in CaptureOptions."""
    eos = generate_kwargs.get("eos_token_id")
    eos = {eos} if eos is not None else eos_token_ids_of(model)
    options = CaptureOptions(
        max_steps=generate_kwargs.get("max_new_tokens", 20),
        num_beams=generate_kwargs.get("num_beams", 1),
        eos_token_ids=tuple(sorted(eos)),
        pending_bytes=pending_bytes,
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


def assert_summaries_follow_beams(summaries, reference, entropy_abs: float, surprisal_abs: float = 1e-3) -> None:
    """Each returned sequence's step values are those of the logits of the beam it came from at
    that step (`reference`: the same generate with output_logits and return_dict_in_generate)."""
    sequences = reference.sequences
    width = sequences.shape[1] - len(reference.logits)
    for n in range(sequences.shape[0]):
        for step, logits in enumerate(reference.logits):
            beam = int(reference.beam_indices[n, step])
            if beam < 0:
                continue
            raw = logits[beam : beam + 1]
            token = sequences[n : n + 1, width + step]
            assert summaries.logit("entropy")[n, step] == pytest.approx(entropy_bits(raw)[0], abs=entropy_abs)
            assert summaries.logit("surprisal")[n, step] == pytest.approx(surprisal_bits(raw, token)[0], abs=surprisal_abs)


def entropy_bits(logits: torch.Tensor) -> np.ndarray:
    log_probs = torch.log_softmax(logits.double(), -1)
    return (-(log_probs.exp() * log_probs).sum(-1) / math.log(2)).numpy()


def surprisal_bits(logits: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
    log_probs = torch.log_softmax(logits.double(), -1)
    return (-log_probs.gather(1, tokens[:, None]).squeeze(1) / math.log(2)).numpy()
