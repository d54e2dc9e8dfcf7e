"""`corevital report --html`: the self-contained page, checked in a real headless Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest

from opentelemetry_instrumentation_corevital.cli import main
from opentelemetry_instrumentation_corevital.report import Report

from .browser import pixels, visit

LINE_BLUE = np.array([0x25, 0x63, 0xEB])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, llama_dir, gpt2_dir):
    """A full-capture Llama run (stored and as JSON) and a summary-capture GPT-2 run (JSON)."""
    folder = tmp_path_factory.mktemp("report")
    db = str(folder / "runs.db")
    for name, model_dir, capture in (("full", llama_dir, "full"), ("summary", gpt2_dir, "summary")):
        code = main(
            ["run", "--model", str(model_dir), "--prompt", "zq5 zq6 zq7 zq8", "--max-new-tokens", "16",
             "--capture", capture, "--db", db, "--json", str(folder / f"{name}.json"), "--quiet"]
        )
        assert code == 0
    return folder, db


def _report(folder, name) -> Report:
    return Report.model_validate_json((folder / f"{name}.json").read_text())


def _write_page(args) -> None:
    assert main(["report", *args]) == 0


def _blue_pixels(image: np.ndarray) -> int:
    return int((np.abs(image.astype(int) - LINE_BLUE).sum(axis=-1) < 30).sum())


def test_browser_check_sees_console_errors_and_blank_pages(tmp_path):
    """The checks below can fail: a broken page is caught, a blank one measures as blank."""
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><body><script>console.error("boom"); missingFunction();</script></body>')
    result = visit(broken, height=400)
    assert any("boom" in line for line in result.console)
    assert any("missingFunction" in line for line in result.console)
    assert pixels(result.screenshot).std() < 1.0


def test_full_trace_page_renders_every_chart_without_errors(runs, tmp_path):
    folder, db = runs
    report = _report(folder, "full")
    page = tmp_path / "full.html"
    _write_page([report.span_id[:8], "--db", db, "--html", str(page)])
    html = page.read_text()

    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)  # nothing to fetch: works offline
    for heading in ("Entropy (bits)", "Surprisal (bits)", "Margin (probability)", "Hidden-state L2 norm",
                    "Attention entropy", "Prompt surprisal", "Prompt attention, layer 2", "Basin scores"):
        assert heading in html, heading
    assert "needs a full trace" not in html
    charts = html.count('<svg class="chart"')
    assert charts == 9

    result = visit(page, height=3200)
    assert result.console == []
    assert f'data-charts="{charts}"' in result.dom  # the page's script ran to the end
    assert report.narrative.split(".")[0] in result.dom
    image = pixels(result.screenshot)
    assert image.std() > 20
    assert _blue_pixels(image) > 200  # the timelines' lines and points were painted
    packed = (image[..., 0].astype(np.int32) << 16) | (image[..., 1].astype(np.int32) << 8) | image[..., 2]
    assert len(np.unique(packed)) > 200  # heatmap colour scales, not flat fills
    # one circle per generated step on each timeline
    entropy_section = html.split("Entropy (bits)")[1].split("Surprisal (bits)")[0]
    assert entropy_section.count("<circle") == report.usage.output_tokens == 16


def test_summary_page_draws_sampled_timelines_and_says_what_needs_a_full_trace(runs, tmp_path):
    folder, _ = runs
    page = tmp_path / "summary.html"
    _write_page([str(folder / "summary.json"), "--html", str(page)])
    html = page.read_text()
    assert html.count('<svg class="chart"') == 3  # entropy, surprisal, margin from the step events
    assert "every generated step (step events)" in html and html.count("needs a full trace") == 3
    result = visit(page, height=1400)
    assert result.console == []
    assert _blue_pixels(pixels(result.screenshot)) > 100


def test_compare_view_of_several_runs(runs, tmp_path):
    folder, db = runs
    full, summary = _report(folder, "full"), _report(folder, "summary")
    page = tmp_path / "compare.html"
    _write_page([full.span_id, str(folder / "summary.json"), "--db", db, "--html", str(page)])
    html = page.read_text()
    assert "CoreVital compare" in html
    table = html.split("<table>")[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # header and one row per run
    assert f"{full.risk.score:.3f}" in table and f"{summary.risk.score:.3f}" in table
    assert full.model in table and summary.model in table
    result = visit(page, height=2000)
    assert result.console == []
    assert pixels(result.screenshot).std() > 20
