"""Layer-state probes: each decoder layer's output, seen through a pass-through `forward` on the layer.

Every layer of every step passes here, so the probe's own cost is what matters. A forward hook
sends each call of the layer through torch's hooked call path, which costs the host about
twice a pass-through wrapper's instructions (benchmarks/RESULTS.md, "Eighth round"); an
attribute `forward` on the instance is called by Module.__call__'s fast path. One wrapper per
layer, shared by every capture session that probes the layer, is in place while at least one
does; it hands the output to the calling thread's active session when that session records
this step's layers, and is a plain pass-through otherwise (another thread, no session, or a
Dynamo trace: it checks for a compile first and then reads no Python state of ours).

Invariant: removing the last holder puts back exactly the attribute that was there before
(accelerate keeps its offload hook there), and only while ours is still in place.
"""

from __future__ import annotations

import threading

from torch import nn

from .session import _is_compiling, active_session

_ABSENT = object()  # the layer had no instance attribute `forward` (its class's method was used)


class _Installed:
    __slots__ = ("holders", "wrapper", "previous")

    def __init__(self, wrapper, previous):
        self.holders, self.wrapper, self.previous = 1, wrapper, previous


# id(layer) -> its wrapper while some session holds it; the layer itself is kept alive by the session's layout
_INSTALLED: dict[int, _Installed] = {}
_lock = threading.Lock()


def _observing(layer: nn.Module, index: int, forward):
    def observed(*args, **kwargs):
        output = forward(*args, **kwargs)
        if not _is_compiling():
            session = active_session()
            if session is not None and session.recording_layers:
                try:  # a fault here is the session's, never the caller's
                    session.observe_layer(layer, index, args, kwargs, output)
                except Exception as exc:
                    session.record_fault("hidden", exc)
        return output

    observed.__wrapped__ = forward
    return observed


def acquire(layers: list[nn.Module]) -> None:
    """Put the wrapper on each layer (index = its position in `layers`), or count one more holder."""
    with _lock:
        for index, layer in enumerate(layers):
            installed = _INSTALLED.get(id(layer))
            if installed is not None:
                installed.holders += 1
                continue
            previous = layer.__dict__.get("forward", _ABSENT)
            wrapper = _observing(layer, index, layer.forward)
            layer.__dict__["forward"] = wrapper
            _INSTALLED[id(layer)] = _Installed(wrapper, previous)


def release(layers: list[nn.Module]) -> None:
    """One holder fewer on each layer; the last one puts the layer's previous `forward` back."""
    with _lock:
        for layer in layers:
            installed = _INSTALLED.get(id(layer))
            if installed is None:
                continue
            installed.holders -= 1
            if installed.holders:
                continue
            del _INSTALLED[id(layer)]
            if layer.__dict__.get("forward") is not installed.wrapper:
                continue  # somebody replaced ours since: theirs stays
            if installed.previous is _ABSENT:
                del layer.__dict__["forward"]
            else:
                layer.__dict__["forward"] = installed.previous
