"""Eight threads generating at once, on one shared model and on a model each.

Every call runs under a parent span of its own, so its CoreVital span can be found by
parentage and checked against that call's own input: distinct prompt lengths and lengths
of output give distinct token counts and prompt hashes, and the logit entropy must equal
what the same call measures when it runs alone. No hooks are left on any model, and 200
calls leave no per-call state behind.
"""

from __future__ import annotations

import gc
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from opentelemetry_instrumentation_corevital.analysis import prompt_hash
from opentelemetry_instrumentation_corevital.capture.buffers import StepBuffers
from opentelemetry_instrumentation_corevital.capture.session import CaptureSession, active_session
from tests.conftest import build_gpt2, build_llama, prompt_ids
from tests.support.reliability import probe_count, no_eos

THREADS = 8
CALLS_PER_THREAD = 4
JOIN_SECONDS = 120
ENTROPY_MEAN = "corevital.logits.entropy.mean"


class Job:
    """One thread's calls: its own prompt length and its own number of new tokens."""

    def __init__(self, index: int, model):
        self.index = index
        self.model = model
        self.ids = prompt_ids(length=3 + index, seed=100 + index)
        self.max_new_tokens = 2 + index
        self.outputs: list[torch.Tensor] = []
        self.parent_span_ids: list[int] = []
        self.error: BaseException | None = None

    def generate(self):
        return self.model.generate(self.ids, max_new_tokens=self.max_new_tokens, do_sample=False, **no_eos(self.model))

    def run(self, tracer, barrier: threading.Barrier, calls: int):
        try:
            barrier.wait()
            for call in range(calls):
                with tracer.start_as_current_span(f"job {self.index} call {call}") as parent:
                    self.parent_span_ids.append(parent.get_span_context().span_id)
                    self.outputs.append(self.generate())
        except BaseException as exc:  # surfaced by the test, never swallowed
            self.error = exc


def run_threads(jobs, tracer, calls: int = CALLS_PER_THREAD):
    barrier = threading.Barrier(len(jobs))
    threads = [threading.Thread(target=job.run, args=(tracer, barrier, calls), daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a generating thread hung"
    for job in jobs:
        assert job.error is None, repr(job.error)


def alone(telemetry, job) -> tuple[torch.Tensor, dict]:
    """The call run alone, before any thread starts: its output and its span attributes."""
    output = job.generate()
    return output, dict(telemetry.finished()[-1].attributes)


@pytest.mark.parametrize("sharing", ["shared model", "model per thread"])
def test_every_concurrent_call_gets_exactly_its_own_span(telemetry, instrument, sharing):
    if sharing == "shared model":
        shared = build_llama()
        models = [shared] * THREADS
    else:
        models = [build_llama() if i % 2 else build_gpt2() for i in range(THREADS)]
    distinct = {id(m): m for m in models}.values()
    hooks_before = {id(m): probe_count(m) for m in distinct}
    jobs = [Job(i, models[i]) for i in range(THREADS)]
    instrument()
    expected = [alone(telemetry, job) for job in jobs]
    assert len({attributes["corevital.prompt.hash"] for _, attributes in expected}) == THREADS  # tell-apart
    telemetry.spans.clear()

    run_threads(jobs, telemetry.tracer_provider.get_tracer("reliability"))

    spans = telemetry.finished()
    corevital = [s for s in spans if s.name.startswith("text_completion")]
    assert len(corevital) == THREADS * CALLS_PER_THREAD
    by_parent: dict[int, list] = {}
    for span in corevital:
        by_parent.setdefault(span.parent.span_id, []).append(span)
    for job, (expected_output, expected_attributes) in zip(jobs, expected):
        model_id = expected_attributes["gen_ai.request.model"]
        for parent_id, output in zip(job.parent_span_ids, job.outputs):
            assert torch.equal(output, expected_output)
            (span,) = by_parent[parent_id]  # exactly one span per call
            values = span.attributes
            assert "corevital.error" not in values
            assert values["gen_ai.usage.input_tokens"] == job.ids.shape[1]
            assert values["gen_ai.usage.output_tokens"] == job.max_new_tokens
            assert values["corevital.prompt.hash"] == prompt_hash(job.ids[0].tolist(), model_id)
            assert values[ENTROPY_MEAN] == pytest.approx(expected_attributes[ENTROPY_MEAN], rel=1e-4, abs=1e-5)
            assert values["corevital.fingerprint"] == pytest.approx(
                expected_attributes["corevital.fingerprint"], rel=1e-3, abs=1e-4
            )
    assert {id(m): probe_count(m) for m in distinct} == hooks_before
    assert active_session() is None


def _live(kind) -> int:
    with warnings.catch_warnings():  # isinstance on torch's deprecated aliases warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


def test_no_memory_growth_across_200_calls(telemetry, instrument):
    """200 calls (8 threads x 25) after a warm-up: no session, buffer or tensor left, Python heap flat."""
    model = build_gpt2()
    hooks_before = probe_count(model)
    jobs = [Job(i % 2, model) for i in range(THREADS)]  # short calls: this test counts, it does not time
    instrument()
    tracer = telemetry.tracer_provider.get_tracer("reliability")

    def calls(per_thread):
        run_threads(jobs, tracer, per_thread)
        assert len(telemetry.finished()) == 2 * THREADS * per_thread  # parent + CoreVital span per call
        telemetry.spans.clear()
        telemetry.logs.clear()  # the log-based evaluation events
        for job in jobs:
            job.outputs.clear()
            job.parent_span_ids.clear()
        gc.collect()

    calls(CALLS_PER_THREAD)  # warm-up: lazy imports, caches, allocator pools
    tensors_before, arrays_before = _live(torch.Tensor), _live(np.ndarray)
    blocks_before = sys.getallocatedblocks()
    calls(200 // THREADS)
    blocks_growth = sys.getallocatedblocks() - blocks_before
    assert _live(CaptureSession) == 0
    assert _live(StepBuffers) == 0
    assert _live(torch.Tensor) <= tensors_before
    assert _live(np.ndarray) <= arrays_before
    # one leaked call (its span, summaries, session) holds hundreds of blocks: 200 would pass 20,000
    assert blocks_growth < 2_000, blocks_growth
    assert probe_count(model) == hooks_before
