"""`corevital runs list|show|compare`: the local run store, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import datetime, timezone

from ..store.runs import LIST_COLUMNS, RunFilter, RunStore

_TABLE_COLUMNS = (
    ("run_id", "run id"),
    ("time", "time"),
    ("model", "model"),
    ("prompt_key", "prompt"),
    ("risk_score", "risk"),
    ("risk_label", "label"),
    ("flags", "flags"),
    ("entropy_mean", "entropy"),
    ("output_tokens", "tokens"),
)
_COMPARE_COLUMNS = ("model", "runs", "prompts", "mean_risk", "mean_entropy")


def runs(args: argparse.Namespace) -> int:
    store = RunStore(args.db, args.db_timeout)
    if args.runs_command == "list":
        rows = store.runs(_filter(args))
        for row in rows:
            row["time"] = _iso(row["start_time_unix_nano"])
        _emit(rows, args.format, ("time", *LIST_COLUMNS), _TABLE_COLUMNS, empty="no runs match")
    elif args.runs_command == "show":
        from ..html_report.tokens import TokenText
        from .render import render, report_json, use_colour  # the report model: only `show` needs it

        report = store.report(args.run_id)
        token_text = TokenText.from_json(store.token_text(args.run_id))
        if args.json:
            print(report_json(report, token_text))
        else:
            print(render(report, colour=use_colour(sys.stdout), token_text=token_text))
    else:
        comparisons = [c.as_dict() for c in store.compare(args.model or (), _filter(args))]
        columns = tuple(comparisons[0]) if comparisons else _COMPARE_COLUMNS
        _emit(comparisons, args.format, columns, [(c, c) for c in columns], empty="no runs to compare")
        if comparisons and not any(c["runs"] for c in comparisons):
            print("(the models share no prompt: run them on the same --prompt to compare)", file=sys.stderr)
    return 0


def _filter(args) -> RunFilter:
    return RunFilter(
        model=getattr(args, "model_filter", None),
        prompt_hash=args.prompt_hash,
        min_risk=getattr(args, "min_risk", None),
        max_risk=getattr(args, "max_risk", None),
        label=getattr(args, "label", None),
        limit=getattr(args, "limit", None),
    )


def _emit(rows: list[dict], fmt: str, columns, table_columns, *, empty: str) -> None:
    if fmt == "json":
        print(json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])
        sys.stdout.write(buffer.getvalue())
    elif not rows:
        print(empty)
    else:
        print(_table(rows, table_columns))


def _table(rows: list[dict], columns) -> str:
    cells = [[header for _, header in columns]]
    cells += [[_cell(key, row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in cells)


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "prompt_key":
        return value[:12]
    if key == "flags":
        return ",".join(value) or "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _csv_value(value):
    if isinstance(value, list):
        return ";".join(map(str, value))
    return "" if value is None else value


def _iso(nanoseconds: int | None) -> str | None:
    if nanoseconds is None:
        return None
    return datetime.fromtimestamp(nanoseconds / 1e9, timezone.utc).isoformat(timespec="seconds")
