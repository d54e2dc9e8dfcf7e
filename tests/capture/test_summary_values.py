"""The summaries equal what transformers itself reports when asked for logits, states and weights."""

import numpy as np
import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from opentelemetry_instrumentation_corevital.analysis import risk_features
from opentelemetry_instrumentation_corevital.capture.session import active_session
from opentelemetry_instrumentation_corevital.profiles import load_profile
from tests.conftest import VOCAB, build_llama, prompt_ids
from tests.support.capture import assert_summaries_follow_beams, capture, entropy_bits, surprisal_bits

STEPS = 6


@pytest.mark.parametrize("pending_steps", [1, 4], ids=["each step", "blocks of 4 steps"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2", "t5"])
def test_logit_statistics_come_from_raw_logits(models, name, pending_steps):
    """Summarised at every step, or in blocks of steps (STEPS is no multiple of the block, so the
    last block is summarised at the end of the call)."""
    model = models[name]
    ids = prompt_ids(batch=2)
    reference = model.generate(
        ids, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    pending_bytes = pending_steps * ids.shape[0] * VOCAB * 4
    _, summaries, session = capture(model, ids, pending_bytes, max_new_tokens=STEPS, do_sample=False)
    assert session.buffers.logit_block_steps == pending_steps
    width = reference.sequences.shape[1] - STEPS
    for step, raw in enumerate(reference.logits):
        tokens = reference.sequences[:, width + step]
        np.testing.assert_allclose(summaries.logit("entropy")[:, step], entropy_bits(raw), atol=1e-3)
        np.testing.assert_allclose(summaries.logit("surprisal")[:, step], surprisal_bits(raw, tokens), atol=1e-3)
        probs = torch.softmax(raw.double(), -1)
        top = probs.topk(10, -1).values.numpy()
        np.testing.assert_allclose(summaries.logit("max_prob")[:, step], top[:, 0], atol=1e-5)
        np.testing.assert_allclose(summaries.logit("margin")[:, step], top[:, 0] - top[:, 1], atol=1e-5)
        np.testing.assert_allclose(summaries.logit("topk_mass")[:, step], top.sum(-1), atol=1e-5)


def test_sampling_statistics_ignore_temperature_and_top_k(models):
    """Entropy is measured before the logits processors, so top-k cannot cap it."""
    model = models["llama"]
    ids = prompt_ids()
    torch.manual_seed(3)
    reference = model.generate(
        ids, max_new_tokens=STEPS, do_sample=True, temperature=0.3, top_k=2,
        output_logits=True, output_scores=True, return_dict_in_generate=True,
    )
    torch.manual_seed(3)
    _, summaries, _ = capture(model, ids, max_new_tokens=STEPS, do_sample=True, temperature=0.3, top_k=2)
    raw_entropy = np.stack([entropy_bits(raw) for raw in reference.logits], axis=1)
    np.testing.assert_allclose(summaries.logit("entropy"), raw_entropy, atol=1e-3)
    assert summaries.logit("entropy").min() > 1.5  # processed scores would give at most 1 bit (top-2)


def _layer_block_bytes(model, rows: int, steps: int) -> int:
    """A pending budget that holds `steps` steps of a float32 model's layer states (capture.buffers' sizing)."""
    config = model.config.get_text_config()
    layers = getattr(config, "num_decoder_layers", None) or config.num_hidden_layers
    return steps * layers * rows * config.hidden_size * (4 + 8)


class _LayerOutputs:
    """The newest position of every decoder layer's output at every forward, as the model computed it."""

    def __init__(self, layers):
        self.rows = [[] for _ in layers]
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, index):
        def keep(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            self.rows[index].append(hidden[:, -1].detach().double().clone())
        return keep

    def remove(self):
        for handle in self._handles:
            handle.remove()


@pytest.mark.parametrize("pending_steps", [1, 4], ids=["each step", "blocks of 4 steps"])
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_hidden_statistics_and_repetition_cosine_match_the_layers_outputs(models, name, pending_steps):
    """Every layer's newest state summarised per step or in blocks (11 steps: the last block is
    partial), and the last layer's cosine with each of the states before it, lag by lag."""
    model, steps = models[name], 11
    ids = prompt_ids(batch=2)
    layers = model.transformer.h if name == "gpt2" else model.model.layers
    outputs = _LayerOutputs(layers)
    try:
        reference = model.generate(ids, max_new_tokens=steps, do_sample=False)
    finally:
        outputs.remove()
    budget = _layer_block_bytes(model, ids.shape[0], pending_steps)
    output, summaries, session = capture(model, ids, budget, max_new_tokens=steps, do_sample=False)
    assert torch.equal(output, reference)
    assert session.buffers.layer_block_steps == pending_steps
    for layer, rows in enumerate(outputs.rows):
        for step, row in enumerate(rows):
            expected = torch.stack([row.mean(-1), row.std(-1, unbiased=False), row.norm(dim=-1), row.abs().amax(-1)], -1)
            np.testing.assert_allclose(summaries.hidden[:, step, layer, :4], expected.numpy(), rtol=1e-4, atol=1e-4)
    assert np.all(summaries.hidden_stat("nan_count") == 0)
    last = torch.stack(outputs.rows[-1])  # [S, R, D]
    unit = last / last.norm(dim=-1, keepdim=True)
    for step in range(steps):
        for lag in range(1, step + 1):
            expected = (unit[step] * unit[step - lag]).sum(-1).numpy()
            np.testing.assert_allclose(summaries.repetition_cosine[:, step, lag - 1], expected, atol=1e-5)
        assert np.isnan(summaries.repetition_cosine[:, step, step:]).all()


def test_hidden_norm_spread_reads_the_middle_layers_norms_as_transformers_reports_them(models):
    """The risk feature is the std of log L2 of the middle decoder layer's newest state over the
    first 8 steps, the prompt's last position included."""
    model, middle = models["llama"], 1  # 3 decoder layers
    ids = prompt_ids()
    reference = model.generate(
        ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, output_hidden_states=True,
        return_dict_in_generate=True,
    )
    _, summaries, _ = capture(model, ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    norms = [states[middle + 1][0, -1].double().norm().item() for states in reference.hidden_states[:8]]
    spread = risk_features(summaries, 0, load_profile("llama"))["hidden_norm_spread"]
    assert spread == pytest.approx(np.log(norms).std(), rel=1e-4)


def test_sdpa_attention_statistics_equal_eager_weights():
    """Recomputed newest-query attention under SDPA equals the eager implementation's real weights."""
    sdpa, eager = build_llama("sdpa"), build_llama("eager")
    ids = prompt_ids(batch=2)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in the second row
    reference = eager.generate(
        ids, attention_mask=mask, max_new_tokens=STEPS, do_sample=False,
        output_attentions=True, return_dict_in_generate=True,
    )
    _, from_sdpa, _ = capture(sdpa, ids, attention_mask=mask, max_new_tokens=STEPS, do_sample=False)
    _, from_eager, _ = capture(eager, ids, attention_mask=mask, max_new_tokens=STEPS, do_sample=False)
    for step, per_layer in enumerate(reference.attentions):
        for layer, weights in enumerate(per_layer):
            probs = weights[:, :, -1, :].double()
            entropy = (-(torch.special.xlogy(probs, probs)).sum(-1) / np.log(2)).numpy()
            for summaries in (from_sdpa, from_eager):
                got = summaries.attention[:, step, layer]
                np.testing.assert_allclose(got[:, 0], entropy.min(-1), atol=1e-4)
                np.testing.assert_allclose(got[:, 1], entropy.mean(-1), atol=1e-4)
                np.testing.assert_allclose(got[:, 2], entropy.max(-1), atol=1e-4)
                np.testing.assert_allclose(got[:, 4], probs.amax(-1).max(-1).values.numpy(), atol=1e-5)
    assert from_sdpa.attention_unavailable_reason is None


def test_seq2seq_decoder_has_self_and_cross_attention(models):
    _, summaries, _ = capture(models["t5"], prompt_ids(), max_new_tokens=STEPS, do_sample=False)
    assert summaries.attention is not None and summaries.cross_attention is not None
    assert summaries.num_layers == 2
    assert np.isfinite(summaries.cross_attention[..., 1]).all()


def test_beam_search_summaries_follow_each_returned_beam(models):
    model = models["llama"]
    ids = prompt_ids(batch=2)
    kwargs = dict(max_new_tokens=STEPS, num_beams=3, num_return_sequences=2, do_sample=False)
    reference = model.generate(ids, output_logits=True, return_dict_in_generate=True, **kwargs)
    output, summaries, _ = capture(model, ids, **kwargs)
    assert torch.equal(output, reference.sequences)
    assert len(reference.logits) == STEPS
    assert_summaries_follow_beams(summaries, reference, entropy_abs=1e-3)


def test_finished_rows_are_masked(models):
    model = models["llama"]
    ids = prompt_ids(batch=2, seed=5)
    free = model.generate(ids, max_new_tokens=STEPS, do_sample=False)
    eos = int(free[0, ids.shape[1] + 2])  # row 0 emits this token at step 2
    _, summaries, _ = capture(model, ids, max_new_tokens=STEPS, do_sample=False, eos_token_id=eos)
    first = int(np.argmax(summaries.token_ids[0] == eos))
    assert summaries.valid[0, : first + 1].all() and not summaries.valid[0, first + 1 :].any()


def test_repetition_cosine_is_one_for_an_exactly_repeating_state(models):
    """Lag k compares step s with step s-1-k; the same context twice gives cosine 1."""
    model = models["llama"]
    ids = prompt_ids()
    _, summaries, _ = capture(model, ids, max_new_tokens=STEPS, do_sample=False)
    cosine = summaries.repetition_cosine[0]
    assert np.isnan(cosine[0]).all()  # nothing earlier to compare step 0 with
    assert np.isfinite(cosine[1, 0]) and np.isnan(cosine[1, 1])
    assert np.nanmax(np.abs(cosine)) <= 1.0 + 1e-5


class _FlushAt(StoppingCriteria):
    """Flushes the pending logits where a live listener would, mid-block, and keeps the log-probs it reads."""

    def __init__(self, steps):
        self.steps, self.log_probs = steps, {}

    def __call__(self, input_ids, scores, **kwargs):
        session = active_session()
        if session.step in self.steps:
            session.buffers.flush()
            self.log_probs[session.step] = session.buffers.log_probs.clone()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_a_block_flushed_mid_way_gives_the_same_values_and_the_current_log_probs(models):
    """A reader that flushes the pending logits at some steps (a live listener does at every step)
    sees the current step's log-probs, and the call's values stay those of transformers' logits."""
    model, steps = models["llama"], 11
    ids = prompt_ids(batch=2)
    reference = model.generate(ids, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True)
    flush = _FlushAt({2, 3, 7})
    pending_bytes = _layer_block_bytes(model, ids.shape[0], 4)
    _, summaries, session = capture(
        model, ids, pending_bytes, max_new_tokens=steps, do_sample=False, stopping_criteria=StoppingCriteriaList([flush])
    )
    assert pending_bytes // (ids.shape[0] * VOCAB * 4) == 9
    assert session.buffers.logit_block_steps == 9 and session.buffers.layer_block_steps == 4
    assert sorted(flush.log_probs) == [2, 3, 7]
    plain = capture(model, ids, 0, max_new_tokens=steps, do_sample=False)[1]  # every step summarised at once
    np.testing.assert_allclose(summaries.hidden, plain.hidden, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(summaries.repetition_cosine, plain.repetition_cosine, atol=1e-6)
    for step, log_probs in flush.log_probs.items():
        torch.testing.assert_close(log_probs, torch.log_softmax(reference.logits[step].float(), -1))
    width = reference.sequences.shape[1] - steps
    for step, raw in enumerate(reference.logits):
        tokens = reference.sequences[:, width + step]
        np.testing.assert_allclose(summaries.logit("entropy")[:, step], entropy_bits(raw), atol=1e-3)
        np.testing.assert_allclose(summaries.logit("surprisal")[:, step], surprisal_bits(raw, tokens), atol=1e-3)
