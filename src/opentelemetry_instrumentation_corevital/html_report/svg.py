"""Inline SVG charts (no scripts, no network): line timelines, heatmaps, bar charts.

Every value carries a `data-tip` attribute (read by the page's tooltip script) and an SVG
`<title>` (the browser's own tooltip), so the charts stay readable without JavaScript.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from html import escape

WIDTH = 760
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 12, 34
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f")
# viridis, 10 stops
_GRADIENT_IDS = itertools.count()
_VIRIDIS = (
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
)


@dataclass
class Line:
    name: str
    x: list[int]
    y: list[float | None]
    colour: str = PALETTE[0]


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.2e}"
    return f"{value:.3g}"


def _tip(text: str) -> str:
    return f' data-tip="{escape(text)}"><title>{escape(text)}</title>'


def line_chart(lines: list[Line], *, y_label: str, x_label: str = "step", marks: list[int] = (), height: int = 200) -> str:
    xs = [x for line in lines for x in line.x]
    ys = _finite(y for line in lines for y in line.y)
    if not xs or not ys:
        return '<p class="empty">no values recorded</p>'
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(0.0, min(ys)), max(ys)
    if y_high == y_low:
        y_high = y_low + 1.0
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM

    def px(x):
        return PAD_LEFT + (0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)) * inner_w

    def py(y):
        return PAD_TOP + (1 - (y - y_low) / (y_high - y_low)) * inner_h

    parts = [_frame(height, y_label, x_label, (x_low, x_high), (y_low, y_high))]
    for step in marks:
        if x_low <= step <= x_high:
            parts.append(
                f'<line class="mark" x1="{px(step):.1f}" x2="{px(step):.1f}" y1="{PAD_TOP}" y2="{PAD_TOP + inner_h}"'
                f'{_tip(f"flagged step {step}")}</line>'
            )
    for line in lines:
        segment: list[str] = []
        segments = [segment]
        for x, y in zip(line.x, line.y):
            if y is None or not math.isfinite(y):
                segment = []
                segments.append(segment)
            else:
                segment.append(f"{px(x):.1f},{py(y):.1f}")
        for points in segments:
            if len(points) > 1:
                parts.append(f'<polyline fill="none" stroke="{line.colour}" stroke-width="1.6" points="{" ".join(points)}"/>')
        radius = 2.6 if len(line.x) <= 80 else 1.4
        for x, y in zip(line.x, line.y):
            if y is not None and math.isfinite(y):
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius}" fill="{line.colour}"'
                    f'{_tip(f"{line.name}: {x_label} {x}: {_fmt(y)}")}</circle>'
                )
    legend = "".join(
        f'<span class="key"><i style="background:{line.colour}"></i>{escape(line.name)}</span>' for line in lines
    ) if len(lines) > 1 else ""
    return _svg(height, "".join(parts), y_label) + (f'<div class="legend">{legend}</div>' if legend else "")


def heatmap(grid: list[list[float | None]], *, row_label: str, col_label: str, value_label: str, log: bool = False) -> str:
    """grid[row][col]; rows drawn top to bottom (row 0 on top)."""
    values = _finite(v for row in grid for v in row)
    if not values:
        return '<p class="empty">no values recorded</p>'
    transform = (lambda v: math.log10(v) if v > 0 else None) if log else (lambda v: v)
    scaled = _finite(transform(v) for v in values)
    low, high = (min(scaled), max(scaled)) if scaled else (0.0, 1.0)
    rows, cols = len(grid), max(len(row) for row in grid)
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT - 70
    cell_w = inner_w / cols
    cell_h = max(4.0, min(18.0, 360 / rows))
    height = int(PAD_TOP + rows * cell_h + PAD_BOTTOM)
    parts = []
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            t = transform(value) if value is not None and math.isfinite(value) else None
            fill = "#e5e7eb" if t is None else _colour((t - low) / (high - low) if high > low else 0.5)
            shown = "not observed" if value is None else _fmt(value)
            parts.append(
                f'<rect x="{PAD_LEFT + c * cell_w:.2f}" y="{PAD_TOP + r * cell_h:.2f}" width="{cell_w + 0.3:.2f}" '
                f'height="{cell_h + 0.3:.2f}" fill="{fill}"{_tip(f"{row_label} {r}, {col_label} {c}: {value_label} {shown}")}</rect>'
            )
    bottom = PAD_TOP + rows * cell_h
    parts.append(_text(PAD_LEFT - 6, PAD_TOP + cell_h * 0.8, "0", "end"))
    parts.append(_text(PAD_LEFT - 6, bottom, str(rows - 1), "end"))
    parts.append(_text(14, PAD_TOP + rows * cell_h / 2, row_label, "middle", rotate=True))
    parts.append(_text(PAD_LEFT, bottom + 14, "0", "start"))
    parts.append(_text(PAD_LEFT + inner_w, bottom + 14, str(cols - 1), "end"))
    parts.append(_text(PAD_LEFT + inner_w / 2, bottom + 28, col_label, "middle"))
    parts.append(_legend_bar(PAD_LEFT + inner_w + 14, PAD_TOP, bottom - PAD_TOP, low, high, log))
    return _svg(height, "".join(parts), f"{value_label} by {row_label} and {col_label}")


def bar_chart(values: list[float | None], *, x_label: str, y_label: str, names: list[str] | None = None, height: int = 180) -> str:
    finite = _finite(values)
    if not finite:
        return '<p class="empty">no values recorded</p>'
    high = max(max(finite), 0.0) or 1.0
    low = min(min(finite), 0.0)
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    width = inner_w / len(values)
    parts = [_frame(height, y_label, x_label, (0, len(values) - 1), (low, high), x_ticks=names is None)]
    for i, name in enumerate(names or ()):
        label = name if len(name) <= 18 else name[:17] + "…"
        parts.append(_text(PAD_LEFT + (i + 0.5) * width, PAD_TOP + inner_h + 14, label, "middle"))
    for i, value in enumerate(values):
        if value is None or not math.isfinite(value):
            continue
        top = PAD_TOP + (1 - (max(value, 0) - low) / (high - low)) * inner_h
        bottom = PAD_TOP + (1 - (min(value, 0) - low) / (high - low)) * inner_h
        name = names[i] if names else f"{x_label} {i}"
        colour = PALETTE[i % len(PALETTE)] if names else PALETTE[0]
        parts.append(
            f'<rect x="{PAD_LEFT + i * width + width * 0.1:.2f}" y="{top:.2f}" width="{width * 0.8:.2f}" '
            f'height="{max(bottom - top, 0.5):.2f}" fill="{colour}"{_tip(f"{name}: {_fmt(value)}")}</rect>'
        )
    return _svg(height, "".join(parts), y_label)


def _frame(height, y_label, x_label, x_range, y_range, x_ticks: bool = True) -> str:
    inner_h = height - PAD_TOP - PAD_BOTTOM
    right = WIDTH - PAD_RIGHT
    bottom = PAD_TOP + inner_h
    parts = [
        f'<rect class="plot" x="{PAD_LEFT}" y="{PAD_TOP}" width="{right - PAD_LEFT}" height="{inner_h}"/>',
        _text(PAD_LEFT - 6, PAD_TOP + 10, _fmt(y_range[1]), "end"),
        _text(PAD_LEFT - 6, bottom, _fmt(y_range[0]), "end"),
        _text(14, PAD_TOP + inner_h / 2, y_label, "middle", rotate=True),
        _text(PAD_LEFT + (right - PAD_LEFT) / 2, bottom + 28, x_label, "middle"),
    ]
    if x_ticks:
        parts += [_text(PAD_LEFT, bottom + 14, str(x_range[0]), "start"), _text(right, bottom + 14, str(x_range[1]), "end")]
    return "".join(parts)


def _legend_bar(x: float, y: float, height: float, low: float, high: float, log: bool) -> str:
    stops = "".join(
        f'<stop offset="{i / 9:.3f}" stop-color="{_colour(1 - i / 9)}"/>' for i in range(10)
    )
    gradient_id = f"scale{next(_GRADIENT_IDS)}"
    label = (lambda v: _fmt(10**v)) if log else _fmt
    return (
        f'<defs><linearGradient id="{gradient_id}" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="{height:.1f}" fill="url(#{gradient_id})"/>'
        + _text(x + 16, y + 10, label(high), "start")
        + _text(x + 16, y + height, label(low), "start")
        + (_text(x + 16, y + height / 2, "log", "start") if log else "")
    )


def _colour(t: float) -> str:
    return palette_colour(_VIRIDIS, t)


def palette_colour(palette: tuple[tuple[int, int, int], ...], t: float) -> str:
    """The hex colour at `t` in [0, 1] (clamped) along `palette`, linearly between its stops."""
    t = max(0.0, min(1.0, t)) * (len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    f = t - i
    r, g, b = (round(a + (b - a) * f) for a, b in zip(palette[i], palette[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def _text(x: float, y: float, text: str, anchor: str, rotate: bool = False) -> str:
    transform = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{transform}>{escape(text)}</text>'


def _svg(height: int, body: str, label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )
