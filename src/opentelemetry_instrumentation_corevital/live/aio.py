"""Step health for asyncio apps: generate in a worker thread, steps as an async iterator.

    stream = stream_health(model.generate, **inputs, max_new_tokens=64)
    async for step in stream:          # each StepSummary as soon as its step is decoded
        if step.risk > 0.9: ...
    output = await stream.output()     # what generate returned (or its exception)
    stream.run.narrative               # the finished call's health, as with observe()

The event loop never blocks: the steps cross from the generating thread with
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, Callable

from ..rag import RagContext
from .observe import Run, observe
from .step import StepSummary

_END = object()


class HealthStream:
    """Runs `generate(*args, **kwargs)` in a thread inside `observe()`; iterate it for the steps."""

    def __init__(self, generate: Callable, args: tuple, kwargs: dict, rag: RagContext | None = None):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._output: asyncio.Future = self._loop.create_future()
        self.run: Run | None = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._generate, generate, args, kwargs, rag), daemon=True,
            name="corevital-generate",
        )
        self._thread.start()

    def _generate(self, generate: Callable, args: tuple, kwargs: dict, rag: RagContext | None) -> None:
        outcome: tuple[bool, Any]
        try:
            with observe(on_step=self._deliver, rag=rag) as run:
                self.run = run
                outcome = (True, generate(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine, not lost in the thread
            outcome = (False, exc)
        self._loop.call_soon_threadsafe(self._settle, outcome)

    def _deliver(self, step: StepSummary) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, step)

    def _settle(self, outcome: tuple[bool, Any]) -> None:
        ok, value = outcome
        if ok:
            self._output.set_result(value)
        else:
            self._output.set_exception(value)
        self._queue.put_nowait(_END)

    def __aiter__(self):
        return self

    async def __anext__(self) -> StepSummary:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later iterations end too
            if self._output.exception() is not None:
                raise self._output.exception()
            raise StopAsyncIteration
        return item

    async def output(self):
        """What generate returned; raises what generate raised."""
        return await self._output

    @property
    def done(self) -> bool:
        return self._output.done()


def stream_health(generate: Callable, *args, rag: RagContext | None = None, **kwargs) -> HealthStream:
    """Start `generate(*args, **kwargs)` (e.g. `model.generate`) in a worker thread; call from a coroutine."""
    return HealthStream(generate, args, kwargs, rag)
