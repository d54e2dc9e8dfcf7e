"""Command-line arguments of `corevital run`, `corevital runs ...` and `corevital report`."""

from __future__ import annotations

import argparse

from ..config import CAPTURE_MODES, MODE_OFF
from ..store.schema import BUSY_TIMEOUT_S, DEFAULT_DB_PATH, RISK_LABELS
from .errors import CliError

CAPTURE_CHOICES = tuple(mode for mode in CAPTURE_MODES if mode != MODE_OFF)  # a run without capture shows nothing


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised as CliError) instead of usage text and exit."""

    def error(self, message: str):
        raise CliError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="corevital",
        description="Run a model under CoreVital, keep its health report locally, inspect and compare runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    _add_run(commands)
    _add_runs(commands)
    _add_report(commands)
    _add_calibrate(commands)
    return parser


def _db_option(parser) -> None:
    parser.add_argument("--db", default=DEFAULT_DB_PATH, help="SQLite run store (default: ./%(default)s)")
    parser.add_argument("--db-timeout", type=_seconds, default=BUSY_TIMEOUT_S, metavar="SECONDS",
                        help="how long to wait for another process writing the store (default: %(default)s)")


def _add_run(commands) -> None:
    run = commands.add_parser("run", help="generate once under CoreVital and print the health report")
    run.add_argument("--model", help="model folder (save_pretrained), .gguf file or cached hub id; default: SmolLM2-135M-Instruct")
    run.add_argument("prompt", nargs="?", metavar="PROMPT", help="the user message (or --prompt TEXT, or --prompt-file FILE)")
    run.add_argument("--prompt", dest="prompt_option", metavar="TEXT", help="the user message, as an option")
    run.add_argument("--prompt-file", metavar="FILE", help="read the user message from a UTF-8 text file ('-': standard input)")
    run.add_argument("--max-new-tokens", type=int, default=40, help="default: %(default)s")
    run.add_argument("--capture", choices=CAPTURE_CHOICES, help="capture mode (default: OTEL_INSTRUMENTATION_COREVITAL_CAPTURE_MODE or summary)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    sampling = run.add_argument_group("sampling (greedy decoding unless one of these is given)")
    sampling.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sampling.add_argument("--temperature", type=float)
    sampling.add_argument("--top-p", type=float)
    sampling.add_argument("--top-k", type=int)
    sampling.add_argument("--seed", type=int, help="torch seed, for a reproducible sampled run")
    sampling.add_argument("--num-return-sequences", type=int, default=1, metavar="N",
                          help="sample N answers in one batch (needs sampling; default: %(default)s)")
    run.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                     help="wrap the prompt in the tokenizer's chat template (auto: when it has one)")
    run.add_argument("--rag-context", metavar="FILE",
                     help="JSON file describing the retrieved context (context_tokens, document_ids, document_titles, metadata)")
    run.add_argument("--json", metavar="OUT", help="also write the full report as JSON to OUT ('-' for stdout)")
    _db_option(run)
    run.add_argument("--no-store", action="store_true", help="do not keep the run in the local store")
    run.add_argument("--quiet", action="store_true", help="no progress indicator")


def _add_runs(commands) -> None:
    runs = commands.add_parser("runs", help="list, show and compare the runs in the local store")
    sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=_Parser, metavar="SUBCOMMAND")

    listing = sub.add_parser("list", help="stored runs, newest first")
    listing.add_argument("--model", dest="model_filter", help="only this model (exact gen_ai.request.model)")
    _prompt_hash_option(listing)
    listing.add_argument("--min-risk", type=_unit, help="only runs with risk >= this")
    listing.add_argument("--max-risk", type=_unit, help="only runs with risk <= this")
    listing.add_argument("--label", choices=RISK_LABELS, help="only runs with this risk label")
    listing.add_argument("--limit", type=_positive, help="at most this many runs")
    _format_option(listing)
    _db_option(listing)

    show = sub.add_parser("show", help="the health report of one run")
    show.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of one")
    show.add_argument("--json", action="store_true", help="the full report as JSON")
    _db_option(show)

    compare = sub.add_parser("compare", help="compare models on the prompts they all ran")
    compare.add_argument("--model", action="append", metavar="MODEL", help="a model to compare (repeat; default: all)")
    _prompt_hash_option(compare)
    _format_option(compare)
    _db_option(compare)


def _add_report(commands) -> None:
    report = commands.add_parser("report", help="write a self-contained HTML report of one or more runs")
    report.add_argument("sources", nargs="+", metavar="RUN_ID_OR_JSON",
                        help="run id (or prefix) in the store, or a report JSON file (corevital run --json); several: a compare view")
    report.add_argument("--html", required=True, metavar="OUT.html", help="the page to write")
    _db_option(report)


def _add_calibrate(commands) -> None:
    calibrate = commands.add_parser("calibrate", help="fit a profile to your model from its own unlabelled prompts")
    calibrate.add_argument("--model", help="as for `run`; default: SmolLM2-135M-Instruct")
    calibrate.add_argument("--prompts", metavar="FILE",
                           help="one prompt per line (or .jsonl); default: a built-in generic set")
    calibrate.add_argument("--out", required=True, metavar="PROFILE.json", help="the profile file to write")
    calibrate.add_argument("--name", help="profile name on the spans (default: calibrated-MODEL)")
    calibrate.add_argument("--samples", type=_positive, default=4, help="seeded samples per prompt (default: %(default)s)")
    calibrate.add_argument("--max-new-tokens", type=_positive, default=48, help="default: %(default)s")
    calibrate.add_argument("--batch-size", type=_positive, default=8, help="default: %(default)s")
    calibrate.add_argument("--max-minutes", type=float, default=30.0, help="stop generating after this long (default: %(default)s)")
    calibrate.add_argument("--held-out", type=_unit, default=0.25, help="fraction of prompts kept for scoring (default: %(default)s)")
    calibrate.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    calibrate.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                           help="wrap prompts in the tokenizer's chat template (auto: when it has one)")
    calibrate.add_argument("--work-dir", metavar="DIR", help="finished batches, for resuming (default: OUT.work)")
    calibrate.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    calibrate.add_argument("--quiet", action="store_true", help="no progress lines")


def _prompt_hash_option(parser) -> None:
    parser.add_argument("--prompt-hash", metavar="HASH", help="only runs whose prompt hash (or prompt text hash) starts with this")


def _format_option(parser) -> None:
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: %(default)s")


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 3600 seconds")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value
