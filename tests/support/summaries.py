"""Small RunSummaries built by hand for the analysis tests."""

from __future__ import annotations

import numpy as np

from opentelemetry_instrumentation_corevital.summaries import (
    ATTENTION_STATS,
    HIDDEN_STATS,
    LOGIT_STATS,
    RunSummaries,
)

LOOP_COSINE = 0.99995
PLAIN_COSINE = 0.5


def make_run(
    steps: int = 10,
    layers: int = 6,
    sequences: int = 1,
    *,
    entropy: float = 2.0,
    surprisal: float = 2.0,
    margin: float = 0.4,
    lags: int = 32,
    attention: bool = False,
    num_heads: int = 12,
) -> RunSummaries:
    """A healthy-looking run: distinct tokens, moderate entropy, L2 growing 5% per layer and
    moving from step to step as a healthy model's does (log L2 spread about 0.2)."""
    n, s, l = sequences, steps, layers
    logits = np.zeros((n, s, len(LOGIT_STATS)), np.float32)
    logits[..., LOGIT_STATS.index("entropy")] = entropy
    logits[..., LOGIT_STATS.index("surprisal")] = surprisal
    logits[..., LOGIT_STATS.index("margin")] = margin
    logits[..., LOGIT_STATS.index("topk_mass")] = 0.8
    logits[..., LOGIT_STATS.index("max_prob")] = 0.5
    hidden = np.zeros((n, s, l, len(HIDDEN_STATS)), np.float32)
    hidden[..., HIDDEN_STATS.index("std")] = 1.0
    hidden[..., HIDDEN_STATS.index("l2_norm")] = 10.0 * 1.05 ** np.arange(l) * np.exp(0.3 * np.sin(np.arange(s)))[:, None]
    hidden[..., HIDDEN_STATS.index("max_abs")] = 3.0
    run = RunSummaries(
        logits=logits,
        token_ids=np.tile(np.arange(100, 100 + s, dtype=np.int64), (n, 1)),
        valid=np.ones((n, s), bool),
        hidden=hidden,
        repetition_cosine=np.full((n, s, lags), np.nan, np.float32),
        num_heads=num_heads,
    )
    if attention:
        att = np.zeros((n, s, l, len(ATTENTION_STATS)), np.float32)
        att[..., ATTENTION_STATS.index("entropy_mean")] = 2.0
        run.attention = att
    for i in range(n):
        set_tokens(run, i, run.token_ids[i])
    return run


def set_tokens(run: RunSummaries, i: int, tokens) -> None:
    """Set sequence i's tokens and a matching repetition cosine: high wherever the token at
    step s equals the one at s-1-k (a model in a loop), plain elsewhere."""
    tokens = np.asarray(tokens, np.int64)
    run.token_ids[i] = tokens
    steps = tokens.shape[0]
    lags = run.repetition_cosine.shape[2]
    for s in range(steps):
        for k in range(lags):
            back = s - 1 - k
            if back < 0:
                run.repetition_cosine[i, s, k] = np.nan
            else:
                run.repetition_cosine[i, s, k] = LOOP_COSINE if tokens[s] == tokens[back] else PLAIN_COSINE


def logit_column(name: str) -> int:
    return LOGIT_STATS.index(name)


def hidden_column(name: str) -> int:
    return HIDDEN_STATS.index(name)


def attention_column(name: str) -> int:
    return ATTENTION_STATS.index(name)
