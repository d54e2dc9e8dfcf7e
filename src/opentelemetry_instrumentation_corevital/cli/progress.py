"""A progress indicator on stderr: a spinner with elapsed time on a terminal, plain lines otherwise."""

from __future__ import annotations

import itertools
import sys
import threading
import time

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    """`with Progress("Loading model") as p: ... p.update("12/40 tokens")`."""

    def __init__(self, label: str, stream=None, enabled: bool = True):
        self.label = label
        self.detail = ""
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.animated = enabled and self.stream.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> "Progress":
        self._started = time.monotonic()
        if self.animated:
            self._thread = threading.Thread(target=self._spin, name="corevital-progress", daemon=True)
            self._thread.start()
        elif self.enabled:
            print(f"{self.label}...", file=self.stream, flush=True)
        return self

    def update(self, detail: str) -> None:
        self.detail = detail

    def __exit__(self, kind, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")
        if self.enabled:
            outcome = "done" if kind is None else "failed"
            detail = f", {self.detail}" if self.detail and kind is None else ""
            print(f"{self.label}: {outcome} in {time.monotonic() - self._started:.1f} s{detail}", file=self.stream, flush=True)

    def _spin(self) -> None:
        for frame in itertools.cycle(_FRAMES):
            if self._stop.wait(0.1):
                return
            detail = f"  {self.detail}" if self.detail else ""
            elapsed = time.monotonic() - self._started
            self.stream.write(f"\r\033[K{frame} {self.label}  {elapsed:.1f} s{detail}")
            self.stream.flush()


class TokenCounter:
    """A transformers streamer (put/end protocol) that reports generated tokens to a Progress."""

    def __init__(self, progress: Progress, max_new_tokens: int):
        self.progress = progress
        self.max_new_tokens = max_new_tokens
        self.count = 0
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate first passes the prompt ids
            self._prompt_seen = True
            return
        self.count += 1
        self.progress.update(f"{self.count}/{self.max_new_tokens} tokens")

    def end(self) -> None:
        pass
