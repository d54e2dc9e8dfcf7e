"""Entry point of the `corevital` console script: dispatch, and every failure as one line.

Set COREVITAL_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from .errors import FAILURE, USAGE, CliError

INTERRUPTED = 130
_CLI_EXTRA_HINT = "pip install 'opentelemetry-instrumentation-corevital[cli]'"


class _OneLineFormatter(logging.Formatter):
    """Library warnings (OTLP export failures, ...) as single lines, without tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        return f"corevital: {record.levelname.lower()}: {record.getMessage().splitlines()[0] if record.getMessage() else ''}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: the CLI never downloads
    with _one_line_logging():
        return _main(argv)


def _main(argv) -> int:
    try:
        return _dispatch(argv)
    except CliError as exc:
        return _fail(str(exc), exc.exit_code)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("opentelemetry.sdk"):
            raise
        return _fail(f"the corevital CLI needs the OpenTelemetry SDK: {_CLI_EXTRA_HINT}", FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()  # `corevital runs list | head`: the reader left, nothing to report
        return 0
    except Exception as exc:
        if os.environ.get("COREVITAL_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (COREVITAL_DEBUG=1 shows the traceback)", FAILURE)


def _dispatch(argv) -> int:
    from ..store.schema import StoreError, StoreLockedError
    from .parser import build_parser

    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from .run_command import run

            return run(args)
        if args.command == "runs":
            from .runs_command import runs

            return runs(args)
        if args.command == "calibrate":
            from .calibrate_command import calibrate

            return calibrate(args)
        from .report_command import report

        return report(args)
    except StoreLockedError as exc:
        raise CliError(str(exc), FAILURE) from None
    except StoreError as exc:
        raise CliError(str(exc), USAGE) from None


def _fail(message: str, code: int) -> int:
    print(f"corevital: error: {' '.join(message.split())}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _one_line_logging():
    """Library log records and Python warnings as one-line messages on stderr, for this call only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger()
    otlp = logging.getLogger("opentelemetry.exporter.otlp")  # logs every retry; `run` sums up in one line
    saved = root.handlers[:], root.level, otlp.level
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    otlp.setLevel(logging.CRITICAL)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root_level, otlp_level = saved
        root.setLevel(root_level)
        otlp.setLevel(otlp_level)
