"""The terminal health report of one run: risk, flags, narrative, entropy sparkline, blamed layers, text.

With colour, the text is shown token by token, each token coloured by its step's entropy
(the prompt's tokens by their surprisal), with a legend; without colour (not a terminal,
NO_COLOR, TERM=dumb) it is plain text.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import textwrap
from datetime import datetime, timezone

from ..health_vocabulary import RISK_CRITICAL, RISK_HEALTHY, RISK_WARNING
from ..html_report.tokens import TOKEN_TEXT_KEY, Token, TokenText, completion_lines, prompt_tokens
from ..report import Report
from ..report.views import rag_summary, raised_flags, step_series

_BLOCKS = "▁▂▃▄▅▆▇█"
_LABEL_COLOURS = {RISK_HEALTHY: "32", RISK_WARNING: "33", RISK_CRITICAL: "31"}  # green, yellow, red
SPARKLINE_WIDTH = 60
#: per statistic: (upper bound in bits, ANSI colour, legend text), lowest band first
COLOUR_BANDS = {
    "entropy": ((1.0, "32", "<1"), (3.0, "36", "1-3"), (5.0, "33", "3-5"), (math.inf, "31", ">=5 bits")),
    "surprisal": ((2.0, "32", "<2"), (6.0, "36", "2-6"), (10.0, "33", "6-10"), (math.inf, "31", ">=10 bits")),
}
_FLAGGED, _LOOP, _UNRECORDED = "4", "7", "2"  # underline, inverse, dim


def use_colour(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def sparkline(values: list[float | None], width: int = SPARKLINE_WIDTH, floor: float | None = None) -> str:
    """One block character per value (bucket means when there are more values than `width`); gaps as spaces.

    The scale runs from `floor` (default: the smallest value) to the largest value.
    """
    if len(values) > width:
        buckets = [values[len(values) * i // width : len(values) * (i + 1) // width] for i in range(width)]
        values = [_mean(bucket) for bucket in buckets]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    low = min(finite) if floor is None else min(floor, min(finite))
    span = (max(finite) - low) or 1.0
    return "".join(
        " " if v is None or not math.isfinite(v) else _BLOCKS[min(len(_BLOCKS) - 1, int((v - low) / span * len(_BLOCKS)))]
        for v in values
    )


def report_json(report: Report, token_text: TokenText | None) -> str:
    """The Report as JSON, with the run's token text under TOKEN_TEXT_KEY when there is some (a local file)."""
    document = json.loads(report.model_dump_json())
    if token_text is not None:
        document[TOKEN_TEXT_KEY] = token_text.to_json()
    return json.dumps(document, indent=2, ensure_ascii=False)


def render(
    report: Report,
    *,
    colour: bool = False,
    completion: str | None = None,
    token_text: TokenText | None = None,
    run_id: str | None = None,
) -> str:
    """`completion`: the generated text as printed without colour; by default, the text of `token_text`."""
    width = min(100, shutil.get_terminal_size((100, 24)).columns)

    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    lines = [paint(f"CoreVital health report  run {run_id or report.span_id or '?'}", "1")]
    lines.append(_row("model", f"{report.model or '?'}  ({report.capture_mode or '?'} capture)"))
    lines.append(_row("when", _when(report)))
    usage = report.usage
    finish = ", ".join(report.finish_reasons) or "?"
    lines.append(_row("tokens", f"{_int(usage.input_tokens)} prompt, {_int(usage.output_tokens)} generated ({finish})"))
    label = report.risk.label or "unknown"
    score = "n/a" if report.risk.score is None else f"{report.risk.score:.2f}"
    risk = f"{score}  {paint(label.upper(), _LABEL_COLOURS.get(label, '1'))}  {_bar(report.risk.score)}"
    lines.append(_row("risk", risk))
    if report.risk.factors:
        lines.append(_row("factors", ", ".join(report.risk.factors)))
    flags = raised_flags(report)
    high = report.health.high_entropy_steps
    shown = [f"high_entropy ({high} step{'' if high == 1 else 's'})" if f == "high_entropy" else f for f in flags]
    lines.append(_row("flags", paint(", ".join(shown), "33") if shown else "none"))
    lines.append(_row("blamed layers", ", ".join(map(str, report.layers_blamed)) or "none"))
    warning = report.early_warning
    if warning.failure_risk is not None:
        signals = f"  ({', '.join(warning.signals)})" if warning.signals else ""
        lines.append(_row("early warning", f"{warning.failure_risk:.2f}{signals}"))
    if report.rag is not None:
        lines.append(_row("rag context", rag_summary(report.rag)))
    lines += _entropy_lines(report)
    if report.corevital_error:
        lines.append(_row("corevital error", paint(report.corevital_error, "31")))
    if report.narrative:
        lines.append("")
        lines += textwrap.wrap(report.narrative, width=width)
    lines += _text_lines(report, colour, completion, token_text, width, paint)
    return "\n".join(lines)


def _text_lines(report: Report, colour: bool, completion: str | None, token_text: TokenText | None, width: int, paint) -> list[str]:
    token_lines = completion_lines(report, token_text)
    if colour and token_lines:
        lines = []
        prompt = prompt_tokens(report, token_text)
        if prompt is not None and any(t.values["surprisal"] is not None for t in prompt):
            lines += ["", paint("prompt", "1") + "  " + _legend("surprisal", paint, loop=False)]
            lines += _coloured(prompt, "surprisal", width)
        lines += ["", paint("completion", "1") + "  " + _legend("entropy", paint, loop=any(t.loop for t in token_lines))]
        for line in token_lines:
            if len(token_lines) > 1:
                lines.append(f"  sequence {line.sequence}")
            if line.gaps:
                lines.append(paint(f"  (sampled steps only, from {line.source}; ... marks steps without text)", _UNRECORDED))
            lines += _coloured(line.tokens, "entropy", width)
        return lines
    if completion is not None:
        texts = [(None, completion)]
    else:
        complete = [line for line in token_lines if not line.gaps]
        texts = [(line.sequence if len(complete) > 1 else None, "".join(t.text for t in line.tokens)) for line in complete]
    if not texts:
        return []
    lines = ["", paint("completion", "1")]
    for sequence, text in texts:
        if sequence is not None:
            lines.append(f"  sequence {sequence}")
        lines += [textwrap.indent(part, "  ") for part in textwrap.wrap(text, width=width - 2) or ["(empty)"]]
    return lines


def _legend(stat: str, paint, *, loop: bool) -> str:
    keys = [paint(f"■ {label}", code) for _, code, label in COLOUR_BANDS[stat]]
    marks = [paint("flagged step", _FLAGGED)] + ([paint("repetition loop", _LOOP)] if loop else [])
    return f"{stat}: " + " ".join(keys) + "  " + " ".join(marks)


def _coloured(tokens: list[Token], stat: str, width: int) -> list[str]:
    """Tokens painted by `stat`, wrapped at token boundaries (ANSI codes take no columns), indented by two."""
    lines, current, column = [], "  ", 2
    previous_step = None
    for token in tokens:
        if previous_step is not None and token.step is not None and token.step - previous_step > 1:
            current, column = current + "\033[2m...\033[0m", column + 3
        previous_step = token.step
        for index, part in enumerate(token.text.split("\n")):
            if index:
                lines.append(current)
                current, column = "  ", 2
            if not part:
                continue
            if column + len(part) > width and column > 2:
                lines.append(current)
                current, column = "  ", 2
                part = part.lstrip(" ")
            current += f"\033[{_codes(token, stat)}m{part}\033[0m"
            column += len(part)
    return lines + [current]


def _codes(token: Token, stat: str) -> str:
    value = token.values.get(stat)
    if value is None or not math.isfinite(value):
        codes = [_UNRECORDED]
    else:
        codes = [next(code for upper, code, _ in COLOUR_BANDS[stat] if value < upper)]
    if token.flagged:
        codes.append(_FLAGGED)
    if token.in_loop:
        codes.append(_LOOP)
    return ";".join(codes)


def _entropy_lines(report: Report) -> list[str]:
    series = step_series(report)
    values = series.values.get("entropy", [])
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return [_row("entropy", "no per-step values recorded")]
    how = series.describe(report.usage.output_tokens)
    summary = f"{min(finite):.2f}–{max(finite):.2f} bits, mean {sum(finite) / len(finite):.2f}; {how}"
    return [_row("entropy", sparkline(values, floor=0.0)), _row("", summary)]


def _row(name: str, value: str) -> str:
    return f"{name:<15}{value}"


def _bar(score: float | None, width: int = 10) -> str:
    if score is None:
        return ""
    filled = round(max(0.0, min(1.0, score)) * width)
    return "█" * filled + "░" * (width - filled)


def _when(report: Report) -> str:
    if report.start_time_unix_nano is None:
        return "?"
    start = datetime.fromtimestamp(report.start_time_unix_nano / 1e9, timezone.utc).astimezone()
    text = start.isoformat(timespec="seconds")
    if report.end_time_unix_nano is not None:
        text += f"  ({(report.end_time_unix_nano - report.start_time_unix_nano) / 1e9:.2f} s)"
    return text


def _int(value) -> str:
    return "?" if value is None else str(value)


def _mean(values):
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None
