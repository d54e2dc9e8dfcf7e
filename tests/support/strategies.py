"""Hypothesis strategies for the property tests: RunSummaries of any shape holding any float32."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from opentelemetry_instrumentation_corevital.profiles import load_profile
from opentelemetry_instrumentation_corevital.summaries import ATTENTION_STATS, HIDDEN_STATS, LOGIT_STATS, RunSummaries

PROFILE = load_profile("default", {"early_warning_window": 3, "repetition_min_steps": 2})
ANY_FLOAT32 = st.one_of(
    st.floats(width=32),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, 5.0]),
)


@st.composite
def run_summaries(draw):
    n, s, layers, lags = (draw(st.integers(0, high)) for high in (3, 14, 5, 6))

    def floats(*shape):
        return draw(hnp.arrays(np.float32, shape, elements=ANY_FLOAT32))

    return RunSummaries(
        logits=floats(n, s, len(LOGIT_STATS)),
        token_ids=draw(hnp.arrays(np.int64, (n, s), elements=st.integers(0, 3))),
        valid=draw(hnp.arrays(bool, (n, s))),
        hidden=floats(n, s, layers, len(HIDDEN_STATS)),
        attention=floats(n, s, layers, len(ATTENTION_STATS)) if draw(st.booleans()) else None,
        repetition_cosine=floats(n, s, lags) if draw(st.booleans()) else None,
        num_heads=draw(st.integers(0, 16)),
    )
