"""The evaluation harness's own pieces: text labels, metrics and the logistic fit (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.eval.dataset import FIT, HELDOUT, build_items
from benchmarks.eval.fit import fit_logistic
from benchmarks.eval.labels import answer_correct, degeneration, failure
from benchmarks.eval.metrics import auroc, bootstrap, brier, ece, precision_recall


def item(template_prefix: str):
    return next(i for i in build_items() if i.template.startswith(template_prefix))


def test_the_set_is_large_and_split_by_template_not_at_random():
    items = build_items()
    assert len(items) >= 600
    assert len({i.id for i in items}) == len(items)
    split_of = {}
    for i in items:
        assert split_of.setdefault(i.template, i.split) == i.split  # a template never straddles the split
    for category in ("arithmetic", "fact", "repetition", "free"):
        splits = {i.split for i in items if i.category == category}
        assert splits == {FIT, HELDOUT}, category
    halves = [sum(i.split == s for i in items) for s in (FIT, HELDOUT)]
    assert abs(halves[0] - halves[1]) <= len(items) // 10


@pytest.mark.parametrize("text", [
    "I am a cat. I am a cat. I am a cat. I am a cat.",
    "Scala, Scala, Scala, Scala, Scala, Scala, Scala, Scala, Scala, Scala, Scala, Scala",
    "The lighthouse named E.M.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G.G",
    # cut off by a short budget while still looping: shorter than the general minimums
    "The solution of the given equation is: 9+4=9+4=9+4=9+4=9+4=9+4",
    "The solution of the given equation is: 5*7=5000000000000000000",
    " Answer: 162 + 811 = 162 + 811 = 162 + 811 =",
    "The author of Moby-Dick is likely to be H.A.S.D.D.D.D.D.D.D.\n",
])
def test_visible_loops_are_degenerate(text):
    assert degeneration(text).degenerate


@pytest.mark.parametrize("text", [
    "The capital of France is Paris. It is known for the Eiffel Tower and its museums.",
    "New York, New York is a famous song.",
    "| Name | Age |\n| ---| ---| ---| ---| ---| ---|\n| Tom | 30 |",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    "The star is 200.000000000000007 light years away.",
    # a text may end in a short repeat, a number or a border without looping
    "It costs 1,000,000.",
    "The answer is 1000000",
    "It went on and on, and so on, and so on",
    "Ha ha ha",
    "| Name | Age |\n| ---| ---| ---| ---| ---| ---|",
])
def test_fluent_and_structured_text_is_not_degenerate(text):
    assert not degeneration(text).degenerate


def test_arithmetic_reads_the_stated_result():
    question = item("arith_what_is")
    answer = int(question.answers[0])
    a, b = question.operands
    assert answer_correct(question, f"{a} and {b} give {a} ? {b} = {answer}.")
    assert not answer_correct(question, f"{a} ? {b} = {answer + 1}, since {answer} is wrong")
    assert answer_correct(question, f"The answer is {answer}.")
    assert not answer_correct(question, f"To work out {a} and {b}, we")  # no result stated


def test_facts_match_any_alias_as_a_whole_word_without_accents():
    question = next(i for i in build_items() if "Brazil" in i.prompt)
    assert answer_correct(question, "It is Brasilia.")
    assert answer_correct(question, "The capital is Brasília.")
    assert not answer_correct(question, "It is Rio de Janeiro.")


def test_failure_is_wrong_or_degenerate():
    question = item("fact_capital_what")
    right = f"The capital is {question.answers[0]}."
    assert failure(question, right) == (False, "ok")
    assert failure(question, "The capital is Atlantis.") == (True, "wrong")
    assert failure(item("free_explain"), "I am a cat. " * 6) == (True, "degenerate")


def test_auroc_ranks_and_counts_ties_half():
    y = np.array([0, 0, 1, 1])
    assert auroc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auroc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auroc(y, np.array([0.1, 0.6, 0.5, 0.9])) == 0.75
    assert math.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_ece_and_brier():
    y = np.array([0] * 8 + [1] * 2)
    calibrated = np.full(10, 0.2)  # one bin, predicted 0.2, observed 0.2
    assert ece(y, calibrated) == pytest.approx(0.0)
    assert ece(y, np.full(10, 0.9)) == pytest.approx(0.7)
    assert brier(y, calibrated) == pytest.approx(0.8 * 0.04 + 0.2 * 0.64)


def test_precision_recall():
    assert precision_recall(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == (0.5, 0.5)


def test_bootstrap_interval_brackets_the_value():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    scores = y + rng.normal(0, 1, 400)
    value, low, high = bootstrap(auroc, y, scores, resamples=200)
    assert low < value < high
    assert 0.6 < value < 0.9


def test_logistic_fit_recovers_known_weights_in_raw_units():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(5, 2, 4000), rng.uniform(0, 1, 4000)])
    logit = -3.0 + 0.8 * x[:, 0] - 2.0 * x[:, 1]
    y = rng.random(4000) < 1 / (1 + np.exp(-logit))
    weights, bias = fit_logistic(x, y)
    assert weights == pytest.approx([0.8, -2.0], abs=0.25)
    assert bias == pytest.approx(-3.0, abs=0.6)


def test_logistic_fit_stays_finite_with_one_class():
    weights, bias = fit_logistic(np.random.default_rng(2).normal(size=(5, 3)), np.zeros(5))
    assert np.isfinite(weights).all() and math.isfinite(bias) and bias < -3
