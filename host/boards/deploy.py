"""Push model folders, the device runner and the on-board tests to boards, as one atomic release.

Per board (boards run in parallel, one thread each):
1. connect, host key verified (host.boards.remote), and check the board's Python: 3.7 or newer (the
   runner's syntax; Mendel Linux has 3.7) with numpy, else one line and nothing is touched;
2. take the board's deploy lock (host.boards.lock; rollback takes the same lock);
3. mint the release id (under the lock, so ids sort in the order releases are switched on), check
   the board's free space, upload everything into `releases/<id>.partial` over SFTP;
4. verify on the board with the board's Python (`python -m device.release verify`): every byte of
   the release, every model folder against its manifest, and that the runner loads each model;
5. rename to `releases/<id>`, switch `current` with one rename, keep the newest `--keep` releases.
Until step 5 the previous release stays active; a cut connection, a full disk or a damaged or
unloadable file leaves it active and working. A failed deploy removes its `.partial` folder (the
next deploy removes one left by a connection that died).
"""

from __future__ import annotations

import concurrent.futures
import json
import posixpath
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from device.contract import BOARD_FILES, DeviceError, path_in
from host.boards import lock
from host.boards.inventory import Board
from host.boards.remote import BoardError, close, command, open_board, run, run_json, runner, shell
from host.errors import GrasptpuError, last_line
from host.files import sha256_of
from host.modelfolder import read_manifest

REPO = Path(__file__).resolve().parents[2]
PAYLOAD_DIRS = ("device", "firmware_tests")
# What the board needs of a model folder: device.contract.BOARD_FILES (the Keras model, training
# history and plots stay home; the board checks the files it has against the manifest).


def payload(model_dirs: list[Path]) -> list[tuple[Path, str]]:
    """(local file, path inside the release) for the models, device/ and firmware_tests/."""
    files = []
    for folder in model_dirs:
        manifest = read_manifest(folder)  # its name checked: plain, so models/<name>/ stays inside the release
        if "tflite" not in manifest:
            raise GrasptpuError(f"{folder}: not quantised; run `grasptpu quantize {folder}` before deploying")
        for name in BOARD_FILES:
            try:
                path = Path(path_in(str(folder), name))  # a symbolic link is refused, never followed
            except DeviceError as exc:
                raise GrasptpuError(f"{exc}; copy the real file into the folder") from None
            if path.is_file():
                files.append((path, f"models/{manifest['name']}/{name}"))
    for sub in PAYLOAD_DIRS:
        for p in sorted((REPO / sub).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".md", ".ini", ".txt", ".cfg"):
                files.append((p, f"{sub}/{p.relative_to(REPO / sub).as_posix()}"))
    return files


def release_id(names: str) -> str:
    """A new release id: the UTC time (sortable, so releases sort in the order they were switched
    on, since the id is minted under the board's lock) and the model names."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{names}"[:120]


def release_record(files: list[tuple[Path, str]], names: str) -> dict:
    """The release's file list with sizes and sha256 (hashed once for every board); each board's
    deploy adds its own `id` under that board's lock."""
    return {"names": names, "created_by": socket.gethostname(), "files": [
        {"path": rel, "bytes": p.stat().st_size, "sha256": sha256_of(p)} for p, rel in files]}


def _upload(conn, board: Board, files: list[tuple[Path, str]], record: dict, partial: str) -> None:
    base = posixpath.join(board.root, "releases", partial)
    dirs = sorted({posixpath.dirname(posixpath.join(base, rel)) for _, rel in files} | {base})
    run(conn, "mkdir -p " + " ".join(map(shell, dirs)), board, "upload")
    try:
        sftp = conn.sftp()
        for local, rel in files:
            sftp.put(str(local), posixpath.join(base, rel))
        with tempfile.TemporaryDirectory(prefix="grasptpu-release-") as tmp:  # removed if the put fails too
            local_record = Path(tmp) / "release.json"
            local_record.write_text(json.dumps(record, indent=1))
            sftp.put(str(local_record), posixpath.join(base, "release.json"))
    except (OSError, EOFError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or f"{type(exc).__name__}: the connection dropped"
        if "size mismatch" in why or "No space" in why or getattr(exc, "errno", None) == 28:
            why = f"the board's disk is full ({why})"
        raise BoardError(board, "upload", f"{why} (the partial upload is removed; the previous release stays "
                                          "active)") from None
    except Exception as exc:  # paramiko's SSHException for a dropped channel
        raise BoardError(board, "upload", f"{type(exc).__name__}: {exc} (the partial upload is removed; the previous "
                                          "release stays active)") from None


def _check_space(conn, board: Board, files: list[tuple[Path, str]]) -> None:
    """Refuse before uploading when the board's disk cannot hold the release's bytes."""
    need = sum(p.stat().st_size for p, _ in files)
    out = command(conn, board, "check free space", f"df -Pk {shell(board.root + '/releases')}", check=False).stdout
    fields = last_line(out).split()
    if len(fields) >= 4 and fields[3].isdigit() and int(fields[3]) * 1024 < need:
        raise BoardError(board, "check free space", f"the board's disk has {int(fields[3])} KiB free, the release needs "
                                                    f"{-(-need // 1024)} KiB; free space under {board.root}")


def _remove_partial(conn, board: Board, partial: str | None) -> None:
    """A failed deploy removes its own partial upload (a full disk must not stay full)."""
    if partial:
        path = posixpath.join(board.root, "releases", partial)
        try:
            command(conn, board, "clean up", f"rm -rf {shell(path)}", check=False)
        except BoardError:  # the connection is gone: the next deploy removes it
            pass


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
    result = command(conn, board, step, shell(board.python, "-c", _PYTHON_PROBE), check=False)
    lines = result.stdout.split()
    if result.exited != 0 or len(lines) != 2:
        why = last_line(result.stderr, f"exit {result.exited}")
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
        token, note = lock.take(conn, board, wait_s)
        partial = None
        try:
            # leftovers of interrupted deploys: this deploy holds the lock, so no upload is in progress
            command(conn, board, "clean up", f"rm -rf {shell(board.root)}/releases/*.partial", check=False)
            record = {"id": release_id(record["names"]), **record}  # minted under the lock
            partial = f"{record['id']}.partial"
            _check_space(conn, board, files)
            _upload(conn, board, files, record, partial)
            release_dir = posixpath.join(board.root, "releases", partial)
            run(conn, runner(board, release_dir, "device.release", "verify", "."), board, "verify on the board")
            finished = run_json(conn, runner(board, release_dir, "device.release", "finish", board.root, partial,
                                             int(keep)), board, "switch current")
        except BoardError as exc:
            _remove_partial(conn, board, partial)
            problem = lock.give_back(conn, board, token)
            if problem:
                raise BoardError(board, exc.step, f"{exc.problem}; {problem}") from None
            raise
        problem = lock.give_back(conn, board, token)
        status = run_json(conn, runner(board, current(board), "device.release", "status", board.root), board, "status")
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
    record = release_record(files, "+".join(read_manifest(f)["name"] for f in model_dirs))
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
        token, note = lock.take(conn, board, wait_s, step="rollback")
        try:
            active = run_json(conn, runner(board, current(board), "device.release", "rollback", board.root),
                              board, "rollback")["current"]
        finally:
            problem = lock.give_back(conn, board, token)
    finally:
        close(conn)
    return active, "; ".join(filter(None, (note, problem))) or None


def current(board: Board) -> str:
    """The board's active release folder (`current`, a symlink into releases/)."""
    return posixpath.join(board.root, "current")
