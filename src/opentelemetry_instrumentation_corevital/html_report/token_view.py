"""The page's text section: every token heat-coloured by its step's entropy, numbers in its tooltip.

Flagged steps are outlined, the repetition loop's steps underlined; with several sequences a
selector shows one at a time (the worst first). The prompt's tokens, when the run kept them,
are coloured by their surprisal (a full trace has it). The scale runs from 0 to the largest
value shown, so equal colours mean equal values within the prompt, and within and across the
sequences of the completion.
"""

from __future__ import annotations

import math
from html import escape

from ..report import Report
from ..report.views import shown_sequence
from .svg import palette_colour
from .tokens import SOURCE_EVENTS, Token, TokenLine, TokenText, completion_lines, prompt_tokens

# pale blue -> yellow -> orange -> red: light enough for dark text on every stop
_HEAT = ((239, 246, 255), (254, 240, 138), (253, 186, 116), (248, 113, 113))
_UNRECORDED = "#e5e7eb"
_NO_TEXT = (
    "no token text: <code>corevital run</code> keeps the text of its runs in the local store; "
    "runs from other applications carry it only with content capture "
    "(<code>OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true</code>)"
)

CSS = """
.tokens{white-space:pre-wrap;font:13px/1.9 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 12px;word-break:break-word}
.tok{border-radius:3px;padding:1px 0}
.tok.empty{display:inline-block;min-width:3px}
.tokens.separate .tok{margin-right:3px}
.tok.flag{outline:1.5px solid #dc2626;outline-offset:-1px}
.tok.loop{box-shadow:inset 0 -3px 0 #7c3aed}
.gap{color:#94a3b8}
.scale{display:inline-block;width:120px;height:10px;border-radius:2px;vertical-align:middle;margin:0 4px}
.textkey{font-size:12px;color:#475569;margin:4px 0}.textkey .tok{margin-left:10px;padding:0 4px}
"""


def section(report: Report, token_text: TokenText | None, run_key: str) -> str:
    """The "Text" section of one run; `run_key` ties the sequence selector to this run's blocks."""
    lines = completion_lines(report, token_text)
    parts = ["<h2>Text</h2>"]
    if not lines:
        return parts[0] + f'<p class="empty">{_NO_TEXT}</p>'
    prompt = prompt_tokens(report, token_text)
    if prompt is not None:
        high = _scale_top(prompt, "surprisal")
        parts.append("<h3>Prompt</h3>")
        parts.append(_block(prompt, "surprisal", high, run_key, "prompt", "prompt position") + _scale("surprisal", high))
    parts.append("<h3>Completion</h3>")
    source = lines[0].source + ("; only the sampled steps have text" if lines[0].source == SOURCE_EVENTS else "")
    parts.append(f'<p class="note">each token coloured by the entropy of its step; hover a token for its numbers ({escape(source)})</p>')
    if len(lines) > 1:
        worst = shown_sequence(report)
        options = "".join(
            f'<option value="{line.sequence}"{" selected" if line.sequence == worst else ""}>sequence {line.sequence}</option>'
            for line in lines
        )
        parts.append(f'<label class="meta">Sequence <select class="sequence" data-run="{run_key}">{options}</select></label>')
    high = _scale_top([token for line in lines for token in line.tokens], "entropy")
    for line in lines:
        # token text from step events is decoded one token at a time, without the spaces between words
        separate = line.source == SOURCE_EVENTS
        parts.append(_block(line.tokens, "entropy", high, run_key, str(line.sequence), "step", separate=separate))
    parts.append(_scale("entropy", high) + _key(lines))
    return "".join(parts)


def _scale_top(tokens: list[Token], stat: str) -> float:
    return max((t.values[stat] for t in tokens if _finite(t.values.get(stat))), default=0.0) or 1.0


def _scale(stat: str, high: float) -> str:
    gradient = ",".join(_heat(i / (len(_HEAT) - 1)) for i in range(len(_HEAT)))
    return (
        f'<p class="textkey">{escape(stat)}: 0 <span class="scale" style="background:linear-gradient(90deg,{gradient})">'
        f"</span> {high:.2f} bits</p>"
    )


def _block(
    tokens: list[Token], stat: str, high: float, run_key: str, which: str, position: str, separate: bool = False
) -> str:
    """One text block; `which`: the sequence index, or "prompt"."""
    spans, previous = [], None
    for token in tokens:
        if previous is not None and token.step is not None and token.step - previous > 1:
            spans.append(f'<span class="gap" data-tip="steps {previous + 1}-{token.step - 1}: no text recorded">…</span>')
        previous = token.step
        spans.append(_token(token, stat, high, position))
    classes = "tokens separate" if separate else "tokens"
    return f'<div class="{classes}" data-run="{run_key}" data-sequence="{which}" data-stat="{stat}">{"".join(spans)}</div>'


def _token(token: Token, stat: str, high: float, position: str) -> str:
    value = token.values.get(stat)
    classes = ["tok"] + (["flag"] if token.flagged else []) + (["loop"] if token.in_loop else []) + ([] if token.text else ["empty"])
    background = _heat(value / high) if _finite(value) else _UNRECORDED
    numbers = [f"{position} {token.step}"]
    for name, number in token.values.items():
        numbers.append(f"{name} {_number(name, number)}")
    if token.flagged:
        numbers.append("flagged step")
    if token.in_loop:
        numbers.append("in the repetition loop")
    return (
        f'<span class="{" ".join(classes)}" style="background:{background}" data-tip="{escape(" · ".join(numbers))}">'
        f"{escape(token.text)}</span>"
    )


def _key(lines: list[TokenLine]) -> str:
    parts = ['<p class="textkey">marks:<span class="tok flag">flagged step</span>']
    for line in lines:
        if line.loop is not None:
            start, end, period = line.loop
            whose = f"sequence {line.sequence}: " if len(lines) > 1 else ""
            parts.append(f'<span class="tok loop">repetition loop, {whose}steps {start}-{end}, period {period}</span>')
    parts.append(f'<span class="tok" style="background:{_UNRECORDED}">not recorded at this step</span></p>')
    return "".join(parts)


def _number(name: str, value: float | None) -> str:
    if not _finite(value):
        return "not recorded"
    return f"{value:.3f}" if name == "margin" else f"{value:.2f} bits"


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _heat(t: float) -> str:
    return palette_colour(_HEAT, t)
