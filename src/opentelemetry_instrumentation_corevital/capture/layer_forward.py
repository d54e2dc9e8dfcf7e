"""Layer-state probes: each decoder layer's output, as the next layer receives it.

Every layer of every step passes here, so the probe's own cost is what matters. A forward hook
sends each call of the layer through torch's hooked call path, which costs the host about 6k
instructions per layer call more than a pass-through `forward` on the instance, called by
Module.__call__'s fast path (benchmarks/RESULTS.md, "Eighth round"). So a layer gets that
wrapper, unless forward hooks are already on it (or global ones): they may rewrite the output
(steering, patching), and they run after `forward`, so there the probe is a forward hook that
runs after them. One probe per layer, shared by every capture session that probes the layer,
is in place while at least one does; it hands the output to the calling thread's active
session when that session records this step's layers, and does nothing otherwise (another
thread, no session, or a Dynamo trace: it checks for a compile first and then reads no Python
state of ours).

Invariant: removing the last holder takes the probe off and puts back exactly the `forward`
attribute that was there before (accelerate keeps its offload hook there), and only while ours
is still in place.
"""

from __future__ import annotations

import threading

from torch import nn
from torch.nn.modules import module as module_hooks

from .session import _is_compiling, active_session

_ABSENT = object()  # the layer had no instance attribute `forward` (its class's method was used)


class _Installed:
    __slots__ = ("holders", "wrapper", "previous", "hook")

    def __init__(self, wrapper=None, previous=_ABSENT, hook=None):
        self.holders, self.wrapper, self.previous, self.hook = 1, wrapper, previous, hook


# id(layer) -> its probe while some session holds it; the layer itself is kept alive by the session's layout
_INSTALLED: dict[int, _Installed] = {}
_lock = threading.Lock()


def _hand_over(layer: nn.Module, index: int, args, kwargs, output) -> None:
    if _is_compiling():
        return
    session = active_session()
    if session is not None and session.recording_layers:
        try:  # a fault here is the session's, never the caller's
            session.observe_layer(layer, index, args, kwargs, output)
        except Exception as exc:
            session.record_fault("hidden", exc)


def _observing(layer: nn.Module, index: int, forward):
    def observed(*args, **kwargs):
        output = forward(*args, **kwargs)
        _hand_over(layer, index, args, kwargs, output)
        return output

    observed.__wrapped__ = forward
    return observed


def _observing_after_hooks(index: int):
    def observe(layer, args, *kwargs_and_output):
        # a thread running the layer while the hook is being registered may call it without
        # kwargs: torch reads the with_kwargs flag apart from the hook itself
        kwargs, output = kwargs_and_output if len(kwargs_and_output) == 2 else ({}, kwargs_and_output[0])
        _hand_over(layer, index, args, kwargs, output)

    return observe


def _has_forward_hooks(layer: nn.Module) -> bool:
    return bool(layer._forward_hooks or module_hooks._global_forward_hooks)


def acquire(layers: list[nn.Module]) -> None:
    """Put the probe on each layer (index = its position in `layers`), or count one more holder."""
    with _lock:
        for index, layer in enumerate(layers):
            installed = _INSTALLED.get(id(layer))
            if installed is not None:
                installed.holders += 1
            elif _has_forward_hooks(layer):
                # the output the next layer receives is the one those hooks return: look after them
                hook = layer.register_forward_hook(_observing_after_hooks(index), with_kwargs=True)
                _INSTALLED[id(layer)] = _Installed(hook=hook)
            else:
                previous = layer.__dict__.get("forward", _ABSENT)
                wrapper = _observing(layer, index, layer.forward)
                layer.__dict__["forward"] = wrapper
                _INSTALLED[id(layer)] = _Installed(wrapper, previous)


def release(layers: list[nn.Module]) -> None:
    """One holder fewer on each layer; the last one takes the probe off and puts the layer's previous `forward` back."""
    with _lock:
        for layer in layers:
            installed = _INSTALLED.get(id(layer))
            if installed is None:
                continue
            installed.holders -= 1
            if installed.holders:
                continue
            del _INSTALLED[id(layer)]
            if installed.hook is not None:
                installed.hook.remove()
            elif layer.__dict__.get("forward") is not installed.wrapper:
                continue  # somebody replaced ours since: theirs stays
            elif installed.previous is _ABSENT:
                del layer.__dict__["forward"]
            else:
                layer.__dict__["forward"] = installed.previous
