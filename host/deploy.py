"""Push model folders, the device runner and the on-board tests to boards, as one atomic release.

Per board (boards run in parallel, one thread each):
1. connect, host key verified (host.boards);
2. take the board's lock (`mkdir ROOT/.deploy-lock`, atomic): a second deploy to the same board
   waits up to `--wait` seconds, then fails cleanly;
3. upload everything into `releases/<id>.partial` over SFTP;
4. verify every byte on the board with the board's Python (`python -m device.release verify`);
5. rename to `releases/<id>`, switch `current` with one rename, keep the newest `--keep` releases.
Until step 5 the previous release stays active; a cut connection, a full disk or a damaged file
leaves it active and working, and the leftover `.partial` folder is removed by the next deploy.
"""

from __future__ import annotations

import concurrent.futures
import json
import posixpath
import shlex
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from host.boards import Board, BoardError, connect, run
from host.errors import GrasptpuError
from host.modeldir import read_manifest, sha256_of

REPO = Path(__file__).resolve().parent.parent
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


def _lock(conn, board: Board, wait_s: float) -> None:
    lock = posixpath.join(board.root, LOCK)
    note = f"{socket.gethostname()} {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
    deadline = time.monotonic() + wait_s
    while True:
        q = shlex.quote
        result = conn.run(f"mkdir -p {q(board.root + '/releases')} && mkdir {q(lock)} && echo {q(note)} > {q(lock + '/owner')}",
                          hide=True, warn=True, in_stream=False)
        if result.exited == 0:
            return
        if time.monotonic() >= deadline:
            owner = conn.run(f"cat {shlex.quote(lock + '/owner')}", hide=True, warn=True, in_stream=False).stdout.strip()
            raise BoardError(board, "lock", f"another deploy holds the board ({owner or 'unknown owner'}); "
                                            f"retry later, or remove {lock} if that deploy died")
        time.sleep(0.5)


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


def deploy_board(board: Board, files: list[tuple[Path, str]], record: dict, keep: int = 3, wait_s: float = 0.0,
                 trust_new_host: bool = False) -> dict:
    """Deploy one release to one board; returns what the board reports after the switch."""
    t0 = time.perf_counter()
    conn = connect(board, trust_new_host)
    try:
        _lock(conn, board, wait_s)
        try:
            partial = f"{record['id']}.partial"
            _upload(conn, board, files, record, partial)
            release_dir = shlex.quote(posixpath.join(board.root, "releases", partial))
            py, root = board.python, shlex.quote(board.root)
            run(conn, f"cd {release_dir} && {py} -m device.release verify .", board, "verify on the board")
            out = run(conn, f"cd {release_dir} && {py} -m device.release finish {root} {shlex.quote(partial)} {int(keep)}",
                      board, "switch current")
        finally:
            conn.run(f"rm -rf {shlex.quote(posixpath.join(board.root, LOCK))}", hide=True, warn=True, in_stream=False)
        status = json.loads(run(conn, f"cd {root}/current && {py} -m device.release status {root}",
                                board, "status").strip().splitlines()[-1])
    finally:
        conn.close()
    return {"board": board.name, "current": json.loads(out.strip().splitlines()[-1])["current"],
            "releases": status["releases"], "files": len(files) + 1,
            "bytes": sum(p.stat().st_size for p, _ in files), "seconds": time.perf_counter() - t0}


def deploy(boards: list[Board], model_dirs: list[Path], keep: int = 3, wait_s: float = 0.0,
           trust_new_host: bool = False) -> tuple[list[dict], list[str]]:
    """Deploy to every board in parallel; (successes, one error line per failed board)."""
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
    return sorted(done, key=lambda d: d["board"]), sorted(failed)


def rollback(board: Board, trust_new_host: bool = False) -> str:
    conn = connect(board, trust_new_host)
    try:
        root = shlex.quote(board.root)
        out = run(conn, f"cd {root}/current && {board.python} -m device.release rollback {root}",
                  board, "rollback")
    finally:
        conn.close()
    return json.loads(out.strip().splitlines()[-1])["current"]
