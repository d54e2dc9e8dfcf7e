"""Text-level degeneration: a phrase repeated back to back, judged from the decoded text alone.

Reads no CoreVital signal (no logits, hidden states or cosines), so it can label runs for
evaluation and for `corevital calibrate` without agreeing with the detectors by construction.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

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
# A text that is still repeating where it ends never left its loop, and a short budget (a
# 32-token answer) cuts it off before the minimums above: "9+4=9+4=9+4=9+4", "5*7=500000000000".
# There three copies of a unit holding a letter or digit count from MIN_TAIL_CHARS repeated
# characters on; a rule or table border of punctuation ending a cut-off text is layout, not a loop.
MIN_TAIL_CHARS = 8


@dataclass(frozen=True)
class Degeneration:
    degenerate: bool
    period_words: int  # phrase length of the longest repetition; 0 when none
    repeated_words: int  # words inside that repetition after its first copy
    distinct_4gram_ratio: float  # reported alongside, not used for the label
    compression_ratio: float  # zlib bytes / utf-8 bytes, reported alongside
    tail_period: int  # characters in the unit the text ends repeating; 0 when it does not


def degeneration(text: str) -> Degeneration:
    words = [w.lower() for w in _WORD.findall(text)]
    best_period, best_run = _longest_repeat(words, MAX_PHRASE_WORDS, MIN_REPEATED_WORDS)
    char_period, char_run = _longest_repeat(text.lower(), MAX_PHRASE_CHARS, MIN_REPEATED_CHARS)
    tail_period = _ending_repeat(text.lower().rstrip(), MAX_PHRASE_CHARS, MIN_TAIL_CHARS)
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    data = text.encode("utf-8")
    return Degeneration(
        degenerate=best_run > 0 or char_run > 0 or tail_period > 0,
        period_words=best_period,
        repeated_words=best_run,
        distinct_4gram_ratio=len(set(grams)) / len(grams) if grams else 1.0,
        compression_ratio=len(zlib.compress(data, 9)) / len(data) if data else 1.0,
        tail_period=tail_period,
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


def _ending_repeat(chars: str, max_period: int, min_run: int) -> int:
    """The shortest period whose run of chars[i] == chars[i - period] reaches the last character,
    is at least max(min_run, 2 x period) long and whose unit holds a letter or digit; 0 when none."""
    for period in range(1, min(max_period, len(chars) - 1) + 1):
        run = 0
        while run + period < len(chars) and chars[-1 - run] == chars[-1 - run - period]:
            run += 1
        if run >= max(min_run, 2 * period) and any(c.isalnum() for c in chars[-period:]):
            return period
    return 0
