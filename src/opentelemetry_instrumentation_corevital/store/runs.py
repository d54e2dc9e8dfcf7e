"""`RunStore`: write CoreVital spans to the SQLite store, list, fetch and compare runs."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import FLAG_NAMES, TOKEN_TEXT_KEY, is_corevital_span, report_of_document, run_row, span_document
from .schema import BUSY_TIMEOUT_S, StoreLockedError, UnknownRunError, check_writable, connect, translate_errors

if TYPE_CHECKING:
    from ..report import Report

#: the columns `list` returns, in display order
LIST_COLUMNS = (
    "run_id",
    "start_time_unix_nano",
    "model",
    "prompt_key",
    "prompt_hash",
    "capture_mode",
    "risk_score",
    "risk_label",
    "flags",
    "entropy_mean",
    "surprisal_mean",
    "margin_mean",
    "input_tokens",
    "output_tokens",
    "has_payload",
    "trace_id",
    "service_name",
)


@dataclass(frozen=True)
class RunFilter:
    model: str | None = None  # exact gen_ai.request.model
    prompt_hash: str | None = None  # prefix of the prompt hash or the prompt text hash
    min_risk: float | None = None
    max_risk: float | None = None
    label: str | None = None  # healthy | warning | critical
    limit: int | None = None  # newest first

    def where(self) -> tuple[str, list[Any]]:
        clauses, values = [], []
        if self.model is not None:
            clauses.append("model = ?")
            values.append(self.model)
        if self.prompt_hash:
            clauses.append("(prompt_hash LIKE ? OR prompt_key LIKE ?)")
            values += [_prefix(self.prompt_hash)] * 2
        if self.min_risk is not None:
            clauses.append("risk_score >= ?")
            values.append(self.min_risk)
        if self.max_risk is not None:
            clauses.append("risk_score <= ?")
            values.append(self.max_risk)
        if self.label is not None:
            clauses.append("risk_label = ?")
            values.append(self.label)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


@dataclass
class ModelComparison:
    """One model over the prompts every compared model ran."""

    model: str
    runs: int = 0
    prompts: int = 0
    mean_risk: float | None = None
    mean_entropy: float | None = None
    flag_rates: dict[str, float | None] = field(default_factory=dict)  # None: no runs to rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "runs": self.runs,
            "prompts": self.prompts,
            "mean_risk": self.mean_risk,
            "mean_entropy": self.mean_entropy,
            **{f"{name}_rate": rate for name, rate in self.flag_rates.items()},
        }


class RunStore:
    """The runs in one SQLite file; `timeout_s`: how long a write waits for another writer."""

    def __init__(self, path: str | Path, timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        self.timeout_s = timeout_s

    def check_writable(self) -> None:
        """Fail now, writing nothing, if a run could not be stored later (see schema.check_writable)."""
        check_writable(self.path, self.timeout_s)

    def _connect(self, *, create: bool):
        return connect(self.path, create=create, timeout_s=self.timeout_s)

    def add_spans(self, spans: Sequence, token_text: Mapping[str, dict[str, Any]] | None = None) -> int:
        """Store the CoreVital spans among `spans` in one transaction; returns how many.

        `token_text`: by run id (span id), the text of the run token by token, kept with the run
        in this local file only (see html_report.tokens.TokenText).
        """
        token_text = token_text or {}
        rows = []
        for span in spans:
            if is_corevital_span(span):
                document = span_document(span)
                if document["span_id"] in token_text:
                    document[TOKEN_TEXT_KEY] = token_text[document["span_id"]]
                rows.append(run_row(document))
        if not rows:
            return 0
        columns = list(rows[0])
        statement = (
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT (run_id) DO NOTHING"
        )
        values = [[row[c] for c in columns] for row in rows]
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self._insert(statement, values)
                return len(rows)
            except StoreLockedError:
                # SQLite answers "locked" at once, without waiting, when two connections would
                # deadlock (a first writer creating the file or switching it to WAL while another
                # reads it): retry until the busy timeout, as a wait would have
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _insert(self, statement: str, values: list[list]) -> None:
        connection = self._connect(create=True)
        try:
            with translate_errors(self.path):
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(statement, values)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        finally:
            connection.close()

    def runs(self, run_filter: RunFilter = RunFilter()) -> list[dict[str, Any]]:
        where, values = run_filter.where()
        limit = f" LIMIT {int(run_filter.limit)}" if run_filter.limit else ""
        rows = self._query(
            f"SELECT {', '.join(LIST_COLUMNS)} FROM runs{where} ORDER BY start_time_unix_nano DESC, run_id{limit}",
            values,
        )
        return [_listed(row) for row in rows]

    def report(self, run_id: str) -> Report:
        return report_of_document(json.loads(self._document_row(run_id)))

    def token_text(self, run_id: str) -> dict[str, Any] | None:
        """The token text `corevital run` kept with the run (see `add_spans`); None for other runs."""
        return json.loads(self._document_row(run_id)).get(TOKEN_TEXT_KEY)

    def resolve(self, run_id: str) -> str:
        """The full run id of `run_id` or of a unique prefix of one."""
        text = run_id.strip().lower()
        if not text or any(c not in "0123456789abcdef" for c in text):
            raise UnknownRunError(f"{run_id!r} is not a run id (hex digits, as `corevital runs list` shows)")
        matches = [r["run_id"] for r in self._query("SELECT run_id FROM runs WHERE run_id LIKE ? LIMIT 3", [text + "%"])]
        if not matches:
            raise UnknownRunError(f"no run {run_id} in {self.path}; `corevital runs list` shows the stored runs")
        if len(matches) > 1:
            raise UnknownRunError(f"run id prefix {run_id} is ambiguous in {self.path}; give more digits")
        return matches[0]

    def compare(self, models: Sequence[str] = (), run_filter: RunFilter = RunFilter()) -> list[ModelComparison]:
        """Per model: mean risk, flag rates and mean entropy over the prompts all of `models` ran.

        With no `models`, every model in the store (after the filter) is compared. A prompt is
        identified by its text hash when runs carry one (`corevital run` records it), else by
        `corevital.prompt.hash`, which includes the model id.
        """
        where, values = run_filter.where()
        rows = self._query(
            f"SELECT model, prompt_key, risk_score, entropy_mean, flags FROM runs{where}", values
        )
        wanted = list(dict.fromkeys(models)) or sorted({r["model"] for r in rows if r["model"] is not None})
        by_model: dict[str, list[dict]] = {m: [r for r in rows if r["model"] == m] for m in wanted}
        shared = None
        for model_rows in by_model.values():
            keys = {r["prompt_key"] for r in model_rows if r["prompt_key"] is not None}
            shared = keys if shared is None else shared & keys
        shared = shared or set()
        return [_comparison(model, [r for r in by_model[model] if r["prompt_key"] in shared]) for model in wanted]

    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key = 'schema_version'", [])[0]["value"])

    def _document_row(self, run_id: str) -> str:
        full_id = self.resolve(run_id)
        return self._query("SELECT span_json FROM runs WHERE run_id = ?", [full_id])[0]["span_json"]

    def _query(self, sql: str, values: list[Any]) -> list[dict[str, Any]]:
        connection = self._connect(create=False)
        try:
            with translate_errors(self.path):
                cursor = connection.execute(sql, values)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            connection.close()


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["flags"] = json.loads(row["flags"])
    row["has_payload"] = bool(row["has_payload"])
    return row


def _comparison(model: str, rows: list[dict]) -> ModelComparison:
    flags = [set(json.loads(r["flags"])) for r in rows]
    return ModelComparison(
        model=model,
        runs=len(rows),
        prompts=len({r["prompt_key"] for r in rows}),
        mean_risk=_mean(r["risk_score"] for r in rows),
        mean_entropy=_mean(r["entropy_mean"] for r in rows),
        flag_rates={name: (sum(name in f for f in flags) / len(rows)) if rows else None for name in FLAG_NAMES},
    )


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _prefix(text: str) -> str:
    return text.strip().lower().replace("%", "").replace("_", "") + "%"

