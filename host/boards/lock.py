"""The board's deploy lock: one deploy (or rollback) at a time per board, and dead ones recognised.

The lock is a folder, ROOT/.deploy-lock (mkdir is atomic on the board), holding an owner token:
host (with a digest of machine id, boot id and pid namespace), pid, time and a random id. A second
deploy waits up to `--wait` seconds, then fails cleanly. A lock whose deploy is known to be dead
(see `owner_state`) is taken over in one board command and said; a lock from another machine is
never judged from here: `grasptpu unlock` is the explicit way out.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from host.boards.inventory import Board
from host.boards.remote import BoardError, close, command, open_board, run, shell
from host.errors import last_line

LOCK = ".deploy-lock"
_HELD: set[str] = set()  # tokens of the locks this process holds or is taking right now
ORPHAN_AGE_S = 60  # a lock with no owner older than this died between mkdir and writing its owner


def _process_space() -> str | None:
    """Where this process's pid means something: hostname plus a digest of the machine id, the
    boot id and the pid namespace (hostnames repeat in labs; containers share hostnames and boot
    ids but not pid namespaces). None where any part is unknown: then no lock is judged stale."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if not machine or not boot:
        return None
    digest = hashlib.sha256(f"{machine} {boot} {namespace}".encode()).hexdigest()[:16]
    return f"{socket.gethostname()}/{digest}"


def _new_token() -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    host = _process_space() or f"{socket.gethostname()}/unknown"
    return f"host={host} pid={os.getpid()} at={stamp} id={uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _lock_dir(board: Board) -> str:
    return posixpath.join(board.root, LOCK)


def _read_owner(conn, board: Board, step: str) -> str:
    """The token in the board's lock ("" when the lock has no owner file yet)."""
    cmd = f"cat {shell(_lock_dir(board) + '/owner')} 2>/dev/null"
    return command(conn, board, step, cmd, check=False).stdout.strip()


def _remove_lock_if(conn, board: Board, step: str, test: str) -> bool:
    """Remove the lock only if the shell `test` holds on the board, in the same command (so a lock
    taken meanwhile by someone else survives); True when it was removed."""
    cmd = f"{test} && rm -rf {shell(_lock_dir(board))} && echo removed"
    return command(conn, board, step, cmd, check=False).stdout.strip() == "removed"


def _owned_by(board: Board, owner: str) -> str:
    """Shell test: the lock's owner file holds exactly `owner`."""
    return f"[ \"$(cat {shell(_lock_dir(board) + '/owner')} 2>/dev/null)\" = {shell(owner)} ]"


def owner_state(owner: str) -> str:
    """"stale" when the lock's owner was a deploy from this machine (same process space) that is
    no longer running: its process is gone, or it is this process and no longer holds the lock
    (it died mid-deploy, e.g. on a cut connection, and could not give the lock back); "running"
    when that deploy is alive here; "unknown" for a lock from elsewhere, which is never judged
    from here: `grasptpu unlock` is the explicit way out."""
    fields = dict(part.split("=", 1) for part in owner.split() if "=" in part)
    here = _process_space()
    if here is None or fields.get("host") != here or not fields.get("pid", "").isdigit():
        return "unknown"
    pid = int(fields["pid"])
    alive = owner in _HELD if pid == os.getpid() else _pid_alive(pid)
    return "running" if alive else "stale"


def _take_over_if_stale(conn, board: Board, step: str, owner: str, token: str) -> str | None:
    """Take the lock over when its owner is a dead deploy of this machine, or when it has no owner
    and is older than ORPHAN_AGE_S. One board command checks the owner (or the age) again, renames
    the old lock aside (rename is atomic: of two deploys taking over, one wins), creates ours and
    writes `token`: no other deploy can take the board between the removal and our lock, and a
    lock someone else has just taken is never removed. Returns a note when taken, else None."""
    q = shell
    lock = _lock_dir(board)
    if owner:
        if owner_state(owner) != "stale":
            return None
        test = _owned_by(board, owner)
        note = f"removed the lock of a deploy that is no longer running ({owner})"
    else:
        test = (f"[ ! -s {q(lock + '/owner')} ] && "
                f"[ $(( $(date +%s) - $(stat -c %Y {q(lock)}) )) -gt {ORPHAN_AGE_S} ]")
        note = f"removed a lock with no owner older than {ORPHAN_AGE_S} s (a deploy died while taking it)"
    aside = f"{lock}.stale-{token.rsplit('id=', 1)[-1]}"
    cmd = (f"{test} && mv -T {q(lock)} {q(aside)} && rm -rf {q(aside)} && mkdir {q(lock)} && "
           f"{{ echo {q(token)} > {q(lock + '/owner')} && echo taken || rm -rf {q(lock)}; }}")  # full disk: no lock left
    return note if command(conn, board, step, cmd, check=False).stdout.strip() == "taken" else None


def take(conn, board: Board, wait_s: float, step: str = "lock") -> tuple[str, str | None]:
    """Take the board's lock (mkdir is atomic); returns this deploy's token, written into it, and a
    note when a stale lock (see `owner_state`) had to be taken over."""
    token = _new_token()
    _HELD.add(token)  # before mkdir: a thread reading this owner must never judge it stale
    try:
        return token, _take(conn, board, wait_s, step, token)
    except BaseException:
        _HELD.discard(token)
        raise


def _take(conn, board: Board, wait_s: float, step: str, token: str) -> str | None:
    q = shell
    lock = _lock_dir(board)
    run(conn, f"mkdir -p {q(board.root + '/releases')}", board, step)
    deadline = time.monotonic() + wait_s
    while True:
        result = command(conn, board, step, f"mkdir {q(lock)}", check=False)
        if result.exited == 0:
            break
        if "exists" not in result.stderr:
            raise BoardError(board, step, last_line(result.stderr, "cannot create the lock"))
        owner = _read_owner(conn, board, step)
        taken = _take_over_if_stale(conn, board, step, owner, token)
        if taken:
            return taken
        if time.monotonic() >= deadline:
            raise BoardError(board, step, f"another deploy holds the board ({owner or 'owner unknown'}); "
                                          f"retry later (--wait), or `grasptpu unlock --board {board.name}` "
                                          f"if that deploy died")
        time.sleep(0.5)
    wrote = command(conn, board, step, f"echo {q(token)} > {q(lock + '/owner')}", check=False)
    if wrote.exited != 0:  # e.g. a full disk: give the lock back before failing
        command(conn, board, step, f"rm -rf {q(lock)}", check=False)
        raise BoardError(board, step, last_line(wrote.stderr, "cannot write the lock"))
    return None


def give_back(conn, board: Board, token: str) -> str | None:
    """Remove the lock if it is still ours; a problem is returned, not raised (never mask the real error)."""
    _HELD.discard(token)  # from here on a lock left behind with this token is stale
    try:
        _remove_lock_if(conn, board, "unlock", _owned_by(board, token))
    except BoardError:
        return f"the board's lock {_lock_dir(board)} may be left behind (remove it if no deploy is running)"
    return None


def unlock(board: Board, trust_new_host: bool = False, force: bool = False) -> str | None:
    """Remove the board's deploy lock (the way out after a deploy died on another machine);
    returns the owner it had, or None when there was no lock. A lock of a deploy running on
    this machine is kept unless `force`; the lock is only removed if its owner is still the one
    read (a deploy that takes the board meanwhile keeps its lock)."""
    conn, board = open_board(board, trust_new_host)
    try:
        if command(conn, board, "unlock", f"test -d {shell(_lock_dir(board))}", check=False).exited != 0:
            return None
        owner = _read_owner(conn, board, "unlock")
        if owner and owner_state(owner) == "running" and not force:
            raise BoardError(board, "unlock", f"the lock belongs to a deploy running on this machine ({owner}); "
                                              "wait for it, or pass --force")
        if not _remove_lock_if(conn, board, "unlock", _owned_by(board, owner)):
            raise BoardError(board, "unlock", "the lock changed hands while unlocking; run it again to see the new owner")
    finally:
        close(conn)
    return owner or "owner unknown"
