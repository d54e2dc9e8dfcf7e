"""A Report back to numpy arrays, so that the analysis can be rerun offline.

`summaries_of(report)` gives the RunSummaries the report's timelines hold (NaN where a value
was not observed) and `prompt_of(report)` its prompt telemetry as PromptSummaries; both are
None when the report does not carry that part (summary capture, or a truncated payload).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, PromptSummaries, RunSummaries
from .schema import Report, SparseLayer, StepTimeline


def summaries_of(report: Report) -> RunSummaries | None:
    """RunSummaries rebuilt from the per-sequence timelines (None without step timelines)."""
    if not report.sequences or any(s.steps is None for s in report.sequences):
        return None
    steps = [s.steps for s in report.sequences]
    logits = np.stack([_columns_of(t, LOGIT_STATS) for t in steps])
    n, s = logits.shape[:2]
    layers = report.dimensions.layers

    def per_layer(attribute: str, names: Sequence[str]) -> np.ndarray | None:
        timelines = [getattr(seq, attribute) for seq in report.sequences]
        if any(t is None for t in timelines):
            return None
        return np.stack([_layer_columns_of(t, names, s, layers) for t in timelines])

    hidden = per_layer("layers", HIDDEN_STATS)
    cosine = [seq.repetition_cosine for seq in report.sequences]
    return RunSummaries(
        logits=logits,
        token_ids=np.array([t.token_ids for t in steps], np.int64).reshape(n, s),
        valid=np.array([t.valid for t in steps], bool).reshape(n, s),
        hidden=hidden if hidden is not None else np.full((n, s, layers, len(HIDDEN_STATS)), np.nan, np.float32),
        attention=per_layer("attention", ATTENTION_STATS),
        cross_attention=per_layer("cross_attention", ATTENTION_STATS),
        repetition_cosine=None if any(c is None for c in cosine) else np.stack([_floats_array(c) for c in cosine]),
        num_heads=report.dimensions.heads,
        model_type=report.dimensions.model_type,
        attention_unavailable_reason=report.attention_unavailable_reason,
    )

def prompt_of(report: Report) -> PromptSummaries | None:
    """Prompt telemetry as arrays, laid out like capture's PromptSummaries."""
    if report.prompt is None:
        return None
    out = PromptSummaries(sparse_cap=report.prompt.sparse_cap)
    for row in report.prompt.rows:
        if row.surprisal is not None:
            out.surprisal.append(_floats_array(row.surprisal))
        if row.layer_transformation is not None:
            out.layer_transformation.append(_floats_array(row.layer_transformation))
        if row.basin is not None:
            out.basin.append(_floats_array(row.basin))
        if row.attention is not None:
            out.sparse.append([_dense_sparse(layer) for layer in row.attention])
    return out


def _dense_sparse(layer: SparseLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    heads = len(layer.weight)
    width = max((len(w) for w in layer.weight), default=0)
    query = np.zeros((heads, width), np.int64)
    key = np.zeros((heads, width), np.int64)
    weight = np.zeros((heads, width), np.float32)
    for h in range(heads):
        count = len(layer.weight[h])
        query[h, :count], key[h, :count], weight[h, :count] = layer.query[h], layer.key[h], layer.weight[h]
    return query, key, weight


def _columns_of(timeline: StepTimeline, names: Sequence[str]) -> np.ndarray:
    return np.stack([_floats_array(getattr(timeline, name)) for name in names], axis=-1).reshape(-1, len(names))


def _layer_columns_of(timeline, names: Sequence[str], steps: int, layers: int) -> np.ndarray:
    columns = [_floats_array(getattr(timeline, name)).reshape(steps, layers) for name in names]
    return np.stack(columns, axis=-1)


def _floats_array(values) -> np.ndarray:
    return np.array(values, dtype=np.float64).astype(np.float32) if values is not None else None
