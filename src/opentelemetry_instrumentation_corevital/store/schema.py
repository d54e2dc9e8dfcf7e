"""The SQLite schema of the local run store, and opening a database safely.

One row per finished CoreVital span in `runs`: the columns that listing, filtering and
comparing need, plus the whole span (attributes, events including the full-trace payload,
resource) as JSON in `span_json`, so `Report` can be rebuilt exactly. The schema version is
kept in `PRAGMA user_version` and in `meta`. WAL journal and a busy timeout let several
processes write at once; every write is one `BEGIN IMMEDIATE` transaction.

Invariant: nothing is written to a file (no schema, no pragma, no journal switch) before it
is recognised as a run store of this version or found empty; any other file (another
application's database, a corrupt, locked or newer-schema one) is left byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from .. import health_vocabulary

SCHEMA_VERSION = 1
DEFAULT_DB_PATH = "corevital.db"
BUSY_TIMEOUT_S = 10.0
#: the values of the risk_label column
RISK_LABELS = health_vocabulary.RISK_LABELS

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id            TEXT PRIMARY KEY,   -- the span id, 16 hex digits
    trace_id          TEXT NOT NULL,
    span_name         TEXT NOT NULL,
    service_name      TEXT,
    model             TEXT,
    prompt_hash       TEXT,               -- corevital.prompt.hash (model id + prompt tokens)
    prompt_key        TEXT,               -- corevital.prompt.text_hash when set (same text, any model), else prompt_hash
    capture_mode      TEXT,
    risk_score        REAL,
    risk_label        TEXT,
    flags             TEXT NOT NULL,      -- JSON list of raised health flag names
    nan_detected      INTEGER NOT NULL,
    inf_detected      INTEGER NOT NULL,
    attention_collapse_detected INTEGER NOT NULL,
    repetition_loop_detected    INTEGER NOT NULL,
    mid_layer_anomaly_detected  INTEGER NOT NULL,
    high_entropy_steps INTEGER,
    entropy_mean      REAL,
    surprisal_mean    REAL,
    margin_mean       REAL,
    input_tokens      INTEGER,
    output_tokens     INTEGER,
    has_payload       INTEGER NOT NULL,
    status            TEXT,
    start_time_unix_nano INTEGER,
    end_time_unix_nano   INTEGER,
    span_json         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_model ON runs (model);
CREATE INDEX IF NOT EXISTS runs_prompt_hash ON runs (prompt_hash);
CREATE INDEX IF NOT EXISTS runs_prompt_key ON runs (prompt_key);
CREATE INDEX IF NOT EXISTS runs_start ON runs (start_time_unix_nano);
"""


class StoreError(Exception):
    """The run store cannot be used; the message says why and what to do."""


class StoreLockedError(StoreError):
    """Another process holds the write lock longer than the busy timeout."""


class UnknownRunError(StoreError):
    """No stored run matches the id (or prefix) asked for."""


def connect(path: str | Path, *, create: bool = True, timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (and, with `create`, initialise) the store at `path`; raises StoreError."""
    path = Path(path)
    if not create and not path.is_file():
        raise StoreError(f"no run store at {path}: run `corevital run` first or pass --db PATH")
    _check_path(path)
    connection = _open(path, timeout_s)
    try:
        with translate_errors(path):
            _initialise(connection, create)
    except BaseException:
        connection.close()
        raise
    return connection


def check_writable(path: str | Path, timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Raise StoreError now if `path` could not take a run later; creates and writes nothing.

    An existing file must be a run store of this version (or an empty database) whose write
    lock is free within `timeout_s`; a new file needs an existing, writable folder.
    """
    path = Path(path)
    _check_path(path)
    if not path.exists():
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"cannot create the run store {path}: folder {path.parent} is not writable")
        return
    connection = _open(path, timeout_s)
    try:
        with translate_errors(path):
            _check_schema(connection)
            connection.execute("BEGIN IMMEDIATE")  # takes the write lock, writes nothing
            connection.execute("ROLLBACK")
    finally:
        connection.close()


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a run store: pass a file path with --db")
    if not path.parent.is_dir():
        raise StoreError(f"cannot create the run store {path}: folder {path.parent} does not exist")


def _open(path: Path, timeout_s: float) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the run store {path}: {exc}") from None
    connection.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")  # this connection only; writes nothing
    return connection


def _initialise(connection: sqlite3.Connection, create: bool) -> None:
    """Recognise the file before anything is written to it; create the schema only in an empty one.

    The journal mode is switched to WAL only once the file holds our schema: a refused file
    (another application's database, a newer schema) keeps every byte, header included.
    """
    if _check_schema(connection):
        return
    if not create:
        raise StoreError("it holds no CoreVital runs (no schema); pass the path of a run store with --db")
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not _check_schema(connection):  # another process may have created it while we waited for the lock
            for statement in _TABLES.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("PRAGMA journal_mode = WAL")  # readers never block the writer


def _check_schema(connection: sqlite3.Connection) -> bool:
    """True for a run store of this schema version, False for an empty database; raises StoreError otherwise.

    Reads only. A run store is recognised by its `meta` and `runs` tables and the
    `schema_version` entry of `meta`; any other database is somebody else's.
    """
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if not tables and version == 0:
        return False
    recognised = {"meta", "runs"} <= tables and connection.execute(
        "SELECT 1 FROM meta WHERE key = 'schema_version'"
    ).fetchone() is not None
    if not recognised:
        raise StoreError("it is an SQLite database of something else (no CoreVital schema); pick another --db")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"schema version {version} was written by a newer corevital (this one reads {SCHEMA_VERSION}): upgrade"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(f"schema version {version} is not one this corevital reads ({SCHEMA_VERSION}); pick another --db")
    return True


@contextlib.contextmanager
def translate_errors(path: str | Path):
    """sqlite3 errors inside the block become StoreError with a one-line, actionable message."""
    path = Path(path)
    try:
        yield
    except StoreError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise type(exc)(f"{path}: {exc}") from None
    except sqlite3.Error as exc:
        kind = StoreLockedError if _is_locked(exc) else StoreError
        raise kind(f"{path}: {_explain(exc)}") from None


def _is_locked(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if _is_locked(exc):
        return "the database is locked by another process; retry when it is done"
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        return "the file is not a valid run store (corrupt or not SQLite); move it away or pass another --db"
    return text
