"""The text token by token: kept locally by `corevital run`, shown in the HTML page (checked in
headless Chromium) and in the terminal, each token with its step's entropy, surprisal and margin.
"""

from __future__ import annotations

import contextlib
import html as html_lib
import io
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from transformers import LlamaConfig, LlamaForCausalLM

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.cli import main
from opentelemetry_instrumentation_corevital.cli.render import COLOUR_BANDS, render
from opentelemetry_instrumentation_corevital.html_report import build_page
from opentelemetry_instrumentation_corevital.html_report.tokens import TOKEN_TEXT_KEY, TokenText
from opentelemetry_instrumentation_corevital.report import Report
from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from tests.conftest import VOCAB, prompt_ids
from tests.support.tokenizers import tiny_tokenizer

from .browser import pixels, visit
from .conftest import cli_env, cli_main, save_tiny

_TOKEN = re.compile(r'<span class="(tok[^"]*)" style="background:(#[0-9a-f]{6})" data-tip="([^"]*)">([^<]*)</span>')
_ANSI_TOKEN = re.compile(r"\033\[([0-9;]+)m([^\033]*)\033\[0m")
LOOP_PROMPT = " ".join(f"zq{i}" for i in prompt_ids(seed=3)[0].tolist())  # the tiny Llama loops on it (period 2)


def _sharp_llama() -> LlamaForCausalLM:
    """A tiny Llama with large initial weights: peaked next-token distributions whose entropy varies by step."""
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=3, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        initializer_range=1.0,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory):
    return save_tiny(_sharp_llama(), tmp_path_factory.mktemp("sharp-llama"))


def _run(args: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def stored(tmp_path_factory, sharp_dir, llama_dir):
    """Full-capture runs kept in one store: the sharp Llama (varied entropy) and the tiny Llama on a looping prompt."""
    folder = tmp_path_factory.mktemp("token-view")
    db = str(folder / "runs.db")
    runs = {}
    for name, model_dir, prompt, steps in (("sharp", sharp_dir, "zq5 zq6 zq7 zq8", 20), ("loop", llama_dir, LOOP_PROMPT, 24)):
        printed = _run(["run", prompt, "--model", str(model_dir), "--max-new-tokens", str(steps), "--capture", "full",
                        "--db", db, "--json", str(folder / f"{name}.json"), "--quiet"])
        report = Report.model_validate_json((folder / f"{name}.json").read_text())
        runs[name] = (report, _printed_completion(printed))
    return folder, db, runs


def _printed_completion(printed: str) -> str:
    lines = printed.splitlines() + [""]
    start = lines.index("completion") + 1
    return " ".join(" ".join(lines[start:lines.index("", start)]).split())


def _tokens(html: str, sequence: str) -> list[tuple[list[str], str, str, str]]:
    """(classes, background, tooltip, text) of each token in one text block of the page."""
    block = re.search(rf'<div class="tokens[^"]*" data-run="run0" data-sequence="{sequence}"[^>]*>(.*?)</div>', html, re.S)
    assert block is not None, sequence
    return [(c.split(), bg, html_lib.unescape(tip), html_lib.unescape(text)) for c, bg, tip, text in _TOKEN.findall(block.group(1))]


def test_the_page_shows_every_token_with_its_numbers_and_varied_colours(stored, tmp_path):
    folder, db, runs = stored
    report, printed = runs["sharp"]
    page = tmp_path / "text.html"
    assert main(["report", report.span_id[:8], "--db", db, "--html", str(page)]) == 0
    result = visit(page, height=1200)
    assert result.console == []

    tokens = _tokens(result.dom, "0")
    steps = report.sequences[0].steps
    assert len(tokens) == report.usage.output_tokens == 20
    assert " ".join("".join(text for *_, text in tokens).split()) == printed  # the completion, token by token
    for step, (classes, _, tip, _) in enumerate(tokens):
        assert f"step {step} · entropy {steps.entropy[step]:.2f} bits · surprisal {steps.surprisal[step]:.2f} bits" \
            f" · margin {steps.margin[step]:.3f}" in tip
        assert ("flag" in classes) == (step in report.sequences[0].analysis.flagged_steps)
    backgrounds = [background for _, background, _, _ in tokens]
    assert len(set(backgrounds)) >= 8  # entropy here ranges over 0-2.6 bits

    image = pixels(result.screenshot).astype(int)
    painted = [
        colour for colour in set(backgrounds)
        if (np.abs(image - np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])).sum(axis=-1) <= 3).sum() > 40
    ]
    assert len(painted) >= 5  # the browser painted the heat colours, not one flat fill

    prompt = _tokens(result.dom, "prompt")
    surprisal = report.prompt.rows[0].surprisal
    assert [text for *_, text in prompt] == ["zq5", " zq6", " zq7", " zq8"]  # each token's share of the decoded text
    assert "surprisal not recorded" in prompt[0][2]  # nothing precedes the first position
    for position in (1, 2, 3):
        assert f"prompt position {position} · surprisal {surprisal[position - 1]:.2f} bits" in prompt[position][2]


def test_the_repetition_loop_is_highlighted(stored, tmp_path):
    folder, _, runs = stored
    report, _ = runs["loop"]
    repetition = report.sequences[0].analysis.repetition
    assert repetition is not None and repetition.period == 2
    page = tmp_path / "loop.html"
    assert main(["report", str(folder / "loop.json"), "--html", str(page)]) == 0  # from the --json file this time
    result = visit(page, height=900)
    assert result.console == []
    tokens = _tokens(result.dom, "0")
    in_loop = [step for step, (classes, *_) in enumerate(tokens) if "loop" in classes]
    assert in_loop == list(range(repetition.start_step, repetition.end_step + 1))
    assert all("in the repetition loop" in tokens[step][2] for step in in_loop)
    assert f"repetition loop, steps {repetition.start_step}-{repetition.end_step}, period 2" in result.dom


def test_several_answers_are_selectable_one_at_a_time(tmp_path, sharp_dir):
    db, out = str(tmp_path / "runs.db"), tmp_path / "batch.json"
    _run(["run", "zq5 zq6 zq7", "--model", str(sharp_dir), "--sample", "--seed", "3", "--num-return-sequences", "3",
          "--max-new-tokens", "8", "--capture", "full", "--db", db, "--json", str(out), "--quiet"])
    report = Report.model_validate_json(out.read_text())
    text = TokenText.from_json(json.loads(out.read_text())[TOKEN_TEXT_KEY])
    assert len(report.sequences) == len(text.completion) == 3
    page = tmp_path / "batch.html"
    assert main(["report", report.span_id, "--db", db, "--html", str(page)]) == 0
    result = visit(page, height=900)
    assert result.console == []

    worst = report.aggregate.worst_sequence
    assert result.dom.count('<option value="') == 3 and f'<option value="{worst}" selected' in result.dom
    for sequence in range(3):
        opening = re.search(rf'<div class="tokens[^"]*" data-run="run0" data-sequence="{sequence}"[^>]*>', result.dom).group(0)
        assert ("hidden" in opening) == (sequence != worst)  # the page's script shows the selected answer only
        tokens = _tokens(result.dom, str(sequence))
        assert [t for *_, t in tokens] == text.completion[sequence]
        entropy = report.sequences[sequence].steps.entropy
        assert all(f"step {step} · entropy {entropy[step]:.2f} bits" in tip for step, (_, _, tip, _) in enumerate(tokens))
    assert len({tuple(row) for row in text.completion}) > 1  # sampled answers differ


def _report_of_one_call(max_new_tokens: int, **settings) -> Report:
    """The report rebuilt from the span of one instrumented greedy call of the sharp Llama, as an
    application's exported span would give it."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tokenizer = tiny_tokenizer()
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=provider, **settings)
    try:
        _sharp_llama().generate(**tokenizer("zq5 zq6 zq7", return_tensors="pt"), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=None, tokenizer=tokenizer)
    finally:
        instrumentor.uninstrument()
    (span,) = memory.get_finished_spans()
    return Report.from_span(span)


def test_a_span_with_content_capture_shows_the_text_of_its_step_events(tmp_path):
    """Runs from other applications: the span's step events carry token text only with content capture."""
    with_content, without = (_report_of_one_call(10, capture_message_content=capture) for capture in (True, False))
    page = tmp_path / "events.html"
    page.write_text(build_page([with_content, without], ["with content", "without"]))
    result = visit(page, height=900)
    assert result.console == []
    events = sorted(
        (int(e.attributes[attrs.STEP_INDEX]), e.attributes) for e in with_content.events if e.name == attrs.STEP_EVENT
    )
    tokens = _tokens(result.dom, "0")
    assert [t for *_, t in tokens] == [values[attrs.STEP_TOKEN_TEXT] for _, values in events]
    for (step, values), (_, _, tip, _) in zip(events, tokens):
        assert f"step {step} · entropy {values[attrs.STEP_ENTROPY]:.2f} bits" in tip
    assert "step events (content capture)" in result.dom
    assert "no token text" in result.dom.split("without")[-1]  # the private run has no text to show


def test_sampled_step_events_show_their_tokens_with_the_gaps_marked(tmp_path):
    report = _report_of_one_call(16, capture_message_content=True, max_step_events=4)
    steps = sorted(int(e.attributes[attrs.STEP_INDEX]) for e in report.events if e.name == attrs.STEP_EVENT)
    jumps = sum(later - earlier > 1 for earlier, later in zip(steps, steps[1:]))
    assert len(steps) < 16 and jumps >= 1

    page = tmp_path / "sampled.html"
    page.write_text(build_page([report]))
    result = visit(page, height=700)
    assert result.console == []
    tokens = _tokens(result.dom, "0")
    assert [int(tip.split(" · ")[0].removeprefix("step ")) for _, _, tip, _ in tokens] == steps
    assert result.dom.count('<span class="gap"') == jumps
    assert "only the sampled steps have text" in result.dom

    coloured = render(report, colour=True)
    assert "sampled steps only" in coloured and coloured.count("\033[2m...\033[0m") == jumps


def test_the_store_keeps_the_text_locally_and_the_span_does_not_carry_it(stored, capsys):
    folder, db, runs = stored
    report, printed = runs["sharp"]
    with sqlite3.connect(db) as connection:
        document = json.loads(connection.execute("SELECT span_json FROM runs WHERE run_id = ?", (report.span_id,)).fetchone()[0])
    text = TokenText.from_json(document[TOKEN_TEXT_KEY])
    assert " ".join("".join(text.completion[0]).split()) == printed
    assert "".join(text.prompt).split() == ["zq5", "zq6", "zq7", "zq8"]
    # the span itself (what an exporter sees) has no token text: content capture is off
    assert not any(attrs.STEP_TOKEN_TEXT in event["attributes"] for event in document["events"])
    assert json.loads((folder / "sharp.json").read_text())[TOKEN_TEXT_KEY] == text.to_json()
    code, out, _ = cli_main(["runs", "show", report.span_id, "--db", db, "--json"], capsys)
    assert code == 0 and json.loads(out)[TOKEN_TEXT_KEY] == text.to_json()


def test_terminal_colours_each_token_by_its_entropy_band_with_a_legend(stored):
    folder, db, runs = stored
    report, printed = runs["loop"]
    text = TokenText.from_json(json.loads((folder / "loop.json").read_text())[TOKEN_TEXT_KEY])
    coloured = render(report, colour=True, token_text=text)
    section = coloured.split("\033[1mcompletion\033[0m")[1]
    legend, body = section.split("\n", 1)
    assert all(label in legend for _, _, label in COLOUR_BANDS["entropy"]) and "repetition loop" in legend
    painted = _ANSI_TOKEN.findall(body)
    assert " ".join(re.sub(r"\033\[[0-9;]*m", "", body).split()) == printed
    steps, repetition = report.sequences[0].steps, report.sequences[0].analysis.repetition
    for step, (codes, _) in enumerate(painted):
        band = next(code for upper, code, _ in COLOUR_BANDS["entropy"] if steps.entropy[step] < upper)
        assert codes.split(";")[0] == band
        assert ("7" in codes.split(";")) == (repetition.start_step <= step <= repetition.end_step)


def test_without_colour_the_text_is_plain(stored, capsys):
    """`runs show` to a pipe (or with NO_COLOR): the stored completion as plain text, no escape codes."""
    _, db, runs = stored
    report, printed = runs["sharp"]
    code, out, _ = cli_main(["runs", "show", report.span_id, "--db", db], capsys)
    assert code == 0
    assert "\033[" not in out
    assert _printed_completion(out) == printed


def _in_a_terminal(args: list[str], **env: str) -> str:
    """The CLI's output when its stdout is a terminal (a pseudo-terminal here)."""
    controller, terminal = pty.openpty()
    environment = cli_env(TERM="xterm-256color", **env)
    if "NO_COLOR" not in env:
        del environment["NO_COLOR"]  # cli_env turns colour off
    process = subprocess.Popen([sys.executable, "-m", "opentelemetry_instrumentation_corevital.cli", *args],
                               stdout=terminal, stderr=terminal, env=environment)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0, output
    os.close(controller)
    return output.decode()


def test_runs_show_colours_the_text_in_a_terminal_and_not_with_no_color(stored):
    _, db, runs = stored
    report, printed = runs["sharp"]
    coloured = _in_a_terminal(["runs", "show", report.span_id, "--db", db])
    assert "completion\033[0m  entropy:" in coloured  # heading and legend
    painted = _ANSI_TOKEN.findall(coloured.split("completion\033[0m")[1].split("\n", 1)[1])
    assert len(painted) == report.usage.output_tokens
    assert {codes.split(";")[0] for codes, _ in painted} == {"32", "36"}  # entropy 0-2.6 bits: two bands
    plain = _in_a_terminal(["runs", "show", report.span_id, "--db", db], NO_COLOR="1")
    assert "\033[" not in plain
    assert _printed_completion(plain.replace("\r\n", "\n")) == printed
