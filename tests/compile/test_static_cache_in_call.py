"""A static cache asked for in the call itself: transformers decides to compile inside generate,
and the session drops its forward probes before the first forward (its own module, so that no
other module's compiled model shares Dynamo's caches with it)."""

import torch
from transformers import CompileConfig

from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from tests.support.compile import LOGITS_ONLY, compilations
from tests.conftest import build_llama, prompt_ids


def test_static_cache_asked_for_in_the_call(telemetry, instrument):
    torch._dynamo.reset()
    model = build_llama(layers=2)
    config = CompileConfig(backend="eager", fullgraph=True)
    config._compile_all_devices = True
    model.generation_config.compile_config = config
    ids = prompt_ids(length=8)

    def call():
        return model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static")

    expected = call()
    before = compilations()
    instrument()
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.equal(call(), expected) and torch.equal(call(), expected)
    assert compilations() == before
    for span in telemetry.finished():
        assert span.attributes[attrs.CAPTURE_UNAVAILABLE_REASON].endswith(": " + LOGITS_ONLY)
        assert attrs.ERROR not in span.attributes and attrs.LOGITS_ENTROPY_MEAN in span.attributes
    torch._dynamo.reset()
