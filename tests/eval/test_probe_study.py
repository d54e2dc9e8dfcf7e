"""The third round's measurement pieces: the 320-row held-out set, the probe study's fits, the sketch hook."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.eval.dataset import FIT, HELDOUT, build_items
from benchmarks.eval.probe_study import PROBE_STEPS, fitted, probe_vector
from benchmarks.eval.transfer import PER_TEMPLATE, heldout_items
from opentelemetry_instrumentation_corevital.analysis.calibration import recalibrated_risk_model
from opentelemetry_instrumentation_corevital.summaries import HIDDEN_STATS, LOGIT_STATS, RunSummaries


def test_the_320_row_held_out_set_asks_calibrate_no_question_it_scores():
    held = heldout_items()
    assert len(held) == 320 and {item.split for item in held} == {HELDOUT}
    # benchmarks.eval.calibrated gives calibrate the fit half's distinct prompts of the 200-row set.
    calibrate_prompts = {item.prompt for item in build_items(PER_TEMPLATE) if item.split == FIT}
    shared = [item for item in held if item.prompt in calibrate_prompts]
    # Only open-ended story prompts recur (fit: greedy with a repetition penalty; held out: sampled),
    # and calibrate labels an open-ended prompt healthy by rule: no question crosses the split.
    assert len(shared) == 10 and {item.template for item in shared} == {"free_story_sampled"}
    first_100 = {item.id for item in build_items(PER_TEMPLATE) if item.split == HELDOUT}
    assert len(first_100) == 100 and first_100 <= {item.id for item in held}


def test_the_study_baseline_is_the_procedure_calibrate_writes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 5)) * [1, 2, 0.1, 5, 1] + [0, 3, 0.5, -1, 0]
    y = (rng.random(80) < 1 / (1 + np.exp(-(x[:, 0] - 0.5 * x[:, 3])))).astype(float)
    weights, bias = fitted(x, y, np.ones(5))
    written = recalibrated_risk_model(x, y, tuple("abcde"))
    assert weights == pytest.approx(written["weights"], abs=1e-5)
    assert bias == pytest.approx(written["bias"], abs=1e-5)


def test_a_heavier_penalty_shrinks_only_its_own_columns():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 2))
    y = (rng.random(200) < 1 / (1 + np.exp(-(x[:, 0] + x[:, 1])))).astype(float)
    even, _ = fitted(x, y, np.array([1.0, 1.0]), "none")
    heavy, _ = fitted(x, y, np.array([1.0, 100.0]), "none")
    assert abs(heavy[1]) < 0.6 * abs(even[1])
    assert heavy[0] == pytest.approx(even[0], rel=0.3)


def test_probe_vector_is_the_spread_of_log_l2_over_the_answers_first_steps_at_three_depths():
    steps, layers = 12, 9
    hidden = np.ones((1, steps, layers, len(HIDDEN_STATS)), np.float32)
    l2 = np.exp(np.arange(steps, dtype=np.float32))[:, None] * np.arange(1, layers + 1, dtype=np.float32)
    hidden[0, :, :, HIDDEN_STATS.index("l2_norm")] = l2
    valid = np.ones((1, steps), bool)
    valid[0, 0] = False  # e.g. a step that does not count
    summaries = RunSummaries(logits=np.zeros((1, steps, len(LOGIT_STATS)), np.float32),
                             token_ids=np.zeros((1, steps), np.int64), valid=valid, hidden=hidden)
    # Layers 2, 4, 6 (1/4, 1/2, 3/4 of 0..8); log L2 = step + log(layer + 1): its spread over
    # valid steps 1..8 is the spread of 1..8, whatever the layer.
    expected = np.std(np.arange(1, 1 + PROBE_STEPS))
    assert probe_vector(summaries) == pytest.approx([expected] * 3, rel=1e-5)


def test_the_sketch_study_hook_projects_the_middle_layers_newest_state_at_every_step():
    import torch

    from benchmarks.eval.sketch_study import SKETCH_SIZE, _Sketcher, _features
    from tests.conftest import build_llama, prompt_ids

    model = build_llama(layers=4)
    ids = prompt_ids(batch=2, length=6)
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    sketcher = _Sketcher(model.model.layers[2], model.config.hidden_size)
    try:
        with torch.no_grad():
            hooked = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        sketch = sketcher.take()
    finally:
        sketcher.handle.remove()
    assert torch.equal(hooked, plain)  # the study's hook leaves generation as it is
    with torch.no_grad():
        expected_step0 = model(ids, output_hidden_states=True).hidden_states[3][:, -1, :] @ sketcher.projection
    assert sketch.shape == (2, 5, SKETCH_SIZE)
    np.testing.assert_allclose(sketch[:, 0], expected_step0.numpy(), rtol=1e-4, atol=1e-5)
    valid = np.array([True, True, False, True, True])
    row = _features(sketch[0], valid)
    np.testing.assert_allclose(row[:SKETCH_SIZE], sketch[0, 0])
    np.testing.assert_allclose(row[SKETCH_SIZE:], sketch[0, [0, 1, 3, 4]].mean(axis=0), rtol=1e-6)
