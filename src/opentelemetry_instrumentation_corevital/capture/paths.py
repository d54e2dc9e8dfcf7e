"""From device rows and forward steps to returned sequences and generated steps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..summaries import ATTENTION_STATS, LOGIT_STATS, RunSummaries
from . import hashing
from .buffers import DEVICE_LOGIT_STATS, HostSummaries
from .stats import LN2

_SURPRISAL = LOGIT_STATS.index("surprisal")


class PathError(Exception):
    pass


def _beam_paths(host: HostSummaries, sequences: np.ndarray, steps: int, valid: np.ndarray, beams: int) -> np.ndarray:
    """A beam that finished early left the running rows: its later, invalid steps keep its last row.

    A sequence is looked up among its own input's beams only: inputs may share a prefix (every
    seq2seq decoder starts from the same token), so a hash alone does not name the input.
    """
    wanted = hashing.prefix_hashes_numpy(sequences, host.prompt_width, steps)
    paths = np.zeros(wanted.shape, dtype=np.int64)
    returned = sequences.shape[0] // max(1, host.rows // beams)  # rows = inputs x beams
    for t in range(steps):
        row_of = {(r // beams, int(h)): r for r, h in enumerate(host.row_hashes[t])}
        for n in range(sequences.shape[0]):
            row = row_of.get((n // returned, int(wanted[n, t])))
            if row is None and valid[n, t]:
                raise PathError(f"returned sequence {n} matches no beam at step {t}")
            paths[n, t] = paths[n, t - 1] if row is None and t else (row or 0)
    return paths


def _paths(host: HostSummaries, sequences: np.ndarray, steps: int, valid: np.ndarray, beams: int) -> np.ndarray:
    if host.row_hashes is not None:
        return _beam_paths(host, sequences, steps, valid, beams)
    if sequences.shape[0] != host.rows:
        raise PathError(f"{sequences.shape[0]} returned sequences for {host.rows} decoding rows")
    return np.broadcast_to(np.arange(host.rows)[:, None], (host.rows, steps))


def _surprisal(host: HostSummaries, paths: np.ndarray, steps: int, tokens: np.ndarray) -> np.ndarray:
    """Surprisal of token t is stored by the row that holds the sequence at step t + 1."""
    n_seq = paths.shape[0]
    out = np.full((n_seq, steps), np.nan, dtype=np.float32)
    if steps == 0:
        return out
    t = np.arange(steps - 1)
    out[:, : steps - 1] = host.surprisal[t[None, :], paths[:, 1:]]
    if host.eos_log_probs is not None:
        for column, eos in enumerate(host.eos_token_ids):
            n_idx, t_idx = np.nonzero(tokens == eos)
            out[n_idx, t_idx] = -host.eos_log_probs[t_idx, paths[n_idx, t_idx], column] / LN2
    if host.forwards > steps:
        # an extra forward ran after the last returned token; its rows match the full sequences
        out[:, steps - 1] = host.surprisal[steps - 1, paths[:, -1]] if host.row_hashes is None else np.nan
    elif host.last_token_log_probs is not None:
        out[:, steps - 1] = -host.last_token_log_probs[paths[:, -1], np.arange(n_seq)] / LN2
    return out


def collapsed_head_counts(entropy: np.ndarray, options) -> np.ndarray:
    """Per-head attention entropy [..., H] -> float32 [...]: heads under the profile's collapse
    threshold (NaN where the step's attention was not observed); the `collapsed_heads` column of
    attention_summaries."""
    with np.errstate(invalid="ignore"):
        collapsed = (entropy < options.collapsed_head_entropy_bits).sum(-1).astype(np.float32)
    return np.where(np.isnan(entropy).all(-1), np.float32(np.nan), collapsed)


def attention_summaries(heads: np.ndarray | None, t_idx, r_idx, options) -> np.ndarray | None:
    """Per-head entropy and concentration [F, L, 2, R, H] -> the ATTENTION_STATS of each
    sequence's steps [N, S, L, len(ATTENTION_STATS)]; NaN where the step's attention was not
    observed. Reduced once per forward row (only the observed ones), then indexed by path."""
    if heads is None:
        return None
    entropy, concentration = heads[:, :, 0], heads[:, :, 1]  # [F, L, R, H]
    observed = ~np.isnan(entropy).all(-1)  # [F, L, R]
    per_row = np.full((*observed.shape, len(ATTENTION_STATS)), np.nan, dtype=np.float32)
    if observed.any():
        per_row[observed] = _head_reductions(entropy[observed], concentration[observed], options)
    return per_row[t_idx, :, r_idx]


def _head_reductions(entropy: np.ndarray, concentration: np.ndarray, options) -> np.ndarray:
    """Observed rows' per-head values [M, H] (NaN only for a head the model made NaN) -> [M, len(ATTENTION_STATS)]."""
    heads_seen = (~np.isnan(entropy)).sum(-1)
    with np.errstate(invalid="ignore"):
        columns = {
            # fmin/fmax skip NaN without nanmin's copies and warnings
            "entropy_min": np.fmin.reduce(entropy, axis=-1),
            "entropy_mean": np.where(np.isnan(entropy), np.float32(0), entropy).sum(-1) / heads_seen,
            "entropy_max": np.fmax.reduce(entropy, axis=-1),
            "concentration_min": np.fmin.reduce(concentration, axis=-1),
            "concentration_max": np.fmax.reduce(concentration, axis=-1),
            "collapsed_heads": collapsed_head_counts(entropy, options),
            "focused_heads": (concentration > options.focused_head_concentration).sum(-1),
        }
    return np.stack([columns[name] for name in ATTENTION_STATS], axis=-1)


def repetition_by_lag(repetition_cosine: np.ndarray, t_idx, r_idx) -> np.ndarray:
    """float32 [..., K]: the cosine between the state at step t and the one at step t-1-k (NaN
    before step 0)."""
    by_lag = repetition_cosine[t_idx, r_idx]  # [..., K]
    earlier = np.asarray(t_idx)[..., None] - 1 - np.arange(by_lag.shape[-1])  # the step compared with
    return np.where(earlier >= 0, by_lag, np.nan).astype(np.float32)


def _valid_mask(generated: np.ndarray, eos_token_ids: set[int]) -> np.ndarray:
    if not eos_token_ids or generated.size == 0:
        return np.ones(generated.shape, dtype=bool)
    is_eos = np.isin(generated, list(eos_token_ids))
    finished_before = np.cumsum(is_eos, axis=1) - is_eos  # EOS itself stays valid
    return finished_before == 0


def resolve_paths(
    host: HostSummaries, sequences: np.ndarray, options, eos_token_ids: set[int], *,
    stops: Mapping[int, int] | None = None, num_heads: int = 0, model_type: str = "",
    attention_unavailable_reason: str | None = None,
) -> RunSummaries:
    """The summaries of each returned sequence; `stops` maps a sequence stopped early to its last step."""
    steps = max(0, min(sequences.shape[1] - host.prompt_width, host.forwards))
    generated = sequences[:, host.prompt_width : host.prompt_width + steps]
    valid = _valid_mask(generated, eos_token_ids)
    for row, last_step in (stops or {}).items():
        if row < valid.shape[0]:  # the padding generate appends after a stop is not part of the sequence
            valid[row, last_step + 1 :] = False
    paths = _paths(host, sequences, steps, valid, max(1, options.num_beams))
    t_idx = np.broadcast_to(np.arange(steps)[None, :], paths.shape)
    logits = np.empty((*paths.shape, len(LOGIT_STATS)), dtype=np.float32)
    device_logits = host.logits[t_idx, paths]
    for column, name in enumerate(DEVICE_LOGIT_STATS):
        logits[..., LOGIT_STATS.index(name)] = device_logits[..., column]
    logits[..., _SURPRISAL] = _surprisal(host, paths, steps, generated)
    return RunSummaries(
        logits=logits,
        token_ids=generated.astype(np.int64),
        valid=valid,
        hidden=host.hidden[t_idx, :, paths],
        attention=attention_summaries(host.heads, t_idx, paths, options),
        cross_attention=attention_summaries(host.cross_heads, t_idx, paths, options),
        repetition_cosine=repetition_by_lag(host.repetition_cosine, t_idx, paths),
        num_heads=num_heads,
        model_type=model_type,
        attention_unavailable_reason=attention_unavailable_reason,
    )
