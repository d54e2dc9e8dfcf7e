"""Ground truth from the decoded text alone: answer checks and a degeneration check.

Nothing here reads CoreVital's signals (no logits, hidden states or cosines), so the labels
cannot agree with the detectors by construction.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import dataclass

from .dataset import Item

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"\S+")

# A text is degenerate when one phrase (1..MAX_PHRASE_WORDS words) is repeated back to back
# for at least max(MIN_REPEATED_WORDS, 2 x phrase length) words: the phrase stands there at
# least three times in a row, or a short phrase keeps going for a dozen words. Loops inside a
# "word" ("G.G.G.G.G...", "l-l-l-l-...") are caught the same way on characters, with a longer
# minimum so that number padding ("0.000000001") and short markup rules stay out.
MAX_PHRASE_WORDS = 20
MIN_REPEATED_WORDS = 10
MAX_PHRASE_CHARS = 120
MIN_REPEATED_CHARS = 40


@dataclass(frozen=True)
class Degeneration:
    degenerate: bool
    period_words: int  # phrase length of the longest repetition; 0 when none
    repeated_words: int  # words inside that repetition after its first copy
    distinct_4gram_ratio: float  # reported alongside, not used for the label
    compression_ratio: float  # zlib bytes / utf-8 bytes, reported alongside


def degeneration(text: str) -> Degeneration:
    words = [w.lower() for w in _WORD.findall(text)]
    best_period, best_run = _longest_repeat(words, MAX_PHRASE_WORDS, MIN_REPEATED_WORDS)
    char_period, char_run = _longest_repeat(text.lower(), MAX_PHRASE_CHARS, MIN_REPEATED_CHARS)
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    data = text.encode("utf-8")
    return Degeneration(
        degenerate=best_run > 0 or char_run > 0,
        period_words=best_period,
        repeated_words=best_run,
        distinct_4gram_ratio=len(set(grams)) / len(grams) if grams else 1.0,
        compression_ratio=len(zlib.compress(data, 9)) / len(data) if data else 1.0,
    )


def _longest_repeat(units, max_period: int, min_run: int) -> tuple[int, int]:
    """(period, run) of the longest run of units[i] == units[i - period] that is at least
    max(min_run, 2 x period) long; (0, 0) when there is none."""
    best_period, best_run = 0, 0
    for period in range(1, min(max_period, len(units) - 1) + 1):
        run = 0
        for i in range(period, len(units)):
            run = run + 1 if units[i] == units[i - period] else 0
            if run >= max(min_run, 2 * period) and run > best_run:
                best_period, best_run = period, run
    return best_period, best_run


def answer_correct(item: Item, text: str) -> bool:
    """QA only. Arithmetic: the number stated as the result. Facts: an accepted answer is named."""
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
