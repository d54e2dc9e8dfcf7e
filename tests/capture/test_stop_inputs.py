"""StepBuffers for a reader of the stop rules' inputs only: each step writes whether its logits
and layer states were finite and its repetition cosine as it is recorded, while the statistics
keep their blocks; what the blocks summarise later agrees with both."""

from __future__ import annotations

import numpy as np
import torch

from opentelemetry_instrumentation_corevital.capture.buffers import StepBuffers
from opentelemetry_instrumentation_corevital.capture.layout import find_layout
from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions
from opentelemetry_instrumentation_corevital.summaries import HIDDEN_STATS
from tests.conftest import VOCAB, build_llama, prompt_ids

STEPS, ROWS, HIDDEN = 40, 2, 64


def recorded(stop_inputs: bool, layer_rows: torch.Tensor, logits: torch.Tensor) -> StepBuffers:
    """Buffers fed `layer_rows` [STEPS, L, ROWS, HIDDEN] and `logits` [STEPS, ROWS, VOCAB] step by step."""
    layout = find_layout(build_llama(layers=layer_rows.shape[1]))
    buffers = StepBuffers(layout, CaptureOptions(max_steps=STEPS), prompt_ids(batch=ROWS),
                          pending_bytes=1 << 20, stop_inputs=stop_inputs)
    for step in range(STEPS):
        for layer in range(layer_rows.shape[1]):
            buffers.record_hidden_output(layer, layer_rows[step, layer][:, None, :])
        buffers.record_layers(step)
        buffers.record_logits(step, logits[step])
    return buffers


def test_each_step_writes_the_stop_inputs_and_the_blocks_agree():
    generator = torch.Generator().manual_seed(3)
    layer_rows = torch.randn(STEPS, 3, ROWS, HIDDEN, generator=generator)
    for step in range(20, STEPS):  # row 1 repeats itself with period 4
        layer_rows[step, :, 1] = layer_rows[step - 4, :, 1]
    layer_rows[7, 1, 0, 5] = float("nan")  # a middle layer of row 0, logits finite
    logits = torch.randn(STEPS, ROWS, VOCAB, generator=generator)
    logits[11, 1, 9] = float("inf")
    per_step, blocks = recorded(True, layer_rows, logits), recorded(False, layer_rows, logits)
    assert per_step.layer_block_steps == blocks.layer_block_steps > 1  # the statistics still wait in blocks

    finite = per_step.finite_rows.numpy()
    assert not finite[7, 0, 1] and not finite[11, 1, 0]
    assert finite.sum() == finite.size - 2

    per_step.flush()
    blocks.flush()
    assert blocks.finite_rows is None
    np.testing.assert_allclose(per_step.cosine.numpy(), blocks.cosine.numpy(), atol=1e-6)
    assert np.allclose(per_step.cosine[20:STEPS, 1, 3].numpy(), 1.0, atol=1e-6)  # lag 4 of the periodic row
    np.testing.assert_array_equal(per_step.hidden.numpy(), blocks.hidden.numpy())
    np.testing.assert_array_equal(per_step.logits.numpy(), blocks.logits.numpy())
    nan_count = HIDDEN_STATS.index("nan_count")
    assert per_step.hidden[7, 1, 0, nan_count] == 1  # what the final report reads: the same step and row
