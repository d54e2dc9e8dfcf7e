"""Loading the model to run: the embedded default (SmolLM2), a local folder, a .gguf file, or a cached hub id.

Everything loads offline (`local_files_only`): the CLI never downloads. Each way a model can
be unusable becomes a CliError naming the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CliError


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    model_id: str


def resolve_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {spec}: not a torch device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    return spec


def load(model_spec: str | None, device: str) -> LoadedModel:
    if model_spec is None:
        from ..default_model import DEFAULT_MODEL_ID, load_default_model

        try:
            model, tokenizer = load_default_model(device)
        except RuntimeError as exc:  # the weights package is missing
            raise CliError(str(exc)) from None
        return LoadedModel(model, tokenizer, DEFAULT_MODEL_ID)
    source, gguf_file = _source_of(model_spec)
    return _load_pretrained(model_spec, source, gguf_file, device)


def _source_of(spec: str) -> tuple[str, str | None]:
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return str(path.parent), path.name
        raise CliError(f"--model {spec}: is a file; pass the folder written by save_pretrained (or a .gguf file)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CliError(f"--model {spec}: no config.json in that folder; pass a folder written by save_pretrained")
        return str(path), None
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise CliError(f"--model {spec}: no such folder")
    return spec, None  # a hub id, looked up in the local cache only


def _load_pretrained(spec: str, source: str, gguf_file: str | None, device: str) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    options = {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        if Path(source).is_dir():
            raise CliError(f"--model {spec}: cannot read its config ({_first_line(exc)})") from None
        raise CliError(
            f"--model {spec}: not a local folder and not in the Hugging Face cache (the CLI never downloads); "
            "download it first or pass a folder written by save_pretrained"
        ) from None
    model_class = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    cannot_generate = CliError(
        f"--model {spec}: a {config.model_type!r} model without generate() (not a causal or seq2seq "
        "language model); pass a text-generation model"
    )
    try:
        model = model_class.from_pretrained(source, dtype=torch.float32, **options)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise cannot_generate from None
        raise CliError(f"--model {spec}: cannot load it ({_first_line(exc)})") from None
    except OSError as exc:
        raise CliError(f"--model {spec}: cannot load its weights ({_first_line(exc)})") from None
    if not callable(getattr(model, "generate", None)) or not model.can_generate():
        raise cannot_generate
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(
            f"--model {spec}: no usable tokenizer next to the model ({_first_line(exc)}); "
            "save one there with tokenizer.save_pretrained(folder)"
        ) from None
    if isinstance(tokenizer, bool) or not callable(tokenizer):
        raise CliError(f"--model {spec}: no tokenizer next to the model; save one with tokenizer.save_pretrained(folder)")
    model.to(device).eval()
    return LoadedModel(model, tokenizer, model.name_or_path or spec)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
