"""Errors a user can act on: one line that names the file, the trial and the problem.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""

from __future__ import annotations

from device.contract import one_line


class GrasptpuError(Exception):
    """A problem with the user's input or environment, told in one actionable line: the message
    quotes files, boards and inventories written by others, so it is made one printable line
    (device.contract.one_line, the rule the board's errors follow too)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


class DataError(GrasptpuError):
    """A recording that cannot be used as it is."""

    def __init__(self, path: object, problem: str, trial: int | None = None, hint: str = "") -> None:
        where = f"{path}" if trial is None else f"{path}, trial {trial}"
        message = f"{where}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.path, self.trial, self.problem = path, trial, problem
