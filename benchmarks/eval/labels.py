"""Ground truth from the decoded text alone: answer checks and a degeneration check.

Nothing here reads CoreVital's signals (no logits, hidden states or cosines), so the labels
cannot agree with the detectors by construction.
"""

from __future__ import annotations

import re
import unicodedata

from opentelemetry_instrumentation_corevital.analysis.text import degeneration

from .dataset import Item

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

def answer_correct(item: Item, text: str) -> bool:
    """QA only. Arithmetic: the number stated as the result. Facts: an accepted answer is named.

    Only the answer counts: a base model goes on to ask itself the next "Q:", which is cut off."""
    text = text.split("\nQ:")[0]
    if item.category == "arithmetic":
        return _stated_number(text, item.operands) == int(item.answers[0])
    normalised = _normalise(text)
    return any(re.search(rf"\b{re.escape(_normalise(answer))}\b", normalised) for answer in item.answers)


def failure(item: Item, text: str) -> tuple[bool, str]:
    """(failed?, why): a degenerate text fails whatever the category; QA also fails when wrong."""
    if degeneration(text).degenerate:
        return True, "degenerate"
    if item.category in ("arithmetic", "fact") and not answer_correct(item, text):
        return True, "wrong"
    return False, "ok"


def _stated_number(text: str, operands: tuple[int, ...]) -> int | None:
    """The first number after the last '=', else the first number that is not an operand."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    if "=" in text:
        numbers = _NUMBER.findall(text.rsplit("=", 1)[1])
    else:
        numbers = [n for n in _NUMBER.findall(text) if _as_int(n) not in operands]
    return _as_int(numbers[0]) if numbers else None


def _as_int(number: str) -> int | float:
    value = float(number)
    return int(value) if value.is_integer() else value


def _normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
