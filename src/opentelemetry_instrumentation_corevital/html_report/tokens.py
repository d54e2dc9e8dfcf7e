"""The text of a run token by token, each token with its step's entropy, surprisal and margin.

Token text has two sources. `corevital run` keeps the text it generated (and the prompt's
tokens) in the local store and its `--json` file under `TOKEN_TEXT_KEY`: it ran the model
and holds the tokenizer, and that text never leaves the machine. Otherwise the span's
`corevital.step` events carry token text only when content capture was on, and only for the
steps they sample. Without either, a run has no token view.

Generated token i is the token of decoding step i; prompt position j (j >= 1) has the prompt
surprisal value j - 1 (the first position has no prefix to be surprised by).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..report import Report
from ..report.views import STEP_STATS, step_series
from ..store.records import TOKEN_TEXT_KEY
from ..telemetry import attributes as attrs

__all__ = ["TOKEN_TEXT_KEY", "Token", "TokenLine", "TokenText", "completion_lines", "prompt_tokens"]
SOURCE_LOCAL = "kept locally by corevital run"
SOURCE_EVENTS = "step events (content capture)"


@dataclass(frozen=True)
class TokenText:
    """What `corevital run` generated, one string per token: completion[sequence][step], prompt[position]."""

    completion: list[list[str]]
    prompt: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"completion": self.completion, "prompt": self.prompt}

    @classmethod
    def from_json(cls, value: Any) -> TokenText | None:
        """The token text of a stored document or report file; None when absent or not in this shape."""
        if not isinstance(value, dict):
            return None
        completion, prompt = value.get("completion"), value.get("prompt")
        if not (isinstance(completion, list) and all(_strings(row) for row in completion)):
            return None
        return cls(completion=completion, prompt=prompt if _strings(prompt) else None)


@dataclass(frozen=True)
class Token:
    text: str
    step: int | None  # decoding step (completion) or prompt position
    values: dict[str, float | None]  # STEP_STATS (completion) or {"surprisal": ...} (prompt); None: not recorded
    flagged: bool = False
    in_loop: bool = False


@dataclass(frozen=True)
class TokenLine:
    """One returned sequence as tokens; `gaps`: steps between tokens that have no text (sampled events)."""

    sequence: int
    tokens: list[Token]
    source: str
    gaps: bool = False
    loop: tuple[int, int, int] | None = None  # start step, end step, period


def completion_lines(report: Report, text: TokenText | None) -> list[TokenLine]:
    """Every sequence that has token text, from the local text when there is some, else from step events."""
    if text is not None and text.completion:
        return [_line(report, i, dict(enumerate(tokens)), SOURCE_LOCAL) for i, tokens in enumerate(text.completion)]
    by_sequence: dict[int, dict[int, str]] = {}
    for event in report.events:
        if event.name != attrs.STEP_EVENT or attrs.STEP_TOKEN_TEXT not in event.attributes:
            continue
        sequence = int(event.attributes.get(attrs.STEP_SEQUENCE, 0))
        step = int(event.attributes.get(attrs.STEP_INDEX, 0))
        by_sequence.setdefault(sequence, {})[step] = str(event.attributes[attrs.STEP_TOKEN_TEXT])
    return [_line(report, s, by_sequence[s], SOURCE_EVENTS) for s in sorted(by_sequence)]


def prompt_tokens(report: Report, text: TokenText | None) -> list[Token] | None:
    """The prompt's tokens, with their surprisal when the run has prompt telemetry (full trace)."""
    if text is None or not text.prompt:
        return None
    surprisal = None
    if report.prompt is not None and report.prompt.rows:
        surprisal = report.prompt.rows[0].surprisal
    tokens = []
    for position, piece in enumerate(text.prompt):
        value = surprisal[position - 1] if surprisal and 1 <= position <= len(surprisal) else None
        tokens.append(Token(piece, position, {"surprisal": value}))
    return tokens


def _line(report: Report, sequence: int, texts: dict[int, str], source: str) -> TokenLine:
    series = step_series(report, sequence)
    values = {step: {stat: series.values[stat][i] for stat in STEP_STATS} for i, step in enumerate(series.steps)}
    flagged = set(series.flagged)
    repetition = None
    if sequence < len(report.sequences) and report.sequences[sequence].analysis is not None:
        repetition = report.sequences[sequence].analysis.repetition
    loop = (repetition.start_step, repetition.end_step, repetition.period) if repetition is not None else None
    steps = sorted(texts)
    tokens = [
        Token(
            text=texts[step],
            step=step,
            values=values.get(step, dict.fromkeys(STEP_STATS)),
            flagged=step in flagged,
            in_loop=loop is not None and loop[0] <= step <= loop[1],
        )
        for step in steps
    ]
    gaps = any(later - earlier > 1 for earlier, later in zip(steps, steps[1:]))
    return TokenLine(sequence=sequence, tokens=tokens, source=source, gaps=gaps, loop=loop)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
