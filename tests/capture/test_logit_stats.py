"""The fused logit statistics equal the definitions computed one by one in float64."""

from __future__ import annotations

import math

import pytest
import torch

from opentelemetry_instrumentation_corevital.capture import stats


def _reference(logits: torch.Tensor) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.double(), -1)
    probs = log_probs.exp()
    top = probs.sort(-1, descending=True).values[:, : stats.TOP_K_MASS]
    entropy = torch.special.entr(probs).sum(-1) / math.log(2)
    return torch.stack(
        (entropy, top[:, 0] - top[:, 1], top.sum(-1), top[:, 0],
         logits.isnan().sum(-1).double(), logits.isinf().sum(-1).double()),
        dim=-1,
    )


@pytest.mark.parametrize("vocab", [1000, 1024, 5003])
@pytest.mark.parametrize("k", [1, 10])
def test_chunked_top_values_equal_topk(vocab, k):
    values = torch.randn(3, vocab, generator=torch.Generator().manual_seed(vocab))
    values[1, 7] = values[1, 9] = values[1].max() + 1  # a tie at the top
    values[2, vocab - 1] = float("nan")  # topk ranks NaN first; so must both rounds
    expected = values.topk(k, dim=-1).values
    torch.testing.assert_close(stats.chunked_top_values(values, k, chunk=256), expected, rtol=0, atol=0, equal_nan=True)


def test_logit_stats_match_definitions_and_write_into_the_buffer_row():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3000, generator=generator) * 4
    logits[1, :2900] = float("-inf")  # a masked vocabulary
    logits[2, 5] = float("inf")
    logits[3, 11] = float("nan")
    buffer = torch.full((3, 4, 6), float("nan"))
    got, log_probs = stats.logit_stats(logits, out=buffer[1])
    expected = _reference(logits).float()
    assert got.data_ptr() == buffer[1].data_ptr()
    torch.testing.assert_close(buffer[1], expected, atol=1e-4, rtol=1e-5, equal_nan=True)
    assert buffer[0].isnan().all() and buffer[2].isnan().all()
    torch.testing.assert_close(log_probs, torch.log_softmax(logits, -1), equal_nan=True)


def test_chosen_surprisal_bits_into_a_buffer_row():
    log_probs = torch.log_softmax(torch.randn(2, 50, generator=torch.Generator().manual_seed(1)), -1)
    tokens = torch.tensor([3, 41])
    row = torch.full((2,), float("nan"))
    stats.chosen_surprisal_bits(log_probs, tokens, out=row)
    expected = -log_probs[torch.arange(2), tokens] / math.log(2)
    torch.testing.assert_close(row, expected)
    torch.testing.assert_close(stats.chosen_surprisal_bits(log_probs, tokens), expected)

