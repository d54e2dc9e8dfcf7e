"""Where the parts CoreVital probes live inside a transformers model, and on which devices they run."""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field

import torch
from torch import nn

_CROSS_ATTENTION_NAME = re.compile(r"cross|encdec|encoder_attn", re.IGNORECASE)


@dataclass
class ModelLayout:
    decoder_layers: list[nn.Module]
    lm_head: nn.Module | None
    decoder_root: nn.Module | None = None
    # id(attention module) -> (layer index, is cross-attention)
    attention_modules: dict[int, tuple[int, bool]] = field(default_factory=dict)
    num_heads: int = 0
    is_encoder_decoder: bool = False
    attn_implementation: str = ""

    # class name of attention modules that run their kernel themselves, outside the attention registry
    unregistered_attention: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    def never_observed_reason(self) -> str:
        """Why attention modules exist but no probe saw them."""
        implementation = repr(self.attn_implementation or "model")
        if self.unregistered_attention and self.attn_implementation != "eager":
            return (
                f"{self.unregistered_attention} runs its {implementation} attention itself, outside transformers' "
                "attention registry, and returns no weights; load the model with attn_implementation='eager' "
                "to observe attention"
            )
        return f"the {implementation} attention implementation was never observed"


def _decoder_root(model: nn.Module) -> nn.Module:
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError, TypeError):
            decoder = None
        if isinstance(decoder, nn.Module):
            return decoder
    return model


def _layer_count(config) -> int | None:
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for attr in ("decoder_layers", "num_decoder_layers", "num_hidden_layers", "n_layer", "n_layers"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int):
            return value
    return None


def _layer_stack(root: nn.Module, layer_count: int | None) -> list[nn.Module]:
    """The shallowest list of decoder blocks (T5 blocks also hold a list of sub-layers).

    Blocks are of one class, or of several when the list holds exactly the model's layer count
    (hybrids such as Jamba interleave Mamba and attention layers of different classes).
    """
    best, best_key = [], None
    for name, module in root.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1 and len(module) != layer_count:
            continue
        key = (name.count("."), -len(module))
        if best_key is None or key < best_key:
            best, best_key = list(module), key
    return best


def _innermost_attention_modules(layer: nn.Module):
    candidates = [
        (name, module) for name, module in layer.named_modules() if type(module).__name__.endswith("Attention")
    ]
    for name, module in candidates:
        has_inner = any(other is not module and other_name.startswith(name + ".") for other_name, other in candidates)
        if not has_inner:
            yield name, module


def _num_heads(config) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("num_attention_heads", "n_head", "num_heads", "decoder_attention_heads"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int):
            return value
    return 0


@functools.lru_cache(maxsize=64)
def _uses_registry(attention_class: type) -> bool:
    """Whether the class dispatches through transformers' attention registry (unknown counts as yes)."""
    try:
        source = inspect.getsource(attention_class.forward)
    except (OSError, TypeError):
        return True
    return "ALL_ATTENTION_FUNCTIONS" in source or "attention_interface" in source


def find_layout(model: nn.Module) -> ModelLayout:
    config = model.config
    root = _decoder_root(model)
    layers = _layer_stack(root, _layer_count(config))
    attention, unregistered = {}, ""
    for index, layer in enumerate(layers):
        for name, module in _innermost_attention_modules(layer):
            attention[id(module)] = (index, bool(_CROSS_ATTENTION_NAME.search(name)))
            if not unregistered and not _uses_registry(type(module)):
                unregistered = type(module).__name__
    get_head = getattr(model, "get_output_embeddings", None)
    lm_head = get_head() if callable(get_head) else None
    return ModelLayout(
        decoder_layers=layers,
        decoder_root=root if root is not model else None,
        lm_head=lm_head if isinstance(lm_head, nn.Module) else None,
        attention_modules=attention,
        num_heads=_num_heads(config),
        is_encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)),
        attn_implementation=str(getattr(config, "_attn_implementation", "") or ""),
        unregistered_attention=unregistered,
    )


def execution_devices(model: nn.Module, layout: ModelLayout) -> list[str]:
    """The devices the model's input embeddings, decoder layers and output head compute on,
    sorted: more than one when accelerate's device map spreads the model over several
    accelerators, or its layers were moved apart by hand. A module accelerate dispatched
    computes on its hook's execution device, where offloaded weights (kept on the CPU, on disk
    or on 'meta' between uses) travel; any other on its first parameter's device ('meta' skipped)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    devices = set()
    for module in (embeddings, *layout.decoder_layers, layout.lm_head):
        if not isinstance(module, nn.Module):
            continue
        hook = module.__dict__.get("_hf_hook")
        executes_on = [getattr(each, "execution_device", None) for each in getattr(hook, "hooks", (hook,))]
        executes_on = [device for device in executes_on if device is not None]
        if not executes_on:
            first = _first_parameter(module)
            executes_on = [] if first is None else [first.device]
        devices.update(executes_on)
    return sorted({_device_name(device) for device in devices} - {"meta"})


def _first_parameter(module: nn.Module) -> nn.Parameter | None:
    """Depth first, without building nn.Module.parameters()'s generator of every submodule: a
    call pays this for every layer."""
    waiting = [module]
    while waiting:
        current = waiting.pop()
        for parameter in current._parameters.values():
            if parameter is not None:
                return parameter
        waiting.extend(child for child in reversed(current._modules.values()) if child is not None)
    return None


def _device_name(device) -> str:
    """'cuda:1' for 1, 'cuda:1' or torch.device('cuda:1'); a device named without an index ('cuda')
    is its backend's current one, as torch places a tensor sent there."""
    device = torch.device(device)
    if device.index is None and device.type != "cpu":
        current = getattr(getattr(torch, device.type, None), "current_device", None)
        if callable(current):
            device = torch.device(device.type, current())
    return str(device)
