"""`corevital report RUN_ID_OR_JSON... --html OUT.html`: the self-contained HTML page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from ..html_report.tokens import TOKEN_TEXT_KEY, TokenText
from ..report import Report
from .errors import CliError
from .files import check_writable, write_atomically


def report(args: argparse.Namespace) -> int:
    from ..html_report import build_page

    check_writable(args.html, "--html")
    if args.html == "-":
        raise CliError("--html -: pass a file name for the page")
    loaded = [_load(source, args.db, args.db_timeout) for source in args.sources]
    page = build_page([r for _, r, _ in loaded], [name for name, _, _ in loaded], [t for _, _, t in loaded])
    write_atomically(Path(args.html), page)
    print(f"HTML report of {len(loaded)} run{'s' if len(loaded) > 1 else ''} written to {args.html}")
    return 0


def _load(source: str, db: str, db_timeout: float) -> tuple[str, Report, TokenText | None]:
    """(name, report, the token text corevital run kept) of a run id in the store or a report JSON file."""
    path = Path(source)
    if path.is_file():
        try:
            data = path.read_bytes()
            report = Report.model_validate_json(data)
        except ValidationError as exc:
            raise CliError(f"{source}: not a CoreVital report JSON ({exc.error_count()} problems, first: {exc.errors()[0]['msg']}); write one with corevital run --json") from None
        except OSError as exc:
            raise CliError(f"{source}: cannot read it ({exc.strerror})") from None
        return (report.span_id or path.stem), report, TokenText.from_json(json.loads(data).get(TOKEN_TEXT_KEY))
    if path.suffix == ".json" or "/" in source:
        raise CliError(f"{source}: no such file")
    from ..store import RunStore

    store = RunStore(db, db_timeout)
    report = store.report(source)
    return report.span_id or source, report, TokenText.from_json(store.token_text(source))
