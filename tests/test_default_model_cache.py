"""The dequantised copy that `load_default_model()` keeps so later loads skip dequantising.

Checked on a tiny Llama built from a config (the GGUF path itself is exercised by every
SmolLM2 test): the copy reloads to the same weights and outputs, carries no GGUF
quantisation config, and a copy that cannot be written costs nothing but speed.
"""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from opentelemetry_instrumentation_corevital import default_model
from tests.conftest import build_llama, prompt_ids
from tests.support.tokenizers import tiny_tokenizer


def test_copy_reloads_to_identical_outputs(tmp_path):
    model, tokenizer = build_llama(), tiny_tokenizer()
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    target = tmp_path / "copy"
    default_model._save_copy(model, tokenizer, target)

    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no staging folder left behind
    reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, local_files_only=True).eval()
    ids = prompt_ids()
    assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert AutoTokenizer.from_pretrained(target, local_files_only=True).convert_ids_to_tokens([17]) == ["zq17"]


def test_unwritable_cache_is_skipped_silently(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    default_model._save_copy(build_llama(), tiny_tokenizer(), blocker / "copy")
    assert not (blocker.parent / "copy").exists() and blocker.is_file()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COREVITAL_CACHE_DIR", str(tmp_path / "mine"))
    assert default_model.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("COREVITAL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_model.cache_dir() == tmp_path / "xdg" / "corevital"
