"""Errors a user can act on: one line that names the file, the trial and the problem.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""

from __future__ import annotations


class GrasptpuError(Exception):
    """A problem with the user's input or environment, told in one actionable line."""


class DataError(GrasptpuError):
    """A recording that cannot be used as it is."""

    def __init__(self, path: object, problem: str, trial: int | None = None, hint: str = "") -> None:
        where = f"{path}" if trial is None else f"{path}, trial {trial}"
        message = f"{where}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.path, self.trial, self.problem = path, trial, problem
