"""Health while text streams: TextIteratorStreamer in a thread, and the asyncio step stream."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from transformers import LogitsProcessor, TextIteratorStreamer

from opentelemetry_instrumentation_corevital import observe, stream_health

from .conftest import FLUENT_START_TOKEN, LOOP_START_TOKEN, prompt_ending_in

NEW_TOKENS = 16


def test_text_iterator_streamer_in_a_thread_gets_health_per_step(successor_model, word_tokenizer, instrument):
    instrument()
    streamer = TextIteratorStreamer(word_tokenizer, skip_prompt=True)
    chunks, steps_when_received = [], []
    with observe(on_step=lambda s: None) as run:
        worker = run.thread(
            successor_model.generate, prompt_ending_in(FLUENT_START_TOKEN),
            max_new_tokens=NEW_TOKENS, do_sample=False, streamer=streamer,
        )
        for text in streamer:
            chunks.append(text)
            steps_when_received.append(len(run.steps))
        worker.join(timeout=60)

    words = "".join(chunks).split()
    assert words == [f"w{FLUENT_START_TOKEN + 1 + i}" for i in range(NEW_TOKENS)]
    assert [s.token_id for s in run.steps] == list(range(FLUENT_START_TOKEN + 1, FLUENT_START_TOKEN + 1 + NEW_TOKENS))
    # every streamed word already had its step summary when the text arrived
    received = 0
    for chunk, available in zip(chunks, steps_when_received):
        received += len(chunk.split())
        assert available >= received
    assert run.risk is not None


class WaitForConsumer(LogitsProcessor):
    """Holds step 1 until the async consumer has received step 0 (proves delivery is live)."""

    def __init__(self):
        self.step0_received = threading.Event()
        self.calls = 0
        self.waited_in_vain = False

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == 2 and not self.step0_received.wait(timeout=30):
            self.waited_in_vain = True
        return scores


def test_async_stream_delivers_steps_while_generating(successor_model, telemetry, instrument):
    instrument()
    gate = WaitForConsumer()

    async def consume():
        stream = stream_health(
            successor_model.generate, prompt_ending_in(LOOP_START_TOKEN), max_new_tokens=NEW_TOKENS,
            do_sample=False, logits_processor=[gate],
        )
        steps, done_at_first = [], None
        async for step in stream:
            if not steps:
                done_at_first = stream.done
                gate.step0_received.set()
            steps.append(step)
        return steps, done_at_first, await stream.output(), stream.run

    steps, done_at_first, output, run = asyncio.run(consume())
    assert done_at_first is False and not gate.waited_in_vain
    assert [s.step for s in steps] == list(range(NEW_TOKENS))
    assert [s.token_id for s in steps] == output[0, 3:].tolist()
    assert run.risk == pytest.approx(telemetry.only_span().attributes["corevital.risk.score"])


def test_async_stream_raises_what_generate_raised(successor_model, instrument):
    instrument()

    async def consume():
        stream = stream_health(successor_model.generate, torch.tensor([[5, 7, 10]]), max_new_tokens="not a number")
        with pytest.raises(Exception) as in_iteration:
            async for _ in stream:
                pass
        with pytest.raises(type(in_iteration.value)):
            await stream.output()

    asyncio.run(consume())
