"""Errors that map to the stage exit-code contract: 2 = bad input (never retried), 1 = transient."""

from __future__ import annotations

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_BAD_INPUT = 2


class LabscaleError(Exception):
    """Base class: a one-line, user-facing message and the exit code it maps to."""

    exit_code = EXIT_TRANSIENT


class BadInputError(LabscaleError):
    """The user's input is wrong (study file, data, spec): fix it, retrying will not help."""

    exit_code = EXIT_BAD_INPUT


class StudyError(BadInputError):
    """A study file is malformed. The message names the file, the field, the line and the fix."""

    def __init__(self, path: str, field: str, problem: str, fix: str, line: int | None = None):
        self.path, self.field, self.problem, self.fix, self.line = path, field, problem, fix, line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field}: {problem} — fix: {fix}")


class IntegrityError(LabscaleError):
    """A stored artifact does not match its manifest (corrupted or tampered): never used."""

    exit_code = EXIT_BAD_INPUT
