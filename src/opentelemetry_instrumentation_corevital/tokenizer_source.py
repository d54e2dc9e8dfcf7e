"""Which tokenizer turns a generate call's ids back into text.

In order: the call's own `tokenizer=` argument; the tokenizer of the pipeline whose forward
pass is running (pipelines do not hand theirs to `generate`); the one given to the enclosing
`observe(tokenizer=...)` block; the one given to `instrument(tokenizer=...)`; the one a
loader remembered for this model object (`remember_tokenizer`, as `default_model` does); the
one saved beside the model (`model.name_or_path` is a local folder holding tokenizer files;
loaded once per folder, from disk only). None when there is none, and the content then falls
back to token ids. Nothing here ever reaches a model hub.

Invariant: a lookup never raises and never changes what the call or the pipeline does.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import weakref

from opentelemetry.instrumentation.utils import unwrap
from wrapt import register_post_import_hook, wrap_function_wrapper

from .live.observe import current_run

_logger = logging.getLogger(__name__)

_PIPELINE_MODULE = "transformers.pipelines.base"
_PIPELINE_FORWARD = "Pipeline.forward"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

_running_pipeline_tokenizer: contextvars.ContextVar = contextvars.ContextVar(
    "corevital_pipeline_tokenizer", default=None
)


def _pipeline_forward(wrapped, instance, args, kwargs):
    token = _running_pipeline_tokenizer.set(getattr(instance, "tokenizer", None))
    try:
        return wrapped(*args, **kwargs)
    finally:
        _running_pipeline_tokenizer.reset(token)


_remembered: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def remember_tokenizer(model, tokenizer) -> None:
    """Record the tokenizer loaded with `model` (for as long as the model lives)."""
    _remembered[model] = tokenizer


_hook = {"wanted": False, "installed": False}


def _wrap_pipeline_forward(module) -> None:
    if _hook["wanted"] and not _hook["installed"]:
        wrap_function_wrapper(module, _PIPELINE_FORWARD, _pipeline_forward)
        _hook["installed"] = True


def install_pipeline_hook() -> None:
    """Wrap Pipeline.forward now if transformers' pipelines are imported, else when they are
    (importing them costs about half a second, which an app without pipelines should not pay)."""
    _hook["wanted"] = True
    register_post_import_hook(_wrap_pipeline_forward, _PIPELINE_MODULE)


def uninstall_pipeline_hook() -> None:
    _hook["wanted"] = False  # a later import of the pipelines wraps nothing
    module = sys.modules.get(_PIPELINE_MODULE)
    if _hook["installed"] and module is not None:
        unwrap(module.Pipeline, "forward")
    _hook["installed"] = False


class TokenizerSource:
    """Finds the tokenizer of a call (see the module docstring for the order)."""

    def __init__(self, configured=None):
        self.configured = configured
        self._beside: dict[str, object] = {}
        self._lock = threading.Lock()

    def find(self, model, call_tokenizer=None):
        run = current_run()
        observed = run.tokenizer if run is not None else None
        candidates = (call_tokenizer, _running_pipeline_tokenizer.get(), observed, self.configured, _remembered.get(model))
        for candidate in candidates:
            if candidate is not None:
                return candidate
        return self._saved_beside(model)

    def _saved_beside(self, model):
        folder = str(getattr(model, "name_or_path", "") or "")
        if not folder or not os.path.isdir(folder):
            return None
        with self._lock:
            if folder not in self._beside:
                self._beside[folder] = _load_local(folder)
            return self._beside[folder]


def _load_local(folder: str):
    if not any(os.path.exists(os.path.join(folder, name)) for name in _TOKENIZER_FILES):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # a broken folder costs the text, never the call
        _logger.info("CoreVital: no usable tokenizer beside the model in %s (%s); content stays token ids", folder, exc)
        return None
