"""When did the first generated token exist, measured without a streamer or a host sync.

The session marks the clock when generate's decoding loop starts its second turn: the first
token was chosen and handed to the caller's stopping criteria and streamer, and the next
forward has not started. The mark is taken in the loop, outside any compiled region, so it
holds under torch.compile and CUDA graphs too. On CUDA the
event is timed on the device and read once at the end; on the CPU execution is synchronous
and the host clock is exact.
"""

from __future__ import annotations

import time

import torch


class FirstTokenClock:
    def __init__(self):
        # wall-clock ns at which each forward pass started (pass s+1 starts once step s's token
        # exists); on CUDA this is when the host launched the pass, which may run ahead of the device
        self.step_starts_ns: list[int] = []
        self._start_host = 0.0
        self._first_host: float | None = None
        self._start_event = None
        self._first_event = None

    def start(self, device: torch.device, started: float | None = None) -> None:
        self._start_host = time.perf_counter() if started is None else started
        if device.type == "cuda":
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()

    def mark_first_token(self) -> None:
        if self._start_event is not None:
            self._first_event = torch.cuda.Event(enable_timing=True)
            self._first_event.record()
        else:
            self._first_host = time.perf_counter()

    def mark_step(self) -> None:
        self.step_starts_ns.append(time.time_ns())

    def token_times_ns(self, end_ns: int) -> list[int]:
        """When each step's token existed: the start of the next pass; `end_ns` for the last step."""
        return [*self.step_starts_ns[1:], end_ns]

    def first_token_seconds(self, total_seconds: float) -> float:
        """Seconds to the first token; the whole call when only one step ran."""
        if self._first_event is not None:
            self._first_event.synchronize()
            return self._start_event.elapsed_time(self._first_event) / 1000.0
        if self._first_host is not None:
            return self._first_host - self._start_host
        return total_seconds
