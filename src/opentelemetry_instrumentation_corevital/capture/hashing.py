"""A rolling hash of token rows, identical in torch (device) and numpy (host).

Beam search reorders its rows every step. Hashing each row's token prefix lets the host
find, at the end, which row held each returned sequence at every step. Arithmetic is
int64 with wrap-around, which both libraries perform identically.
"""

from __future__ import annotations

import numpy as np
import torch

MULTIPLIER = 1_000_003


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def _powers(length: int) -> list[int]:
    return [_signed(pow(MULTIPLIER, length - 1 - j, 1 << 64)) for j in range(length)]


def fold_torch(ids: torch.Tensor) -> torch.Tensor:
    """[R, P] token ids -> [R] hash (Horner's rule, evaluated as one weighted sum)."""
    powers = torch.tensor(_powers(ids.shape[1]), dtype=torch.int64, device=ids.device)
    return (ids.long() * powers).sum(-1)


def extend_torch(hashes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return hashes * MULTIPLIER + tokens.long()


def prefix_hashes_numpy(sequences: np.ndarray, prompt_width: int, steps: int) -> np.ndarray:
    """[N, W] sequences -> [N, steps]: hash of each sequence's first prompt_width + t tokens."""
    with np.errstate(over="ignore"):
        powers = np.array(_powers(prompt_width), dtype=np.int64)
        current = (sequences[:, :prompt_width].astype(np.int64) * powers).sum(-1)
        out = np.empty((sequences.shape[0], steps), dtype=np.int64)
        for t in range(steps):
            out[:, t] = current
            if prompt_width + t < sequences.shape[1]:
                current = current * MULTIPLIER + sequences[:, prompt_width + t].astype(np.int64)
        return out


def parents_from_full_rows(
    previous: torch.Tensor, ids: torch.Tensor, prompt_width: int, step: int, beams: int
) -> torch.Tensor | None:
    """Beam parents when a model runs without a cache and each forward gets the full rows.

    previous: [R] hashes of every row's tokens before `step`; ids: [R, W] this step's inputs,
    rows grouped by input, `beams` rows each. Row r's parent is the earlier row of the same
    input whose hash equals ids[r] without its newest token (inputs may share a prefix, as
    every seq2seq decoder starts from the same token). Found on the device: no host sync.
    None when the inputs are not full rows.
    """
    if ids.shape[1] != prompt_width + step:
        return None
    prefixes = fold_torch(ids[:, :-1])
    group = torch.arange(ids.shape[0], device=ids.device) // max(1, beams)
    same = (prefixes[:, None] == previous[None, :]) & (group[:, None] == group[None, :])
    return same.int().argmax(dim=1)
