"""The data contract between capture and analysis: small host arrays, no torch.

Shapes use N = returned sequences, S = generated steps, L = decoder layers,
R = repetition lags. Every array is indexed by the *returned* sequence, so beam
search paths and `num_return_sequences` are already resolved by capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HIDDEN_STATS = ("mean", "std", "l2_norm", "max_abs", "nan_count", "inf_count")
ATTENTION_STATS = (
    "entropy_min",
    "entropy_mean",
    "entropy_max",
    "concentration_min",
    "concentration_max",
    "collapsed_heads",
    "focused_heads",
)
LOGIT_STATS = ("entropy", "margin", "topk_mass", "max_prob", "surprisal", "nan_count", "inf_count")


@dataclass
class RunSummaries:
    """Per-step internal summaries of one generate call.

    logits:            float32 [N, S, len(LOGIT_STATS)]; entropy and surprisal in bits,
                       computed from raw logits (before temperature, top-k, top-p).
    token_ids:         int64 [N, S], the token chosen at each step.
    valid:             bool [N, S], False after a sequence finished (post-EOS padding).
    hidden:            float32 [N, S, L, len(HIDDEN_STATS)], newest position per decoder layer.
    attention:         float32 [N, S, L, len(ATTENTION_STATS)] or None when unobservable.
    cross_attention:   same layout for seq2seq decoders, else None.
    repetition_cosine: float32 [N, S, R]; cosine similarity between the last layer's newest
                       hidden state at step s and the one at step s-1-k; NaN where s-1-k < 0.
    """

    logits: np.ndarray
    token_ids: np.ndarray
    valid: np.ndarray
    hidden: np.ndarray
    attention: np.ndarray | None = None
    cross_attention: np.ndarray | None = None
    repetition_cosine: np.ndarray | None = None
    num_heads: int = 0
    model_type: str = ""
    attention_unavailable_reason: str | None = None

    @property
    def num_sequences(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.logits.shape[1])

    @property
    def num_layers(self) -> int:
        return int(self.hidden.shape[2]) if self.hidden.ndim == 4 else 0

    def logit(self, name: str) -> np.ndarray:
        return self.logits[..., LOGIT_STATS.index(name)]

    def hidden_stat(self, name: str) -> np.ndarray:
        return self.hidden[..., HIDDEN_STATS.index(name)]

    def attention_stat(self, name: str) -> np.ndarray | None:
        if self.attention is None:
            return None
        return self.attention[..., ATTENTION_STATS.index(name)]

    @classmethod
    def empty(cls, num_sequences: int, num_layers: int = 0) -> "RunSummaries":
        n = num_sequences
        return cls(
            logits=np.zeros((n, 0, len(LOGIT_STATS)), np.float32),
            token_ids=np.zeros((n, 0), np.int64),
            valid=np.zeros((n, 0), bool),
            hidden=np.zeros((n, 0, num_layers, len(HIDDEN_STATS)), np.float32),
        )


@dataclass
class PromptSummaries:
    """Host arrays, one entry per unique prompt row.

    surprisal: [P-1] bits of each prompt token given the ones before it (decoder-only).
    layer_transformation: [L] 1 - mean cosine(layer input, layer output) over prompt positions.
    basin: [L, H] mean attention on the middle third of keys / mean on the outer thirds.
    sparse: per layer, (query idx [H, C], key idx [H, C], weight [H, C]); unused slots have weight 0.
    sparse_cap: the per-head entry cap a payload's byte budget imposed (None: not reduced).
    """

    surprisal: list[np.ndarray] = field(default_factory=list)
    layer_transformation: list[np.ndarray] = field(default_factory=list)
    basin: list[np.ndarray] = field(default_factory=list)
    sparse: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    sparse_cap: int | None = None
