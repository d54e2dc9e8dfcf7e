"""uninstrument() leaves nothing behind: generate, the attention registry, hooks, threads,
sessions and the active-session context are as they were before instrument(), including
when it is called while another thread is in the middle of a generate call. (Interpreter
exit with instrumentation still active is covered by test_exporter_outage's app.)"""

from __future__ import annotations

import gc
import threading
import warnings

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.utils import GenerationMixin
from transformers.modeling_utils import AttentionInterface

from opentelemetry_instrumentation_corevital.capture.buffers import StepBuffers
from opentelemetry_instrumentation_corevital.capture.session import CaptureSession, active_session
from tests.conftest import build_gpt2, build_llama, prompt_ids
from tests.support.reliability import probe_count, no_eos

WAIT_S = 60


def snapshot(models) -> dict:
    return {
        "generate": GenerationMixin.__dict__["generate"],
        "attention registry": dict(AttentionInterface._global_mapping),
        "hooks": [probe_count(model) for model in models],
        "threads": set(threading.enumerate()),
        "active session": active_session(),
    }


def live(kind) -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated aliases warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


@pytest.mark.parametrize("mode", ["off", "summary", "full", "on_risk"])
def test_uninstrument_leaves_nothing_behind(telemetry, instrument, mode):
    models = [build_gpt2(), build_llama(), build_llama(attn_implementation="eager")]
    before = snapshot(models)
    instrumentor = instrument(capture_mode=mode)
    for model in models:
        model.generate(prompt_ids(), max_new_tokens=3)
        model.generate(prompt_ids(batch=2), max_new_tokens=3, num_beams=2)
    with pytest.raises(ValueError):
        models[0].generate(prompt_ids(), max_new_tokens=-1)  # a failing call detaches too
    instrumentor.uninstrument()
    assert snapshot(models) == before
    assert live(CaptureSession) == 0 and live(StepBuffers) == 0
    spans = len(telemetry.finished())
    models[0].generate(prompt_ids(), max_new_tokens=2)
    assert len(telemetry.finished()) == spans  # no longer traced


class PauseAtSecondStep(StoppingCriteria):
    def __init__(self):
        self.inside, self.go = threading.Event(), threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        if not self.inside.is_set():
            self.inside.set()
            assert self.go.wait(WAIT_S)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_uninstrument_while_a_call_is_in_flight(telemetry, instrument):
    model = build_llama()
    expected = model.generate(prompt_ids(), max_new_tokens=5, do_sample=False, **no_eos(model))
    before = snapshot([model])
    instrumentor = instrument()
    pause = PauseAtSecondStep()
    results = {}

    def work():
        results["output"] = model.generate(
            prompt_ids(), max_new_tokens=5, do_sample=False, stopping_criteria=StoppingCriteriaList([pause]),
            **no_eos(model),
        )

    thread = threading.Thread(target=work)
    thread.start()
    assert pause.inside.wait(WAIT_S)
    instrumentor.uninstrument()
    pause.go.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert torch.equal(results["output"], expected)
    assert snapshot([model]) == before
    span = telemetry.only_span()  # the in-flight call still ends its span
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
