"""The terminal health report of one run: risk, flags, narrative, entropy sparkline, blamed layers."""

from __future__ import annotations

import math
import os
import shutil
import textwrap
from datetime import datetime, timezone

from ..html_report.series import rag_summary, step_series
from ..report import Report
from ..store.records import raised_flags

_BLOCKS = "▁▂▃▄▅▆▇█"
_LABEL_COLOURS = {"healthy": "32", "warning": "33", "critical": "31"}  # green, yellow, red
SPARKLINE_WIDTH = 60


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


def render(report: Report, *, colour: bool = False, completion: str | None = None, run_id: str | None = None) -> str:
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
    if completion is not None:
        lines += ["", paint("completion", "1")]
        lines += [textwrap.indent(part, "  ") for part in textwrap.wrap(completion, width=width - 2) or ["(empty)"]]
    return "\n".join(lines)


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
