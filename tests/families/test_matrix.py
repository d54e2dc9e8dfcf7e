"""The family matrix: every family x generate mode, instrumented, against transformers' own outputs.

For each case: generate returns exactly what it returns uninstrumented; one user call makes
exactly one span and one operation in the metrics; the span's token counts are exact; the
per-step entropy on the span equals the entropy of generate's own `output_logits`; the
captured attention statistics equal the eager implementation's `output_attentions` wherever
attention is observed, and the span gives a reason wherever it is not; one hidden-state row
is captured per decoder layer.

`pytest tests/families --compatibility-doc=docs/compatibility.md` also writes the table.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.capture import attention_registry
from opentelemetry_instrumentation_corevital.report import Report
from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from tests.families.zoo import ASSISTANT, EOS, FAMILIES, PAD, SPECULATIVE, STEPS, Family, family, inputs, models
from tests.support.capture import capture

PADDING = 2
ENTROPY_ATOL = 1e-4

MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=8, temperature=0.7),
    "beam": dict(do_sample=False, num_beams=2),
    "beam_sample": dict(do_sample=True, num_beams=2, top_k=8),
    "static": dict(do_sample=False, cache_implementation="static"),
    "embeds": dict(do_sample=False),
    "padded": dict(do_sample=False),  # a batch of two prompts, the second left-padded
    "assisted": dict(do_sample=False),
    "prompt_lookup": dict(do_sample=False, prompt_lookup_num_tokens=2),
}
# several tokens may be accepted per forward: the span must say why there is no per-token health
SPECULATIVE_MODES = SPECULATIVE
# attention is compared with eager weights where both implementations pick the same tokens
ATTENTION_MODES = ("greedy", "static", "embeds", "padded")


def _applies(f: Family, mode: str) -> str | None:
    """Why a mode does not apply to a family, or None."""
    if mode in f.unsupported:
        return f.unsupported[mode]
    if mode == "embeds" and f.kind != "decoder":
        return "generate(inputs_embeds=...) is for decoder-only language models"
    if mode == "padded" and f.kind in ("whisper", "vlm"):
        return "covered by the text families"
    if mode in SPECULATIVE_MODES and f.kind != "decoder":
        return "covered by the decoder-only families"
    if mode == "static" and f.kind == "recurrent":
        return "state-space caches have no static variant"
    if mode == "static" and f.kind == "whisper":
        return "covered by the decoder-only and seq2seq families"
    return None


CASES = [(f.name, mode) for f in FAMILIES for mode in MODES if _applies(f, mode) is None]


def _kwargs(f: Family, mode: str, model) -> dict:
    kwargs = {**inputs(f), **MODES[mode], "max_new_tokens": STEPS}
    if mode == "padded":
        ids, mask = kwargs["input_ids"].repeat(2, 1), kwargs["attention_mask"].repeat(2, 1)
        ids[1, :PADDING], mask[1, :PADDING] = PAD, 0
        kwargs.update(input_ids=ids, attention_mask=mask)
    if mode == "embeds":
        kwargs["inputs_embeds"] = model.get_input_embeddings()(kwargs.pop("input_ids")).detach()
    if mode == "assisted":
        kwargs["assistant_model"] = models(ASSISTANT)[0]
    return kwargs


def _generate(model, kwargs, seed=0, **extra):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(**kwargs, **extra)


def _prompt_tokens(kwargs) -> int | None:
    if "attention_mask" in kwargs:
        return int(kwargs["attention_mask"].sum())
    return None


def _generated(f: Family, sequences: torch.Tensor, kwargs) -> torch.Tensor:
    if f.kind in ("seq2seq", "whisper") or "inputs_embeds" in kwargs:
        return sequences[:, 1:] if f.kind != "decoder" else sequences  # after the decoder start token
    return sequences[:, kwargs["input_ids"].shape[1] :]


def _until_eos(row: list[int]) -> int:
    return row.index(EOS) + 1 if EOS in row else len(row)


class Run:
    """One instrumented call next to its uninstrumented reference."""

    def __init__(self, f: Family, mode: str, telemetry):
        model, self.eager = models(f.name)
        self.family, self.mode, self.model = f, mode, model
        self.kwargs = _kwargs(f, mode, model)
        self.expected = _generate(model, self.kwargs)
        self.reference = _generate(model, self.kwargs, output_logits=True, return_dict_in_generate=True)
        instrumentor = CoreVitalInstrumentor()
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, capture_mode="full"
        )
        try:
            self.output = _generate(model, self.kwargs)
        finally:
            instrumentor.uninstrument()
        self.spans = telemetry.finished()
        self.operations = sum(p.count for p in telemetry.metric_points("gen_ai.client.operation.duration"))
        self.span = self.spans[0] if len(self.spans) == 1 else None

    @property
    def attributes(self) -> dict:
        return dict(self.span.attributes)

    def _step_events(self):
        return [e for e in self.span.events if e.name == attrs.STEP_EVENT]

    @property
    def event_sequence(self) -> int:
        """The returned sequence the span's step events describe (the riskiest one)."""
        sequences = {int(e.attributes[attrs.STEP_SEQUENCE]) for e in self._step_events()}
        assert len(sequences) <= 1, sequences
        return sequences.pop() if sequences else 0

    def step_entropy(self) -> np.ndarray:
        events = self._step_events()
        by_step = {int(e.attributes[attrs.STEP_INDEX]): float(e.attributes[attrs.STEP_ENTROPY]) for e in events}
        return np.array([by_step.get(step, np.nan) for step in range(len(self.reference.logits))])

    def reference_entropy(self) -> np.ndarray:
        """Entropy (bits) of the raw logits behind the step events' sequence at every step."""
        sequence = self.event_sequence
        rows = [sequence] * len(self.reference.logits)
        beams = getattr(self.reference, "beam_indices", None)
        if beams is not None:
            rows = [int(b) for b in beams[sequence, : len(rows)]]
        out = []
        for logits, row in zip(self.reference.logits, rows):
            if row < 0:
                break
            log_probs = torch.log_softmax(logits[row].double(), -1)
            out.append(float(-(log_probs.exp() * log_probs).sum() / math.log(2)))
        return np.array(out)


_RUNS: dict[tuple[str, str], Run] = {}


@pytest.fixture
def run(request, telemetry, compatibility):
    name, mode = request.param
    key = (name, mode)
    if key not in _RUNS:
        _RUNS[key] = Run(family(name), mode, telemetry)
    result = _RUNS[key]
    compatibility.record(result)
    return result


@pytest.mark.parametrize("run", CASES, indirect=True, ids=[f"{n}-{m}" for n, m in CASES])
def test_call_is_unchanged_and_counted_once(run):
    assert torch.equal(run.output, run.expected)
    assert len(run.spans) == 1, [s.name for s in run.spans]
    assert run.operations == 1
    a = run.attributes
    assert attrs.ERROR not in a, a[attrs.ERROR]
    generated = _generated(run.family, run.reference.sequences, run.kwargs)
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == sum(_until_eos(row) for row in generated.tolist())
    expected_input = _prompt_tokens(run.kwargs)
    if expected_input is None:
        assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in a
    else:
        assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == expected_input
    if run.mode not in SPECULATIVE_MODES:
        assert Report.from_span(run.span).dimensions.layers == run.family.layers  # one row per decoder layer


@pytest.mark.parametrize("run", [pytest.param((n, m), id=f"{n}-{m}") for n, m in CASES], indirect=True)
def test_step_entropy_is_the_entropy_of_output_logits(run):
    if run.mode in SPECULATIVE_MODES:
        assert run.attributes.get(attrs.CAPTURE_UNAVAILABLE_REASON)
        assert np.isnan(run.step_entropy()).all(), "no per-step values that do not line up with tokens"
        return
    expected = run.reference_entropy()
    got = run.step_entropy()[: len(expected)]
    np.testing.assert_allclose(got, expected, atol=ENTROPY_ATOL, rtol=0)


ATTENTION_CASES = [(n, m) for n, m in CASES if m in ATTENTION_MODES]


def _captured(model, run):
    attention_registry.install()
    try:
        kwargs = _kwargs(run.family, run.mode, model)
        first = kwargs.pop("input_features" if run.family.kind == "whisper" else "input_ids", None)
        torch.manual_seed(0)
        _, summaries, _ = capture(model, first, **kwargs)
    finally:
        attention_registry.uninstall()
    return summaries


@pytest.mark.parametrize("run", ATTENTION_CASES, indirect=True, ids=[f"{n}-{m}" for n, m in ATTENTION_CASES])
@pytest.mark.parametrize("implementation", ["default", "eager"])
def test_attention_equals_eager_weights_or_has_a_reason(run, implementation):
    summaries = _captured(run.model if implementation == "default" else run.eager, run)
    assert summaries is not None
    assert summaries.num_layers == run.family.layers
    if summaries.attention is None:
        reason = summaries.attention_unavailable_reason
        if implementation == "default":
            assert reason == run.attributes.get(attrs.ATTENTION_UNAVAILABLE_REASON)
        assert reason, "attention was not observed and the span does not say why"
        return
    eager_kwargs = _kwargs(run.family, run.mode, run.eager)
    reference = _generate(
        run.eager, eager_kwargs, output_attentions=True, output_logits=True, return_dict_in_generate=True
    )
    if implementation == "default" and not _same_logits(reference.logits, run.reference.logits):
        pytest.skip(f"transformers' {run.model.config._attn_implementation} and eager {run.family.name} disagree")
    steps = reference.decoder_attentions if run.family.kind in ("seq2seq", "whisper") else reference.attentions
    _assert_attention_equal(summaries.attention, steps, summaries.num_steps)
    if run.family.kind in ("seq2seq", "whisper"):
        _assert_attention_equal(summaries.cross_attention, reference.cross_attentions, summaries.num_steps)


def _same_logits(eager, default) -> bool:
    """Whether the eager twin computes what the default implementation computes (PaliGemma's do not)."""
    return len(eager) == len(default) and all(torch.allclose(a, b, atol=1e-4) for a, b in zip(eager, default))


def _assert_attention_equal(captured: np.ndarray, eager_steps, num_steps: int) -> None:
    """captured [N, S, L, stats] against eager weights per row, step and attention layer (entropies in bits)."""
    observed = [layer for layer in range(captured.shape[2]) if np.isfinite(captured[0, 0, layer, 1])]
    assert len(observed) == len(eager_steps[0]), "one attention row per attention layer"
    for step, per_layer in enumerate(eager_steps[:num_steps]):
        for layer, weights in zip(observed, per_layer):
            probs = weights[:, :, -1, :].double()
            entropy = (-torch.special.xlogy(probs, probs).sum(-1) / math.log(2)).numpy()
            got = captured[:, step, layer]
            np.testing.assert_allclose(got[:, 0], entropy.min(-1), atol=1e-4)
            np.testing.assert_allclose(got[:, 1], entropy.mean(-1), atol=1e-4)
            np.testing.assert_allclose(got[:, 2], entropy.max(-1), atol=1e-4)
            np.testing.assert_allclose(got[:, 4], probs.amax(-1).amax(-1).numpy(), atol=1e-4)
