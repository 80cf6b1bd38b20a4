"""Push model folders, the device runner and the on-board tests to boards, as one atomic release.

Per board (boards run in parallel, one thread each):
1. connect, host key verified (host.boards.inventory), and check the board's Python: 3.7 or newer (the
   runner's syntax; Mendel Linux has 3.7) with numpy, else one line and nothing is touched;
2. take the board's lock (`mkdir ROOT/.deploy-lock`, atomic): a second deploy to the same board
   waits up to `--wait` seconds, then fails cleanly; a lock whose deploy is known to be dead
   (see `stale`) is removed and said; rollback takes the same lock;
3. upload everything into `releases/<id>.partial` over SFTP;
4. verify every byte on the board with the board's Python (`python -m device.release verify`);
5. rename to `releases/<id>`, switch `current` with one rename, keep the newest `--keep` releases.
Until step 5 the previous release stays active; a cut connection, a full disk or a damaged file
leaves it active and working, and the leftover `.partial` folder is removed by the next deploy.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import posixpath
import shlex
import socket
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from host.boards.inventory import Board, BoardError, close, open_board, run, run_json
from host.errors import GrasptpuError
from host.modelfolder import read_manifest, sha256_of

REPO = Path(__file__).resolve().parents[2]
LOCK = ".deploy-lock"
PAYLOAD_DIRS = ("device", "firmware_tests")
# What the board needs of a model folder; the Keras model, training history and plots stay home
# (the board checks the sha256 of the files it has against the manifest and skips absent ones).
BOARD_FILES = ("manifest.json", "model_int8.tflite", "model_int8_edgetpu.tflite", "model_int8_edgetpu.log",
               "model_float.tflite", "test_set.npz", "metrics.json")


def payload(model_dirs: list[Path]) -> list[tuple[Path, str]]:
    """(local file, path inside the release) for the models, device/ and firmware_tests/."""
    files = []
    for folder in model_dirs:
        manifest = read_manifest(folder)
        if "tflite" not in manifest:
            raise GrasptpuError(f"{folder}: not quantised; run `grasptpu quantize {folder}` before deploying")
        for p in sorted(folder.iterdir()):
            if p.name in BOARD_FILES and p.is_file():
                files.append((p, f"models/{manifest['name']}/{p.name}"))
    for sub in PAYLOAD_DIRS:
        for p in sorted((REPO / sub).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".md", ".ini", ".txt", ".cfg"):
                files.append((p, f"{sub}/{p.relative_to(REPO / sub).as_posix()}"))
    return files


def release_id(model_dirs: list[Path]) -> str:
    names = "+".join(read_manifest(f)["name"] for f in model_dirs)
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{names}"[:120]


def release_record(files: list[tuple[Path, str]], rid: str) -> dict:
    return {"id": rid, "created_by": socket.gethostname(), "files": [
        {"path": rel, "bytes": p.stat().st_size, "sha256": sha256_of(p)} for p, rel in files]}


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
    return _try(conn, board, step, f"cat {shlex.quote(_lock_dir(board) + '/owner')} 2>/dev/null").stdout.strip()


def _remove_lock_if(conn, board: Board, step: str, test: str) -> bool:
    """Remove the lock only if the shell `test` holds on the board, in the same command (so a lock
    taken meanwhile by someone else survives); True when it was removed."""
    command = f"{test} && rm -rf {shlex.quote(_lock_dir(board))} && echo removed"
    return _try(conn, board, step, command).stdout.strip() == "removed"


def _owned_by(board: Board, owner: str) -> str:
    """Shell test: the lock's owner file holds exactly `owner`."""
    return f"[ \"$(cat {shlex.quote(_lock_dir(board) + '/owner')} 2>/dev/null)\" = {shlex.quote(owner)} ]"


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


def _remove_if_stale(conn, board: Board, step: str, owner: str) -> str | None:
    """Remove the lock when its owner is a dead deploy of this machine, or when it has no owner
    and is older than ORPHAN_AGE_S; the board re-checks the owner (or the age) in the same
    command, so a lock someone else has just taken is never removed. Returns a note, or None."""
    q = shlex.quote
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
    return note if _remove_lock_if(conn, board, step, test) else None


def _lock(conn, board: Board, wait_s: float, step: str = "lock") -> tuple[str, str | None]:
    """Take the board's lock (mkdir is atomic); returns this deploy's token, written into it, and a
    note when a stale lock (see `owner_state`) had to be removed first."""
    token = _new_token()
    _HELD.add(token)  # before mkdir: a thread reading this owner must never judge it stale
    try:
        return token, _take(conn, board, wait_s, step, token)
    except BaseException:
        _HELD.discard(token)
        raise


def _take(conn, board: Board, wait_s: float, step: str, token: str) -> str | None:
    q = shlex.quote
    lock = _lock_dir(board)
    note = None
    run(conn, f"mkdir -p {q(board.root + '/releases')}", board, step)
    deadline = time.monotonic() + wait_s
    while True:
        result = _try(conn, board, step, f"mkdir {q(lock)}")
        if result.exited == 0:
            break
        if "exists" not in result.stderr:
            raise BoardError(board, step, (result.stderr.strip().splitlines() or ["cannot create the lock"])[-1])
        owner = _read_owner(conn, board, step)
        removed = _remove_if_stale(conn, board, step, owner)
        if removed:
            note = removed
            continue
        if time.monotonic() >= deadline:
            raise BoardError(board, step, f"another deploy holds the board ({owner or 'owner unknown'}); "
                                          f"retry later (--wait), or `grasptpu unlock --board {board.name}` "
                                          f"if that deploy died")
        time.sleep(0.5)
    wrote = _try(conn, board, step, f"echo {q(token)} > {q(lock + '/owner')}")
    if wrote.exited != 0:  # e.g. a full disk: give the lock back before failing
        _try(conn, board, step, f"rm -rf {q(lock)}")
        raise BoardError(board, step, (wrote.stderr.strip().splitlines() or ["cannot write the lock"])[-1])
    return note


def _try(conn, board: Board, step: str, command: str):
    """conn.run that reports a dropped connection as a BoardError, and a failing command by its result."""
    try:
        return conn.run(command, hide=True, warn=True, in_stream=False, timeout=120)
    except Exception as exc:  # invoke/paramiko raise several types when the connection is gone
        raise BoardError(board, step, f"connection lost ({type(exc).__name__}: {exc})") from None


def _unlock(conn, board: Board, token: str) -> str | None:
    """Remove the lock if it is still ours; a problem is returned, not raised (never mask the real error)."""
    _HELD.discard(token)  # from here on a lock left behind with this token is stale
    try:
        _remove_lock_if(conn, board, "unlock", _owned_by(board, token))
    except BoardError:
        return f"the board's lock {_lock_dir(board)} may be left behind (remove it if no deploy is running)"
    return None


def _upload(conn, board: Board, files: list[tuple[Path, str]], record: dict, partial: str) -> None:
    base = posixpath.join(board.root, "releases", partial)
    dirs = sorted({posixpath.dirname(posixpath.join(base, rel)) for _, rel in files} | {base})
    run(conn, "mkdir -p " + " ".join(map(shlex.quote, dirs)), board, "upload")
    try:
        sftp = conn.sftp()
        for local, rel in files:
            sftp.put(str(local), posixpath.join(base, rel))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(record, fh, indent=1)
        sftp.put(fh.name, posixpath.join(base, "release.json"))
        Path(fh.name).unlink()
    except (OSError, EOFError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or f"{type(exc).__name__}: the connection dropped"
        raise BoardError(board, "upload", f"{why} (the previous release stays active)") from None
    except Exception as exc:  # paramiko's SSHException for a dropped channel
        raise BoardError(board, "upload", f"{type(exc).__name__}: {exc} (the previous release stays active)") from None


MIN_PYTHON = (3, 7)
# Runs on any Python, 2.x included, so that an old board answers with its version instead of
# failing on the runner's syntax.
_PYTHON_PROBE = ("import sys\n"
                 "sys.stdout.write('%d.%d.%d\\n' % tuple(sys.version_info[:3]))\n"
                 "try:\n"
                 "    import numpy\n"
                 "    sys.stdout.write(numpy.__version__ + '\\n')\n"
                 "except Exception:\n"
                 "    sys.stdout.write('-\\n')\n")


def check_board_python(conn, board: Board) -> tuple[str, str]:
    """(Python version, numpy version) of the board's `python`, or a BoardError saying what is missing."""
    step = "check the board's Python"
    result = _try(conn, board, step, f"{board.python} -c {shlex.quote(_PYTHON_PROBE)}")
    lines = result.stdout.split()
    if result.exited != 0 or len(lines) != 2:
        why = ((result.stderr or "").strip().splitlines() or [f"exit {result.exited}"])[-1]
        raise BoardError(board, step, f"`{board.python}` does not run there ({why}); set `python` in the inventory "
                                      f"to a Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    version, numpy_version = lines
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_PYTHON:
        raise BoardError(board, step, f"Python {version} ({board.python}) is older than "
                                      f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}, which the runner needs; set `python` in "
                                      "the inventory to a newer one (Mendel Linux has python3 = 3.7)")
    if numpy_version == "-":
        raise BoardError(board, step, f"Python {version} ({board.python}) has no numpy, which the runner needs; "
                                      "install it on the board (Mendel Linux: sudo apt-get install python3-numpy)")
    return version, numpy_version


def deploy_board(board: Board, files: list[tuple[Path, str]], record: dict, keep: int = 3, wait_s: float = 0.0,
                 trust_new_host: bool = False) -> dict:
    """Deploy one release to one board; returns what the board reports after the switch."""
    t0 = time.perf_counter()
    conn, board = open_board(board, trust_new_host)
    try:
        check_board_python(conn, board)  # before the lock: nothing on the board is touched if it fails
        token, note = _lock(conn, board, wait_s)
        try:
            # leftovers of interrupted deploys: this deploy holds the lock, so no upload is in progress
            _try(conn, board, "clean up", f"rm -rf {shlex.quote(board.root)}/releases/*.partial")
            partial = f"{record['id']}.partial"
            _upload(conn, board, files, record, partial)
            release_dir = shlex.quote(posixpath.join(board.root, "releases", partial))
            py, root = board.python, shlex.quote(board.root)
            run(conn, f"cd {release_dir} && {py} -m device.release verify .", board, "verify on the board")
            finished = run_json(conn, f"cd {release_dir} && {py} -m device.release finish {root} "
                                      f"{shlex.quote(partial)} {int(keep)}", board, "switch current")
        except BoardError as exc:
            problem = _unlock(conn, board, token)
            if problem:
                raise BoardError(board, exc.step, f"{str(exc).split(': ', 2)[-1]}; {problem}") from None
            raise
        problem = _unlock(conn, board, token)
        status = run_json(conn, f"cd {root}/current && {py} -m device.release status {root}", board, "status")
    finally:
        close(conn)
    return {"board": board.name, "current": finished["current"],
            "releases": status["releases"], "files": len(files) + 1, "lock_problem": problem, "lock_note": note,
            "bytes": sum(p.stat().st_size for p, _ in files), "seconds": time.perf_counter() - t0}


def _check_distinct(boards: list[Board]) -> None:
    """Two entries for one board would race each other's upload into the same release folder."""
    seen: dict = {}
    for b in boards:
        key = (b.host, b.port, b.root)
        if key in seen:
            raise GrasptpuError(f"boards {seen[key]!r} and {b.name!r} are the same board ({b.host}:{b.port} {b.root}); "
                                "name it once")
        seen[key] = b.name


def deploy(boards: list[Board], model_dirs: list[Path], keep: int = 3, wait_s: float = 0.0,
           trust_new_host: bool = False) -> tuple[list[dict], list[str]]:
    """Deploy to every board in parallel; (successes, one error line per failed board)."""
    _check_distinct(boards)
    files = payload(model_dirs)
    record = release_record(files, release_id(model_dirs))
    done, failed = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(boards), 1)) as pool:
        futures = {pool.submit(deploy_board, b, files, record, keep, wait_s, trust_new_host): b for b in boards}
        for future in concurrent.futures.as_completed(futures):
            try:
                done.append(future.result())
            except GrasptpuError as exc:
                failed.append(str(exc))
            except Exception as exc:  # one board's unexpected failure must not hide the others' results
                failed.append(f"board {futures[future].name}: {type(exc).__name__}: {exc}")
    return sorted(done, key=lambda d: d["board"]), sorted(failed)


def rollback(board: Board, trust_new_host: bool = False, wait_s: float = 0.0) -> tuple[str, str | None]:
    """Make the previous release current, under the deploy lock so it cannot cross a deploy's
    switch; returns the new current release and a note if a stale lock was removed."""
    conn, board = open_board(board, trust_new_host)
    try:
        token, note = _lock(conn, board, wait_s, step="rollback")
        try:
            root = shlex.quote(board.root)
            current = run_json(conn, f"cd {root}/current && {board.python} -m device.release rollback {root}",
                               board, "rollback")["current"]
        finally:
            problem = _unlock(conn, board, token)
    finally:
        close(conn)
    return current, "; ".join(filter(None, (note, problem))) or None


def unlock(board: Board, trust_new_host: bool = False, force: bool = False) -> str | None:
    """Remove the board's deploy lock (the way out after a deploy died on another machine);
    returns the owner it had, or None when there was no lock. A lock of a deploy running on
    this machine is kept unless `force`; the lock is only removed if its owner is still the one
    read (a deploy that takes the board meanwhile keeps its lock)."""
    conn, board = open_board(board, trust_new_host)
    try:
        if _try(conn, board, "unlock", f"test -d {shlex.quote(_lock_dir(board))}").exited != 0:
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
