"""How the user compiled the model, decided before a capture session attaches anything.

Invariant: these checks read the model and its generation_config only; they never touch the
compiled code, so asking costs the user no guard and no recompile.
"""

from __future__ import annotations

import importlib

import torch

# transformers compiles the forward for these cache implementations (GenerationMixin._valid_auto_compile_criteria)
_STATIC_CACHES = getattr(
    importlib.import_module("transformers.generation.configuration_utils"), "ALL_STATIC_CACHE_IMPLEMENTATIONS", ("static",)
)


def compiled_forward(model: torch.nn.Module) -> str | None:
    """How the user compiled the model's forward, or None: `model.compile()` or `torch.compile`
    assigned to a module's `forward`, on the model or any of its submodules."""
    for name, module in model.named_modules():
        where = f"`{name}`" if name else "the model"
        if getattr(module, "_compiled_call_impl", None) is not None:
            return f"{where} is compiled (nn.Module.compile)"
        if hasattr(module.__dict__.get("forward"), "_torchdynamo_orig_callable"):
            return f"{where}'s forward is compiled (torch.compile)"
    return None


AUTO_COMPILE = "transformers compiles the forward for its static cache"


def auto_compiled_forward(model: torch.nn.Module) -> str | None:
    """AUTO_COMPILE when the model's generation_config asks for a static cache where transformers
    compiles the forward itself (an accelerator, or a compile_config for every device), else None.
    Known before any probe is attached; a static cache asked for in the call itself is reported
    by `decoding_loop` when generate decides, before the first forward."""
    config = getattr(model, "generation_config", None)
    if config is None or getattr(config, "disable_compile", False):
        return None
    if getattr(config, "cache_implementation", None) not in _STATIC_CACHES:
        return None
    compile_config = getattr(config, "compile_config", None)
    everywhere = bool(getattr(compile_config, "_compile_all_devices", False))
    if everywhere or model_device(model).type in ("cuda", "xpu", "neuron", "tpu"):
        return AUTO_COMPILE
    return None


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")

