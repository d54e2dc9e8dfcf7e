"""Where CoreVital meets generate's decoding loop, always outside any compiled region.

While instrumented, three methods of transformers' GenerationMixin are wrapped once:

- `_get_logits_processor`: the list it returns becomes a `LogitsTap`, which shows the active
  session the logits before any processor runs, so every decoding strategy (sampling, greedy,
  beam search, assisted) hands it the logits generate itself samples from (after a model's
  softcap or logit scale, before temperature, top-k, top-p), unchanged;
- `_valid_auto_compile_criteria`: when transformers is about to compile the forward for a
  static cache, the session drops its in-forward probes before the first forward runs;
- `_has_unfinished_sequences`: every decoding strategy asks it at the head of each turn of
  its loop; the second turn begins once the first token was chosen and handed to the
  caller's stopping criteria and streamer, which is when the session's clock marks it.

With no session of the calling thread generating with that model, they are pass-throughs.
They are installed once (by instrument() or the first capture session) and removed by
uninstrument(), never per call: replacing a class attribute while another thread runs a
compiled forward makes Dynamo recompile it.
"""

from __future__ import annotations

import threading

from transformers import LogitsProcessorList
from wrapt import FunctionWrapper, wrap_function_wrapper

from .compiled import AUTO_COMPILE
from .session import active_session

_MODULE = "transformers.generation.utils"
_installed = False


class LogitsTap(LogitsProcessorList):
    """generate's logits processors, with a capture session shown each step's logits before
    them; never changes the logits. (A processor inside the list would cost an
    inspect.signature per step: LogitsProcessorList.__call__ checks each one's parameters.)"""

    def __init__(self, processors, session):
        super().__init__(processors)
        self.session = session

    def __call__(self, input_ids, scores, **kwargs):
        self.session.observe_logits(input_ids, scores)
        return super().__call__(input_ids, scores, **kwargs)


def _tap_processors(wrapped, instance, args, kwargs):
    processors = wrapped(*args, **kwargs)
    session = active_session()
    if session is not None and session.model is instance:
        return LogitsTap(processors, session)
    return processors


def _watch_auto_compile(wrapped, instance, args, kwargs):
    compiles = wrapped(*args, **kwargs)
    session = active_session()
    if compiles and session is not None and session.model is instance:
        session.forward_unprobed(AUTO_COMPILE)
    return compiles


def _count_loop_turn(wrapped, instance, args, kwargs):
    goes_on = wrapped(*args, **kwargs)
    session = active_session()
    if session is not None and session.model is instance:
        session.loop_turn(goes_on)
    return goes_on


_WRAPPERS = {
    "_get_logits_processor": _tap_processors,
    "_valid_auto_compile_criteria": _watch_auto_compile,
    "_has_unfinished_sequences": _count_loop_turn,
}
_lock = threading.Lock()


def install() -> None:
    global _installed
    with _lock:
        if not _installed:
            for name, wrapper in _WRAPPERS.items():
                wrap_function_wrapper(_MODULE, f"GenerationMixin.{name}", wrapper)
            _installed = True


def uninstall() -> None:
    global _installed
    from transformers.generation.utils import GenerationMixin

    with _lock:
        for name, wrapper in _WRAPPERS.items():
            method = GenerationMixin.__dict__.get(name)
            if isinstance(method, FunctionWrapper) and method._self_wrapper is wrapper:
                setattr(GenerationMixin, name, method.__wrapped__)
        _installed = False
