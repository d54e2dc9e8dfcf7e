"""The self-contained HTML page: one run in full, or several side by side (compare view).

Everything is inline (CSS, SVG, a few lines of script for tooltips); a Content-Security-Policy
forbids any network access, so the page looks the same offline, attached to a ticket or
opened from a CI artifact.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

from ..health_vocabulary import RISK_CRITICAL, RISK_HEALTHY, RISK_WARNING
from ..report import Report
from ..report.views import layer_grid, rag_summary, raised_flags, shown_sequence, step_series
from . import svg, token_view
from .tokens import TokenText

_LABEL_CLASS = {RISK_HEALTHY: "ok", RISK_WARNING: "warn", RISK_CRITICAL: "bad"}
_TIMELINES = (
    ("entropy", "Entropy (bits)", "entropy of the next-token distribution, raw logits"),
    ("surprisal", "Surprisal (bits)", "how unexpected the chosen token was"),
    ("margin", "Margin (probability)", "top-1 minus top-2 probability"),
)
_NO_TRACE = "needs a full trace: run with <code>--capture full</code> (or <code>on_risk</code> on a risky run)"
MAX_PROMPT_POSITIONS = 160

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
main{max-width:840px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 4px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:14px 16px;margin:12px 0}
.meta{color:#475569;font-size:13px}.meta b{color:#0f172a;font-weight:600}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:700;font-size:13px;color:#fff}
.ok{background:#16a34a}.warn{background:#d97706}.bad{background:#dc2626}.unknown{background:#64748b}
.chip{display:inline-block;background:#fef3c7;color:#92400e;border-radius:4px;padding:1px 8px;margin:2px 4px 2px 0;font-size:12px}
.chip.none{background:#dcfce7;color:#166534}
.risk{font-size:30px;font-weight:700;margin-right:10px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e2e8f0}
th{background:#f1f5f9}
svg.chart{display:block;max-width:100%;height:auto;background:#fff}
svg text{font-size:11px;fill:#334155}
svg rect.plot{fill:#fff;stroke:#cbd5e1}
svg line.mark{stroke:#dc2626;stroke-dasharray:3 3;stroke-width:1.2}
.legend{font-size:12px;margin:4px 0 0 56px}.key{margin-right:14px}.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.empty,.note{color:#64748b;font-style:italic}
#tip{position:absolute;pointer-events:none;background:#0f172a;color:#fff;font-size:12px;padding:3px 7px;border-radius:4px;white-space:nowrap}
details>summary{cursor:pointer;font-weight:600;margin:8px 0}
code{background:#f1f5f9;padding:0 3px;border-radius:3px}
""" + token_view.CSS

_SCRIPT = """
(function () {
  var tip = document.getElementById("tip");
  document.addEventListener("mouseover", function (event) {
    var target = event.target.closest ? event.target.closest("[data-tip]") : null;
    if (!target) { tip.hidden = true; return; }
    tip.textContent = target.getAttribute("data-tip");
    tip.hidden = false;
  });
  document.addEventListener("mousemove", function (event) {
    tip.style.left = (event.pageX + 12) + "px";
    tip.style.top = (event.pageY + 12) + "px";
  });
  document.querySelectorAll("select.sequence").forEach(function (select) {  // one sequence of a batch at a time
    function show() {
      document.querySelectorAll('.tokens[data-run="' + select.dataset.run + '"]').forEach(function (block) {
        block.hidden = block.dataset.sequence !== select.value;
      });
    }
    select.addEventListener("change", show);
    show();
  });
  document.documentElement.setAttribute("data-charts", String(document.querySelectorAll("svg.chart").length));
})();
"""


def build_page(
    reports: list[Report], names: list[str] | None = None, token_texts: list[TokenText | None] | None = None
) -> str:
    """The HTML page for one report, or a compare view for several (`names` label them).

    `token_texts`: per report, the text `corevital run` kept for it (local store or --json file).
    """
    if not reports:
        raise ValueError("build_page needs at least one report")
    names = names or [r.span_id or f"run {i + 1}" for i, r in enumerate(reports)]
    token_texts = token_texts or [None] * len(reports)
    if len(reports) == 1:
        title = f"CoreVital report · {reports[0].model or 'unknown model'}"
        body = _run_section(reports[0], names[0], token_texts[0], "run0", level=1)
    else:
        title = f"CoreVital compare · {len(reports)} runs"
        body = _compare_section(reports, names) + "".join(
            f"<details{' open' if i == 0 else ''}><summary>{escape(name)} · {escape(r.model or '?')}</summary>"
            f"{_run_section(r, name, text, f'run{i}', level=2)}</details>"
            for i, (r, name, text) in enumerate(zip(reports, names, token_texts))
        )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"{body}<p class=\"meta\">Generated by corevital {_version()} on {_now()}.</p>"
        f"</main><div id=\"tip\" hidden></div><script>{_SCRIPT}</script></body></html>\n"
    )


# -- one run -------------------------------------------------------------------------------


def _run_section(report: Report, name: str, token_text: TokenText | None, run_key: str, *, level: int) -> str:
    heading = "<h1>CoreVital report</h1>" if level == 1 else ""
    return (
        heading + _summary_card(report, name) + token_view.section(report, token_text, run_key) + _timelines(report)
        + _layers(report) + _prompt(report) + _details(report)
    )


def _summary_card(report: Report, name: str) -> str:
    label = report.risk.label or "unknown"
    score = "n/a" if report.risk.score is None else f"{report.risk.score:.2f}"
    flags = raised_flags(report)
    chips = "".join(
        f'<span class="chip">{escape(_flag_text(report, flag))}</span>' for flag in flags
    ) or '<span class="chip none">no health flags</span>'
    rows = [
        ("factors", ", ".join(report.risk.factors) or "none"),
        ("blamed layers", ", ".join(map(str, report.layers_blamed)) or "none"),
    ]
    if report.early_warning.failure_risk is not None:
        signals = ", ".join(report.early_warning.signals)
        rows.append(("early warning", f"{report.early_warning.failure_risk:.2f}" + (f" ({signals})" if signals else "")))
    if report.rag is not None:
        rows.append(("rag context", rag_summary(report.rag)))
    if report.corevital_error:
        rows.append(("corevital error", report.corevital_error))
    usage = report.usage
    return (
        '<div class="card">'
        f'<div><span class="risk">{score}</span><span class="badge {_LABEL_CLASS.get(label, "unknown")}">'
        f"{escape(label)}</span></div>"
        f'<p class="meta"><b>{escape(report.model or "unknown model")}</b> · run <b>{escape(name)}</b> · '
        f"{escape(_when(report))} · {escape(report.capture_mode or '?')} capture · "
        f"{_int(usage.input_tokens)} prompt / {_int(usage.output_tokens)} generated tokens"
        f"{' (' + escape(', '.join(report.finish_reasons)) + ')' if report.finish_reasons else ''}</p>"
        f"<p>{escape(report.narrative or 'No narrative recorded.')}</p>"
        f"<div>{chips}</div>"
        "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table></div>"
    )


def _timelines(report: Report) -> str:
    series = step_series(report)
    if not series:
        return "<h2>Timelines</h2><p class=\"empty\">no per-step values recorded</p>"
    how = series.describe(report.usage.output_tokens)
    parts = [f"<h2>Timelines</h2><p class=\"note\">{escape(how)}; dashed red lines mark flagged steps.</p>"]
    for stat, title, explanation in _TIMELINES:
        parts.append(f"<h3>{escape(title)}</h3><p class=\"meta\">{escape(explanation)}</p>")
        parts.append(svg.line_chart([svg.Line(stat, series.steps, series.values[stat])], y_label=title.split(" (")[0], marks=series.flagged))
    return "".join(parts)


def _layers(report: Report) -> str:
    parts = ["<h2>Layers × steps</h2>"]
    norms = layer_grid(report, "hidden_l2_norm")
    entropy = layer_grid(report, "attention_entropy")
    parts.append("<h3>Hidden-state L2 norm</h3>")
    parts.append(svg.heatmap(norms, row_label="layer", col_label="step", value_label="L2 norm", log=True) if norms else f'<p class="empty">{_NO_TRACE}</p>')
    parts.append("<h3>Attention entropy (mean over heads, bits)</h3>")
    if entropy:
        parts.append(svg.heatmap(entropy, row_label="layer", col_label="step", value_label="entropy"))
    elif report.attention_unavailable_reason:
        parts.append(f'<p class="empty">attention not observed: {escape(report.attention_unavailable_reason)}</p>')
    else:
        parts.append(f'<p class="empty">{_NO_TRACE}</p>')
    return "".join(parts)


def _prompt(report: Report) -> str:
    if report.prompt is None or not report.prompt.rows:
        return f'<h2>Prompt</h2><p class="empty">prompt telemetry {_NO_TRACE}</p>'
    row = report.prompt.rows[shown_sequence(report) if shown_sequence(report) < len(report.prompt.rows) else 0]
    parts = ["<h2>Prompt</h2>"]
    if row.surprisal:
        parts.append("<h3>Prompt surprisal (bits per token)</h3>")
        parts.append(svg.bar_chart(row.surprisal, x_label="prompt position", y_label="surprisal"))
    attention = _prompt_attention(row)
    if attention is not None:
        layer, grid = attention
        parts.append(f"<h3>Prompt attention, layer {layer} (mean over heads)</h3>")
        parts.append(svg.heatmap(grid, row_label="query position", col_label="key position", value_label="weight"))
    if row.basin:
        parts.append("<h3>Basin scores (layer × head)</h3><p class=\"meta\">mean attention on the middle third of the prompt over the outer thirds; low values: the middle is ignored</p>")
        parts.append(svg.heatmap(row.basin, row_label="layer", col_label="head", value_label="basin"))
    if row.layer_transformation:
        parts.append("<h3>Layer transformation</h3>")
        parts.append(svg.bar_chart(row.layer_transformation, x_label="layer", y_label="1 - cosine"))
    return "".join(parts)


def _prompt_attention(row) -> tuple[int, list[list[float | None]]] | None:
    """The last layer's sparse prompt attention as a dense [query][key] grid, averaged over heads."""
    if not row.attention:
        return None
    layer = len(row.attention) - 1
    sparse = row.attention[layer]
    heads = len(sparse.weight)
    positions = [p for head in sparse.query + sparse.key for p in head]
    if not heads or not positions:
        return None
    size = min(max(positions) + 1, MAX_PROMPT_POSITIONS)
    grid = [[0.0] * size for _ in range(size)]
    for queries, keys, weights in zip(sparse.query, sparse.key, sparse.weight):
        for q, k, w in zip(queries, keys, weights):
            if q < size and k < size:
                grid[q][k] += w / heads
    return layer, grid


def _details(report: Report) -> str:
    request = {k: v for k, v in report.request.model_dump().items() if v is not None}
    payload = report.payload
    rows = [
        ("trace id", report.trace_id or "-"),
        ("span id", report.span_id or "-"),
        ("prompt hash", report.prompt_hash or "-"),
        ("request", ", ".join(f"{k}={v}" for k, v in request.items()) or "-"),
        ("full trace", (", ".join(payload.sections) + (f"; truncated: {', '.join(payload.truncated)}" if payload.truncated else "")) if payload.present else "not attached"),
    ]
    return "<h2>Details</h2><table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows) + "</table>"


# -- several runs --------------------------------------------------------------------------


def _compare_section(reports: list[Report], names: list[str]) -> str:
    header = "<tr><th>run</th><th>model</th><th>risk</th><th>label</th><th>flags</th><th>entropy</th><th>surprisal</th><th>margin</th><th>tokens</th></tr>"
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(r.model or '?')}</td><td>{_num(r.risk.score)}</td>"
        f"<td>{escape(r.risk.label or '-')}</td><td>{escape(', '.join(raised_flags(r)) or '-')}</td>"
        f"<td>{_num(r.logits.entropy_mean)}</td><td>{_num(r.logits.surprisal_mean)}</td><td>{_num(r.logits.margin_mean)}</td>"
        f"<td>{_int(r.usage.output_tokens)}</td></tr>"
        for r, name in zip(reports, names)
    )
    lines = []
    for i, (report, name) in enumerate(zip(reports, names)):
        series = step_series(report)
        lines.append(svg.Line(name, series.steps, series.values.get("entropy", []), svg.PALETTE[i % len(svg.PALETTE)]))
    return (
        f"<h1>CoreVital compare</h1><p class=\"meta\">{len(reports)} runs</p>"
        f'<div class="card"><table>{header}{rows}</table></div>'
        "<h2>Risk by run</h2>"
        + svg.bar_chart([r.risk.score for r in reports], x_label="run", y_label="risk", names=names)
        + "<h2>Entropy by step</h2>"
        + svg.line_chart(lines, y_label="entropy (bits)")
    )


# -- formatting ----------------------------------------------------------------------------


def _flag_text(report: Report, flag: str) -> str:
    if flag == "high_entropy":
        return f"high_entropy ({_steps(report.health.high_entropy_steps)})"
    return flag


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _when(report: Report) -> str:
    if report.start_time_unix_nano is None:
        return "time unknown"
    return datetime.fromtimestamp(report.start_time_unix_nano / 1e9, timezone.utc).isoformat(timespec="seconds")


def _num(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _int(value) -> str:
    return "?" if value is None else str(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from ..version import __version__

    return __version__
