"""Bad and hostile input: non-finite logits, degenerate prompts, extreme depths, models whose
attention cannot be observed, half precision, invalid settings.

Each case runs uninstrumented first. Instrumented, generate must then return the identical
tokens, or raise the same exception type (generate's own errors reach the caller unchanged),
and the span must be sane: no internal fault, every number finite, scores in range.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM
from transformers.modeling_utils import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from opentelemetry_instrumentation_corevital.config import _OPTIONS, Settings
from tests.conftest import VOCAB, build_llama, prompt_ids
from tests.support.reliability import probe_count, our_warnings

ERROR = "corevital.error"
UNAVAILABLE = "corevital.attention.unavailable_reason"
UNIT_INTERVAL = ("corevital.risk.score", "corevital.early_warning.failure_risk")


def outcome(call):
    """generate's result, or the type of what it raised."""
    try:
        return call()
    except Exception as exc:  # compared with the instrumented run, never ignored
        return type(exc)


def same_outcome(got, expected):
    if isinstance(expected, type):
        assert got is expected, f"instrumented raised/returned {got!r}, uninstrumented raised {expected.__name__}"
    else:
        assert isinstance(got, torch.Tensor), got
        assert torch.equal(got, expected)


def assert_sane(span):
    values = span.attributes
    assert ERROR not in values, values[ERROR]
    for key, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        assert all(not isinstance(v, float) or math.isfinite(v) for v in items), key
    for key in UNIT_INTERVAL:
        if key in values:
            assert 0.0 <= values[key] <= 1.0, key
    for event in span.events:
        for key, value in event.attributes.items():
            assert not isinstance(value, float) or math.isfinite(value), (event.name, key)


def run_both(instrument, telemetry, call, **settings):
    expected = outcome(call)
    instrument(**settings)
    got = outcome(call)
    same_outcome(got, expected)
    span = telemetry.only_span()
    assert_sane(span)
    if isinstance(expected, type):
        assert span.attributes["error.type"].endswith(expected.__name__)
    return got, span


# -- non-finite logits -----------------------------------------------------------------------


def corrupt_logits(model, how: str):
    """A host-side forward hook on the output head, as a buggy or quantised model would produce."""

    def hook(module, args, output):
        output = output.clone()
        if how == "nan":
            output[:, -1, 5] = math.nan
        elif how == "inf":
            output[:, -1, 6] = math.inf
        elif how == "-inf":
            output[:, -1, 7:20] = -math.inf
        else:
            output[:] = math.nan
        return output

    return model.lm_head.register_forward_hook(hook)


NON_FINITE_CASES = [("nan", False), ("inf", False), ("-inf", True), ("all nan", False), ("all nan", True)]


@pytest.mark.parametrize("how, do_sample", NON_FINITE_CASES)
@pytest.mark.parametrize("mode", ["summary", "full"])
def test_non_finite_logits(telemetry, instrument, how, do_sample, mode):
    model = build_llama()
    handle = corrupt_logits(model, how)

    def call():
        torch.manual_seed(0)
        return model.generate(prompt_ids(), max_new_tokens=5, do_sample=do_sample)

    try:
        got, span = run_both(instrument, telemetry, call, capture_mode=mode)
    finally:
        handle.remove()
    if isinstance(got, torch.Tensor) and how in ("nan", "all nan"):
        assert span.attributes["corevital.health.nan_detected"] is True
        assert span.attributes["corevital.risk.score"] == 1.0
    if isinstance(got, torch.Tensor) and how == "inf":
        assert span.attributes["corevital.health.inf_detected"] is True


# -- degenerate prompts and lengths ------------------------------------------------------------


def test_empty_prompt(telemetry, instrument, models):
    model = models["gpt2"]
    run_both(instrument, telemetry, lambda: model.generate(torch.empty((1, 0), dtype=torch.long), max_new_tokens=3))


def test_prompt_of_padding_only(telemetry, instrument, models):
    model = models["llama"]
    pad = model.generation_config.pad_token_id
    ids = torch.full((2, 5), pad)
    mask = torch.zeros_like(ids)
    got, span = run_both(
        instrument, telemetry, lambda: model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    )
    assert span.attributes["gen_ai.usage.input_tokens"] == 0


def test_max_new_tokens_zero(telemetry, instrument, models):
    model = models["llama"]
    run_both(instrument, telemetry, lambda: model.generate(prompt_ids(), max_new_tokens=0))


def test_max_new_tokens_negative(telemetry, instrument, models):
    model = models["llama"]
    run_both(instrument, telemetry, lambda: model.generate(prompt_ids(), max_new_tokens=-1))


@pytest.mark.parametrize("mode", ["summary", "full"])
def test_very_long_prompt(telemetry, instrument, models, mode):
    model = models["gpt2"]
    ids = prompt_ids(length=1000, seed=9)
    got, span = run_both(
        instrument, telemetry, lambda: model.generate(ids, max_new_tokens=3, do_sample=False), capture_mode=mode
    )
    assert span.attributes["gen_ai.usage.input_tokens"] == 1000


def test_explicit_none_eos_is_honoured_as_generate_honours_it(telemetry, instrument, models):
    """eos_token_id=None in the call disables the model's EOS: the span must count every token."""
    model = models["llama"]
    got, span = run_both(
        instrument, telemetry,
        lambda: model.generate(prompt_ids(), max_new_tokens=5, do_sample=False, eos_token_id=None),
    )
    assert model.generation_config.eos_token_id in got[0, -5:].tolist()  # the config's EOS was generated, not obeyed
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
    assert span.attributes["gen_ai.response.finish_reasons"] == ("length",)


def test_prompt_longer_than_the_model_allows(telemetry, instrument, models):
    model = models["gpt2"]
    ids = prompt_ids(length=1030, seed=9)  # n_positions is 1024: generate's own error must come through
    run_both(instrument, telemetry, lambda: model.generate(ids, max_new_tokens=3, do_sample=False))


# -- model shapes, attention, precision ----------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 48])
def test_extreme_depths(telemetry, instrument, layers):
    model = build_llama(layers=layers)
    hooks = probe_count(model)
    got, span = run_both(
        instrument, telemetry, lambda: model.generate(prompt_ids(), max_new_tokens=4, do_sample=False),
        capture_mode="full",
    )
    assert all(0 <= layer < layers for layer in span.attributes["corevital.layers.blamed"])
    assert "corevital.risk.score" in span.attributes
    assert probe_count(model) == hooks


def test_model_without_attention(telemetry, instrument):
    """A state-space model (Mamba): no attention to observe, the rest is still captured."""
    torch.manual_seed(0)
    config = MambaConfig(
        vocab_size=VOCAB, hidden_size=32, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=2,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = MambaForCausalLM(config).eval()
    got, span = run_both(instrument, telemetry, lambda: model.generate(prompt_ids(), max_new_tokens=4, do_sample=False))
    values = span.attributes
    assert values[UNAVAILABLE] == "no attention modules found in the decoder layers"
    assert "corevital.risk.score" in values and "corevital.logits.entropy.mean" in values


def test_attention_function_registered_after_instrument(telemetry, instrument):
    """A custom attention implementation registered after instrument() is probed like the built-in
    ones (the registry probe is placed per call), and generate is untouched."""
    model = build_llama()

    def custom_attention(*args, **kwargs):
        return sdpa_attention_forward(*args, **kwargs)

    expected = model.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    instrument(capture_mode="full")
    AttentionInterface.register("reliability_custom", custom_attention)
    try:
        model.config._attn_implementation = "reliability_custom"
        got = model.generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    finally:
        AttentionInterface._global_mapping.pop("reliability_custom", None)
    assert torch.equal(got, expected)
    span = telemetry.only_span()
    assert_sane(span)
    assert "corevital.risk.score" in span.attributes
    assert UNAVAILABLE not in span.attributes


def test_observed_attention_has_no_unavailable_reason(telemetry, instrument, models):
    """Control for the two tests above: sdpa attention is observed, and nothing says otherwise."""
    instrument()
    models["llama"].generate(prompt_ids(), max_new_tokens=4, do_sample=False)
    assert UNAVAILABLE not in telemetry.only_span().attributes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(telemetry, instrument, dtype):
    model = build_llama().to(dtype)
    got, span = run_both(
        instrument, telemetry, lambda: model.generate(prompt_ids(), max_new_tokens=4, do_sample=False),
        capture_mode="full",
    )
    if isinstance(got, torch.Tensor):
        assert "corevital.logits.entropy.mean" in span.attributes


# -- settings ----------------------------------------------------------------------------------

BAD_ENV_VALUES = {
    "capture_mode": "verbose",
    "risk_threshold": "1.5",
    "max_step_events": "0",
    "payload_max_bytes": "lots",
    "attention_every": "-3",
    "live_every": "0",
    "fused_attention": "sometimes",
    "capture_message_content": "maybe",
    "profile_overrides": '{"no_such_key": 1}',
    "profile": "/no/such/profile.json",
}


@pytest.mark.parametrize("name", sorted(_OPTIONS))
def test_invalid_env_value_names_the_variable_and_keeps_the_default(
    telemetry, instrument, models, monkeypatch, caplog, name
):
    variable, bad = _OPTIONS[name].env, BAD_ENV_VALUES[name]
    monkeypatch.setenv(variable, bad)
    with caplog.at_level(logging.WARNING):
        assert getattr(Settings.resolve(), name) == getattr(Settings(), name)
        instrument()
    messages = [r.getMessage() for r in our_warnings(caplog) if variable in r.getMessage()]
    assert len(messages) == 2, messages  # once for resolve(), once for instrument()
    assert bad in messages[0] and "default" in messages[0]
    models["gpt2"].generate(prompt_ids(), max_new_tokens=2)
    assert_sane(telemetry.only_span())


def test_every_option_has_a_bad_value_here():
    assert set(BAD_ENV_VALUES) == set(_OPTIONS)


@pytest.mark.parametrize("given, expected", [(False, False), (True, True), ("false", False), ("TRUE", True), ("0", False)])
def test_the_fused_attention_switch_takes_a_boolean_or_its_spelling(given, expected):
    assert Settings.resolve({"fused_attention": given}, environ={}).fused_attention is expected


def test_the_fused_attention_switch_refuses_other_values_naming_the_setting():
    with pytest.raises(ValueError, match="fused_attention.*true or false"):
        Settings.resolve({"fused_attention": "sometimes"}, environ={})
