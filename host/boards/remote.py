"""SSH to boards: connections that verify host keys, and the one way every remote command runs.

Host keys are checked against known_hosts with paramiko's RejectPolicy (Fabric itself would add
unknown hosts silently); an unknown or changed key is refused unless the user passes
`--trust-new-host` for a board never seen before (a changed key is always refused).

Every command on a board goes through `command` (or `start` and `finish`, for one that runs while
this machine does something else): a dropped connection or a timeout becomes a BoardError naming
the board and the step; a failing command is an error unless the caller asks for its result. The
board's runner is started by `runner`, from inside a release, and its JSON report read by `run_json`.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

from host.boards.inventory import Board
from host.errors import GrasptpuError, last_line, report_json


class BoardError(GrasptpuError):
    """A failure on one board, naming the board and the step; `problem` alone is kept so a caller
    can add to it without taking the message apart."""

    def __init__(self, board: Board, step: str, problem: str) -> None:
        super().__init__(f"board {board.name} ({board.where}): {step}: {problem}")
        self.board, self.step, self.problem = board, step, problem


def connect(board: Board, trust_new_host: bool = False, timeout: float = 10.0):
    """An open Fabric Connection whose host key was verified (see the module docstring)."""
    import paramiko
    from fabric import Config, Connection

    config = Config()  # reads ~/.ssh/config (and /etc/ssh/ssh_config) when present
    kwargs = {"look_for_keys": board.key_file is None, "allow_agent": board.key_file is None}
    if board.key_file:
        kwargs["key_filename"] = os.path.expanduser(board.key_file)
        if not os.path.isfile(kwargs["key_filename"]):
            raise BoardError(board, "connect", f"key_file {board.key_file} does not exist; fix key_file in the inventory")
    conn = Connection(board.host, user=board.user, port=board.port, config=config, connect_timeout=timeout,
                      connect_kwargs=kwargs)
    known = Path(os.path.expanduser(board.known_hosts))
    conn.client.set_missing_host_key_policy(_TrustOnce(known) if trust_new_host else paramiko.RejectPolicy())
    if known.is_file():
        conn.client.load_host_keys(str(known))
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise BoardError(board, "connect", f"its host key CHANGED since it was recorded in {known}; refusing "
                                           "(a different machine, or a reinstalled board: check it, then remove the old "
                                           "line with `ssh-keygen -R`)") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise BoardError(board, "connect", f"unknown host key (not in {known}); if this is a new board you trust, "
                                               "pass --trust-new-host once") from None
        raise BoardError(board, "connect", str(exc)) from None
    except OSError as exc:
        raise BoardError(board, "connect", f"unreachable ({exc.strerror or exc})") from None
    return conn


class _TrustOnce:
    """Accept and record the key of a host that known_hosts has never seen (never a changed one)."""

    def __init__(self, known: Path) -> None:
        self.known = known

    def missing_host_key(self, client, hostname, key) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def open_board(board: Board, trust_new_host: bool = False):
    """(connection, board with its root made absolute on the board).

    Remote commands `cd` into a release before running, so a relative or `~/` root must be
    resolved once, on the board, or it would name a different folder from inside the release."""
    conn = connect(board, trust_new_host)
    root = board.root
    expr = '"$HOME"/' + shell(root[2:]) if root.startswith("~/") else shell(root)
    try:
        absolute = run(conn, f"mkdir -p {expr} && cd {expr} && pwd -P", board, "root folder").strip()
    except BoardError:
        conn.close()
        raise
    return conn, dataclasses.replace(board, root=absolute)


def close(conn) -> None:
    """Close a connection that may already be dead (paramiko raises EOFError closing a cut one)."""
    try:
        conn.close()
    except Exception:  # nothing left to release; the step's own error is what the user needs
        pass


def command(conn, board: Board, step: str, cmd: str, check: bool = True, timeout: float = 600.0):
    """Run `cmd` on the board; its result (stdout, stderr, exited). With `check`, a non-zero exit is a
    BoardError carrying the command's last stderr line; a dropped connection always is one."""
    try:
        result = conn.run(cmd, hide=True, warn=True, in_stream=False, timeout=timeout)
    except Exception as exc:  # invoke/paramiko raise several types for a dropped connection or a timeout
        raise _lost(board, step, exc) from None
    return _checked(result, board, step, check)


def start(conn, board: Board, step: str, cmd: str):
    """Start `cmd` on the board without waiting for it (device.live decodes there while the replay and
    the recorder run here); `finish` waits for it. No timeout: the caller stops it."""
    try:
        return conn.run(cmd, asynchronous=True, hide=True, warn=True, in_stream=False)
    except Exception as exc:  # as in `command`
        raise _lost(board, step, exc) from None


def finish(promise, board: Board, step: str, check: bool = True):
    """Wait for a command `start` began; its result, judged as `command` judges one."""
    try:
        result = promise.join()
    except Exception as exc:  # as in `command`
        raise _lost(board, step, exc) from None
    return _checked(result, board, step, check)


def _lost(board: Board, step: str, exc: Exception) -> BoardError:
    return BoardError(board, step, f"connection lost ({type(exc).__name__}: {exc})")


def _checked(result, board: Board, step: str, check: bool):
    """`result`, unless it has no exit status (always an error) or, with `check`, a non-zero one."""
    if result.exited == -1:  # no exit status: killed by a signal (a crash), or the channel closed under it
        last = last_line(result.stderr)
        raise BoardError(board, step, "the command ended without an exit status (killed by a signal, e.g. a crash "
                                      "in the TFLite runtime, or the connection dropped)"
                         + (f"; its last words: {last}" if last else ""))
    if check and result.exited != 0:
        raise BoardError(board, step, last_line(result.stderr or result.stdout, f"exit {result.exited}"))
    return result


def run(conn, cmd: str, board: Board, step: str, timeout: float = 600.0) -> str:
    """`command` that must succeed; its stdout."""
    return command(conn, board, step, cmd, timeout=timeout).stdout


def shell(*words: object) -> str:
    """The one quoting rule for remote commands: every word quoted for the board's shell, so a
    value from an inventory, a manifest or a path is always one argument, never more shell."""
    return " ".join(shlex.quote(str(w)) for w in words)


def runner(board: Board, release: str, module: str, *args: object) -> str:
    """The shell command that runs `python -m <module> <args>` of the board's runner from inside
    `release` (a folder on the board), with the inventory's interpreter."""
    return f"cd {shell(release)} && {shell(board.python, '-m', module, *args)}"


def run_json(conn, cmd: str, board: Board, step: str, timeout: float = 600.0) -> dict:
    """`command` that must succeed, then the JSON report the board's commands (device.bench,
    device.stream, device.release, device.runtime) print as their last line (host.errors.report_json)."""
    result = command(conn, board, step, cmd, timeout=timeout)
    try:  # the command succeeded without a report: most often a release older than this grasptpu
        return report_json(result.stdout, result.stderr, "the board's command")
    except GrasptpuError as exc:
        raise BoardError(board, step, f"{exc}; its release may predate this grasptpu: run `grasptpu deploy` "
                                      "again") from None
