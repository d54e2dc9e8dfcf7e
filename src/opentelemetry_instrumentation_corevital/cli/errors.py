"""The CLI's error type: one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

USAGE = 2  # bad arguments or input (a file, a model, a run id the user named)
FAILURE = 1  # the command could not finish (locked database, generation failed)


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = USAGE):
        super().__init__(message)
        self.exit_code = exit_code
