"""Shared by the torch.compile tests (and the several-devices test): what a logit-only capture
says, and Dynamo's compile count."""

from __future__ import annotations

from torch._dynamo.utils import counters

# how the span's corevital.capture.unavailable_reason ends when no probe goes into the forward
# (a compiled forward, a model on several devices)
LOGITS_ONLY = "hidden-state, attention and repetition signals are not captured"


def compilations() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    return counters["stats"]["unique_graphs"]
