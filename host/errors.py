"""Errors a user can act on: one line that names the file, the trial and the problem.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""

from __future__ import annotations

import json

from device.contract import first_line, last_line, one_line

__all__ = ["GrasptpuError", "DataError", "first_line", "last_line", "last_json", "report_json"]


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
        self.path, self.trial, self.problem, self.hint = path, trial, problem, hint


def last_json(text: str) -> dict | None:
    """The last line of `text` that is a JSON object, or None. The board's runner (device.bench,
    .stream, .live, .release, .runtime) prints its report as its last line of stdout, and
    host.data.isolated its refusal on stderr, where a library may still print a warning after it."""
    for line in reversed((text or "").splitlines()):
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a line nested deeper than the parser's stack
            continue
        if isinstance(value, dict):
            return value
    return None


def report_json(out: str, err: str, what: str) -> dict:
    """The JSON report a command printed on stdout (`out`), or a GrasptpuError saying that `what`
    printed none, with the last line of its stderr (`err`): the one reading of every runner's report,
    here or on a board, so a missing one reads the same wherever it happens."""
    report = last_json(out)
    if report is None:
        last = last_line(err)
        raise GrasptpuError(f"{what} printed no JSON report" + (f"; its last words: {last}" if last else ""))
    return report
