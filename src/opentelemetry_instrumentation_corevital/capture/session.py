"""One capture session per generate call: probes, device buffers, and the final host copy.

The logit signals come from the decoding loop (`decoding_loop.LogitsTap`), never from inside
the forward. On the dynamic path, probes inside the forward (hidden states, attention) are put
in place when the call starts and removed when it ends; the layer and attention probes are
shared by the sessions that hold them and hand what they see to the session active on the
calling thread only, so two threads sharing a model, or a generate nested inside another,
never mix their summaries. When the forward is compiled
(torch.compile on the model, its forward or a submodule, or transformers' automatic compile
for a static cache) no probe goes inside it: the session captures the logit signals alone and
says so in `unavailable_reason`, so the compiled code sees no hook, guard or Python state of ours.
So it does when the model computes on several devices (accelerate's device map over several
accelerators): the buffers live on the prompt's device, where generate hands over the logits.

The decoding-loop wrappers are installed by the first session (or by instrument()) and stay
until `uninstrument()`: changing transformers' classes while another thread runs a compiled
forward makes Dynamo recompile. The attention-registry probe is in place exactly while some
session probes attention, a layer's probe exactly while some session probes that layer: a
compiled forward traced while none does never sees, nor guards on, anything of ours.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import threading
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from ..summaries import RunSummaries
from . import stats
from .buffers import HostSummaries, StepBuffers, pending_bytes
from .clock import FirstTokenClock
from .compiled import auto_compiled_forward, compiled_forward, model_device
from .hashing import parents_from_full_rows
from .inputs import decoder_step_ids, forward_cache
from .layout import ModelLayout, execution_devices, find_layout
from .paths import resolve_paths
from .prompt import PromptProbe

_logger = logging.getLogger(__name__)
_ACTIVE: ContextVar["CaptureSession | None"] = ContextVar("corevital_capture_session", default=None)
# bound once: the probes here and in attention_registry ask it at every layer of every step
# (Dynamo recognises the function object, whatever name it is called by)
_is_compiling = torch.compiler.is_compiling


def active_session() -> "CaptureSession | None":
    return _ACTIVE.get()


class _SharedPatch:
    """A process-wide patch installed while at least one session holds it."""

    def __init__(self, module_name: str):
        self._module_name = module_name
        self._holders = 0
        self._lock = threading.Lock()

    def _module(self):
        return _patch_module(self._module_name)

    def acquire(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._module().install()
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._module().uninstall()


_ATTENTION_REGISTRY = _SharedPatch("attention_registry")


def _patch_module(name: str):
    # imported on use: both patch modules import this one for active_session()
    return importlib.import_module(f"{__package__}.{name}")


@dataclass(frozen=True)
class CaptureOptions:
    probes: bool = True
    attention_stride: int = 1
    fused_attention: bool = True  # on CUDA, one Triton launch reduces a step's attention (attention_kernel)
    max_steps: int = 256
    num_beams: int = 1
    eos_token_ids: tuple[int, ...] = ()
    prompt_telemetry: bool = False
    input_batch: int = 1
    collapsed_head_entropy_bits: float = 0.1
    focused_head_concentration: float = 0.9
    # bytes of logits, and of layer states, that may wait to be summarised together; None: a
    # share of the model's weights
    pending_bytes: int | None = None


class CaptureFault(Exception):
    """Raised inside a probe; carries the stage so the span can name it."""


class _FaultGuard:
    """A block whose Exception becomes the session's first fault instead of the caller's error (a
    probe must never break generation). A plain class, not a generator context manager: probes
    enter one per layer per step."""

    __slots__ = ("session", "stage")

    def __init__(self, session: "CaptureSession", stage: str):
        self.session, self.stage = session, stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        self.session.record_fault(self.stage, exc)
        return True


class CaptureSession:
    def __init__(self, model: torch.nn.Module, options: CaptureOptions):
        self.model = model
        self.options = options
        self.layout: ModelLayout | None = None
        self.buffers: StepBuffers | None = None
        self.clock = FirstTokenClock()
        self.step = -1
        self.fault: tuple[str, BaseException] | None = None
        self.attention_unavailable_reason: str | None = None
        # why some signals are missing for the whole call (a compiled forward, several devices)
        self.unavailable_reason: str | None = None
        # nobody reads the steps before the call ends but the stop rules (set by live.step)
        self.stop_inputs_only = False
        self._probing_forward = False
        # set by the forward pre-hook: the layers' states, and their attention, are recorded at this
        # step (read by the layer probes, which got this session from their own thread)
        self.recording_layers = False
        # read by the attention-registry probe, which got this session from its own thread
        self.recording_attention = False
        self._loop_turns = 0
        self._handles: list = []
        self._probed_layers: list = []  # the decoder layers whose shared layer probe this session holds
        self._restore: list = []
        self._held: list[_SharedPatch] = []
        self._pending_parents: torch.Tensor | None = None
        self.prompt: PromptProbe | None = None
        self.prompt_summaries = None
        self._prompt_ids: torch.Tensor | None = None
        self._prefill_kwargs: dict | None = None

    # -- lifecycle -------------------------------------------------------------

    @contextlib.contextmanager
    def attached(self, started: float | None = None):
        """The session's probes and shared patches in place for the block, removed on every way
        out of it. A fault while attaching is kept in `fault`; the block then runs uncaptured."""
        try:
            with self._guard("attach"):
                self.attach(started)
            yield self
        finally:
            self.detach()

    def attach(self, started: float | None = None) -> None:
        self.clock.start(model_device(self.model), started)
        _patch_module("decoding_loop").install()
        if not self.options.probes:
            return
        with self._guard("attach"):
            self.layout = find_layout(self.model)
            compiled = compiled_forward(self.model)
            if compiled is None and self.options.num_beams == 1:  # beam search never compiles the forward
                compiled = auto_compiled_forward(self.model)
            if compiled is not None:
                self.forward_unprobed(compiled)
            elif len(devices := execution_devices(self.model, self.layout)) > 1:
                self.forward_unprobed(f"the model runs on several devices ({', '.join(devices)})")
            else:
                self._attach_probes(self.layout)

    def _attach_probes(self, layout: ModelLayout) -> None:
        if not layout.decoder_layers or layout.lm_head is None:
            raise CaptureFault("no decoder layers or output embeddings found")
        self._probing_forward = True
        self._hold(_ATTENTION_REGISTRY)
        self._handles.append(self.model.register_forward_pre_hook(self._on_forward_start, with_kwargs=True))
        if self.options.num_beams > 1:
            self._handles.append(self.model.register_forward_hook(self._on_forward_end))
        _patch_module("layer_forward").acquire(layout.decoder_layers)
        self._probed_layers = list(layout.decoder_layers)
        if self.options.prompt_telemetry and layout.decoder_root is not None and not layout.is_encoder_decoder:
            self._handles.append(layout.decoder_root.register_forward_hook(self._on_decoder_output))
        self._handles.append(layout.lm_head.register_forward_hook(self._on_head_output))
        if not layout.attention_modules:
            self.attention_unavailable_reason = "no attention modules found in the decoder layers"
        elif layout.attn_implementation == "eager":
            modules = {id(m): m for layer in layout.decoder_layers for m in layer.modules()}
            for module_id in layout.attention_modules:
                hook = functools.partial(self._on_eager_attention, modules[module_id])
                self._handles.append(modules[module_id].register_forward_hook(hook))

    def forward_unprobed(self, why: str) -> None:
        """The forward runs compiled, or across devices the buffers are not on: remove the
        in-forward probes before it runs; keep the logit signals, which the decoding loop holds
        on the prompt's device."""
        with self._guard("attach"):
            self._remove_forward_probes()
            missing = "hidden-state, attention and repetition signals are not captured"
            if self.options.num_beams > 1 or self.step >= 0:
                self.layout = None  # beam bookkeeping and a half-probed call need the forward probes
                missing = "no model signals are captured"
            self.unavailable_reason = f"{why}: {missing}"
            self.attention_unavailable_reason = self.unavailable_reason

    def detach(self) -> None:
        self._remove_forward_probes()
        for patch in self._held:
            patch.release()
        self._held.clear()

    def _hold(self, patch: _SharedPatch) -> None:
        patch.acquire()
        self._held.append(patch)

    def _remove_forward_probes(self) -> None:
        self._probing_forward = self.recording_layers = self.recording_attention = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._probed_layers:
            _patch_module("layer_forward").release(self._probed_layers)
            self._probed_layers = []
        for undo in self._restore:
            undo()
        self._restore.clear()
        if _ATTENTION_REGISTRY in self._held:
            self._held.remove(_ATTENTION_REGISTRY)
            _ATTENTION_REGISTRY.release()

    @contextlib.contextmanager
    def active(self):
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    @property
    def capturing(self) -> bool:
        return self.options.probes and self.fault is None and self.layout is not None

    def _owns_call(self) -> bool:
        return _ACTIVE.get() is self

    def _guard(self, stage: str) -> "_FaultGuard":
        return _FaultGuard(self, stage)

    def record_fault(self, stage: str, exc: BaseException) -> None:
        """The first fault ends the capture: probes stop recording at once."""
        self.recording_layers = self.recording_attention = False
        if self.fault is None:
            self.fault = (stage, exc)

    # -- probes ----------------------------------------------------------------

    # kwargs default to None: while another thread registers or removes its session's hooks on a
    # shared model, torch can call a with_kwargs hook without them. Such a call is never this
    # session's own, so the ownership check comes first and returns.
    # Every probe inside the forward returns at once when Dynamo traces it: a compile the session
    # did not detect then gets a plain pass-through instead of a graph break or an error.
    def _on_forward_start(self, module, args, kwargs=None):
        if _is_compiling() or not self._owns_call():
            return
        self.step += 1
        self.recording_layers = self.recording_attention = False
        if not self.capturing:
            return
        with self._guard("step"):
            ids = decoder_step_ids(self.model, args, kwargs)
            if self.step == 0:
                self._prefill_kwargs = kwargs
            self._begin_step(ids, kwargs.get("attention_mask"))
            self.recording_layers = self.buffers.in_range(self.step)
            self.recording_attention = self.recording_layers and not self.step % self.options.attention_stride

    def _begin_step(self, ids: torch.Tensor, attention_mask=None) -> None:
        """`ids` are the decoder's inputs at `self.step`: the prompt at step 0, then the newest tokens."""
        if self.step == 0:
            pending = self.options.pending_bytes
            if pending is None:
                pending = pending_bytes(self.model)
            self.buffers = StepBuffers(self.layout, self.options, prompt_ids=ids, pending_bytes=pending,
                                       stop_inputs=self.stop_inputs_only)
            self._prompt_ids = ids
            if self._probing_forward and self.options.prompt_telemetry and ids.shape[1] > 1:
                stride = max(1, ids.shape[0] // max(1, self.options.input_batch))
                rows = slice(0, ids.shape[0], stride)
                self.prompt = PromptProbe(self.layout.num_layers, rows, attention_mask, ids.shape[1], chunk_bytes=pending)
        elif self.step < self.buffers.max_steps:
            parents = self._take_parents()
            if parents is None and self.buffers.row_hashes is not None:
                hashes = self.buffers.row_hashes[self.step - 1]
                width, beams = self.buffers.prompt_width, self.options.num_beams
                parents = parents_from_full_rows(hashes, ids, width, self.step, beams)
            self.buffers.record_chosen_tokens(self.step, ids[:, -1], parents)

    def observe_logits(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        """Called by the LogitsTap with the logits generate samples from at this step ([R, V])."""
        if not (self._owns_call() and self.capturing):
            return
        with self._guard("logits"):
            if not self._probing_forward:
                self.step += 1
                self._begin_step(input_ids)
            if self.buffers.in_range(self.step):
                self.buffers.record_logits(self.step, scores)

    def loop_turn(self, goes_on: bool) -> None:
        """generate's decoding loop checked whether to run another turn. Turn k + 1 starts step k's
        forward, once step k - 1's token exists; the second check comes once the first token was
        handed out (a call that stops there took the whole call for it)."""
        if not self._owns_call():
            return
        self._loop_turns += 1
        if goes_on:
            self.clock.mark_step()
        if self._loop_turns == 2 and goes_on:
            with self._guard("timing"):
                self.clock.mark_first_token()

    def _on_forward_end(self, module, args, output):
        """Beam search only: the first forward's output holds the cache generate reorders."""
        if _is_compiling() or not self._owns_call():
            return
        if not (self.capturing and self.step == 0):
            return
        with self._guard("beam"):
            self._observe_beam_reorders(forward_cache(self._prefill_kwargs, output))

    def observe_layer(self, layer, index: int, args, kwargs, output) -> None:
        """Called by the layer probe (which records a fault here under "hidden") while this
        thread's session records this step's layers: `layer` returned `output`; it is this
        session's layer `index` unless another model's layers run inside the call (a model
        called from a logits processor)."""
        layers = self.layout.decoder_layers
        if index >= len(layers) or layers[index] is not layer:
            return
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self.buffers.record_hidden_output(index, hidden)
        if self.prompt is not None and self.step == 0:
            with self._guard("prompt"):
                layer_input = args[0] if args else kwargs.get("hidden_states")
                self.prompt.observe_layer(index, layer_input, hidden)

    def _on_decoder_output(self, module, args, output):
        if _is_compiling() or not self._owns_call():
            return
        if not (self.capturing and self.step == 0 and self.prompt is not None):
            return
        with self._guard("prompt"):
            hidden = output[0] if isinstance(output, (tuple, list)) else output.last_hidden_state
            self.prompt.observe_final_hidden(hidden, self.layout.lm_head, self._prompt_ids)

    def _on_head_output(self, module, args, output):
        """The output head runs after every layer: reduce this step's layer rows and attention."""
        if _is_compiling() or not self.recording_layers or not self._owns_call():
            return
        with self._guard("hidden"):
            self.buffers.record_layers(self.step)

    def attention_slot(self, module) -> tuple[int, bool] | None:
        """(layer, is cross-attention) when this session records `module`'s attention at this step, else None."""
        if _is_compiling() or not self.recording_attention or not self._owns_call():
            return None
        return self.layout.attention_modules.get(id(module))

    def _on_eager_attention(self, attention_module, module, args, output):
        where = self.attention_slot(attention_module)
        if where is None:
            return
        with self._guard("attention"):
            # attention modules return their weights last: (output, weights), T5 (output, bias, weights);
            # some return other things there (XLNet: a stream or a pair, Reformer: chunked probabilities)
            weights = output[-1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if not self._batch_heads_query_key(weights):
                self.attention_unavailable_reason = "eager attention returned no [batch, heads, query, key] weights"
                return
            self.buffers.record_heads(self.step, *where, stats.head_stats(weights[:, :, -1, :]))
            if self.prompt is not None and self.step == 0 and not where[1]:
                self.prompt.observe_weights(where[0], weights)

    def _batch_heads_query_key(self, weights) -> bool:
        expected_heads = self.layout.num_heads
        return (
            isinstance(weights, torch.Tensor)
            and weights.dim() == 4
            and weights.shape[0] == self.buffers.rows
            and (not expected_heads or weights.shape[1] == expected_heads)
        )

    def observe_attention(self, where: tuple[int, bool], query, key, attention_mask, kwargs) -> None:
        """Called by the attention-registry wrapper for SDPA / flash / flex implementations, for
        the attention_slot `where` (inside the session's fault guard)."""
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            self.attention_unavailable_reason = f"{type(attention_mask).__name__} attention masks cannot be observed"
            return
        scaling, softcap = kwargs.get("scaling"), kwargs.get("softcap")
        if self.step == 0:
            probs = stats.newest_query_attention(query, key, attention_mask, scaling, softcap)
            self.buffers.record_heads(self.step, *where, stats.head_stats(probs))
        else:
            self.buffers.defer_attention(*where, query, key, attention_mask, scaling, softcap)
        if self.prompt is not None and self.step == 0 and not where[1]:
            self.prompt.observe_attention(where[0], query, key, attention_mask, scaling, softcap)

    # -- beam search bookkeeping -------------------------------------------------

    def _observe_beam_reorders(self, cache) -> None:
        """Record the parent row of every beam each time generate reorders the cache."""
        target = self.model if hasattr(self.model, "_reorder_cache") else cache
        name = "_reorder_cache" if target is self.model else "reorder_cache"
        original = getattr(target, name, None)
        if original is None:
            return
        session = self

        if target is self.model:
            def reorder(past, beam_idx):
                session._pending_parents = beam_idx
                return original(past, beam_idx)
        else:
            def reorder(beam_idx, *args, **kwargs):
                session._pending_parents = beam_idx
                return original(beam_idx, *args, **kwargs)

        setattr(target, name, reorder)
        self._restore.append(lambda: target.__dict__.pop(name, None))

    def _take_parents(self) -> torch.Tensor | None:
        parents, self._pending_parents = self._pending_parents, None
        return parents

    # -- end of call ------------------------------------------------------------

    def finish(self, sequences: torch.Tensor | None, eos_token_ids: set[int], stops: dict[int, int] | None = None):
        """Copy summaries to the host once and resolve them per returned sequence; `stops` maps a
        sequence stopped early (live health) to its last step."""
        if not self.capturing or self.buffers is None or sequences is None:
            return None
        # the pending blocks' reductions fault under their own stage's name
        with self._guard("logits"):
            self.buffers.flush_logits()
        with self._guard("hidden"):
            self.buffers.flush_layers()
        if not self.capturing:
            return None
        with self._guard("summary"):
            host = self.buffers.to_host(self.step + 1, sequences)
            if self._attention_never_observed():
                self.attention_unavailable_reason = self.layout.never_observed_reason()
            summaries = self.resolve(host, sequences.detach().cpu().numpy(), eos_token_ids, stops)
            if self.prompt is not None:
                self.prompt_summaries = self.prompt.to_host()
            return summaries
        return None

    def resolve(
        self, host: HostSummaries, sequences: np.ndarray, eos_token_ids: set[int], stops: dict[int, int] | None = None
    ) -> RunSummaries:
        """The complete `RunSummaries` of host copies of this session's buffers (the end of the call
        and the live steps build them here alike)."""
        return resolve_paths(
            host, sequences, self.options, eos_token_ids, stops=stops,
            num_heads=self.layout.num_heads,
            model_type=str(getattr(self.model.config, "model_type", "") or ""),
            attention_unavailable_reason=self.attention_unavailable_reason,
        )

    def _attention_never_observed(self) -> bool:
        """Attention modules exist but no probe saw them (e.g. an implementation registered after instrument())."""
        buffers = self.buffers
        return (
            self.attention_unavailable_reason is None
            and bool(self.layout.attention_modules)
            and buffers.heads is None
            and buffers.cross_heads is None
        )

    def first_token_seconds(self, total_seconds: float) -> float | None:
        return self.clock.first_token_seconds(total_seconds)
