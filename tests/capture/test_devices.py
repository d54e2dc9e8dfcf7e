"""Models that accelerate dispatched: offloaded weights are captured in full; a model spread over
several devices keeps its logit signals and says why the rest is missing."""

from __future__ import annotations

import pytest
import torch
from accelerate import dispatch_model
from accelerate.hooks import AlignDevicesHook

from opentelemetry_instrumentation_corevital.capture.layout import execution_devices, find_layout
from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from tests.conftest import build_llama, prompt_ids
from tests.support.compile import LOGITS_ONLY

LOGIT_ATTRIBUTES = (attrs.LOGITS_ENTROPY_MEAN, attrs.LOGITS_ENTROPY_MAX, attrs.LOGITS_SURPRISAL_MEAN, attrs.LOGITS_MARGIN_MEAN)


def corevital_attributes(span) -> dict:
    return {name: value for name, value in span.attributes.items() if name.startswith("corevital.")}


def test_weights_offloaded_to_cpu_and_disk_are_captured_as_on_one_device(tmp_path, telemetry, instrument):
    """accelerate keeps two layers on disk and loads them for each forward: every layer still
    computes on the CPU, so the capture is whole and equal to the undispatched model's."""
    ids = prompt_ids(length=8)
    instrument(capture_mode="full")
    plain = build_llama(layers=4)
    expected = plain.generate(ids, max_new_tokens=8, do_sample=False)
    offloaded = dispatch_model(
        build_llama(layers=4),  # same seed, same weights
        device_map={"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                    "model.layers.2": "disk", "model.layers.3": "cpu", "model.norm": "cpu",
                    "model.rotary_emb": "cpu", "lm_head": "cpu"},
        main_device="cpu", offload_dir=str(tmp_path),
    )
    assert offloaded.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    assert execution_devices(offloaded, find_layout(offloaded)) == ["cpu"]
    assert torch.equal(offloaded.generate(ids, max_new_tokens=8, do_sample=False), expected)
    reference, dispatched = telemetry.finished()
    assert attrs.CAPTURE_UNAVAILABLE_REASON not in dispatched.attributes
    assert attrs.ATTENTION_UNAVAILABLE_REASON not in dispatched.attributes
    expected_attributes, got = corevital_attributes(reference), corevital_attributes(dispatched)
    assert got.keys() == expected_attributes.keys()
    for name, value in expected_attributes.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("capture_mode", ["summary", "full"])
def test_layers_on_two_accelerators_keep_the_logit_signals_and_say_why(telemetry, instrument, capture_mode):
    """The second half of the layers and the head under accelerate hooks that compute on cuda:1.
    This machine has no accelerator, so the hooks only name the device (their forward is not
    wrapped) and the layers compute on the CPU: what is tested is that the session sees two
    devices before any probe goes in, and that the call keeps its logit signals, as they are
    on one device."""
    ids = prompt_ids(length=8)
    model = build_llama(layers=4)
    instrument(capture_mode=capture_mode)
    expected = model.generate(ids, max_new_tokens=8, do_sample=False)
    for layer in model.model.layers[2:]:
        layer._hf_hook = AlignDevicesHook(execution_device="cuda:1")
    model.lm_head._hf_hook = AlignDevicesHook(execution_device=torch.device("cuda:1"))
    assert execution_devices(model, find_layout(model)) == ["cpu", "cuda:1"]
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False), expected)
    one_device, two_devices = telemetry.finished()
    assert attrs.ERROR not in two_devices.attributes
    assert attrs.CAPTURE_UNAVAILABLE_REASON not in one_device.attributes
    assert two_devices.attributes[attrs.CAPTURE_UNAVAILABLE_REASON] == (
        f"the model runs on several devices (cpu, cuda:1): {LOGITS_ONLY}"
    )
    for name in LOGIT_ATTRIBUTES:
        assert two_devices.attributes[name] == pytest.approx(one_device.attributes[name], rel=1e-6), name
    assert attrs.RISK_SCORE in two_devices.attributes
