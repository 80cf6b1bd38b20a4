"""Benchmark and test the deployed decoders on boards over SSH, and judge the results.

`grasptpu bench --board NAME` runs `python -m device.bench` (and with `--stream`,
`python -m device.stream`, with the aperture decoder too when one is deployed) inside the
board's `current` release, reads the JSON it prints and
shows it beside the host's Keras, float and int8 figures (the manifest travelled with the model,
so both describe the same test windows).

What a board is judged by is what carries across runtimes: its accuracy (at most `max_drop`
points below the host's int8 model) and how often its argmax equals the host int8 model's (at
least `min_agreement`). Bit-exactness with the host is reported, never required: Coral's
tflite_runtime and the Edge TPU round LOGISTIC/TANH differently from ai-edge-litert. Latency
is judged against the board's own threshold (inventory `max_p99_ms`, default 2 ms: 20x headroom
in a 40 ms bin), because one machine's speed says nothing about another's.

`grasptpu firmware-test --board NAME` runs the on-board pytest suite (firmware_tests/) there and
fetches its junit report.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from device.contract import DeviceError, stream_decoders
from host.boards.deploy import current
from host.boards.inventory import Board
from host.boards.remote import BoardError, close, command, open_board, run, run_json, runner, shell
from host.errors import last_line


def remote_models(conn, board: Board) -> list[str]:
    out = run(conn, f"ls -1 {shell(posixpath.join(current(board), 'models'))}", board, "list deployed models")
    names = [n for n in out.split() if n]
    if not names:
        raise BoardError(board, "list deployed models", "no model in the current release; run `grasptpu deploy` first")
    return names


def bench_board(board: Board, invokes: int = 2000, stream: bool = False, models: tuple[str, ...] = (),
                trust_new_host: bool = False) -> dict:
    """Per model the device.bench JSON from the board, plus the stream JSON when asked."""
    conn, board = open_board(board, trust_new_host)
    try:
        names = list(models) or remote_models(conn, board)
        active = current(board)
        results = {name: run_json(conn, runner(board, active, "device.bench", f"models/{name}", "--invokes", int(invokes),
                                               "--json", "-"), board, f"device.bench {name}") for name in names}
        out = {"board": board.name, "where": board.where, "software": board_software(conn, board), "models": results}
        if stream:
            try:
                decoders = stream_decoders((r["task"], f"models/{name}") for name, r in results.items())
            except DeviceError as exc:
                raise BoardError(board, "device.stream", str(exc)) from None
            out["stream"] = run_json(conn, runner(board, active, "device.stream", *decoders.values(), "--json", "-"),
                                     board, "device.stream")
    finally:
        close(conn)
    return out


def board_software(conn, board: Board) -> dict:
    """What the board reports it runs (`python -m device.runtime` in the current release)."""
    return run_json(conn, runner(board, current(board), "device.runtime", "--json", "-"), board, "device.runtime")


def judge(result: dict, max_p99_ms: float, max_drop: float = 0.5, min_agreement: float = 0.99,
          max_miss_rate: float = 1e-4) -> list[str]:
    """Why the board's figures miss a threshold (empty: they pass)."""
    problems = []
    for name, r in result["models"].items():
        if r.get("task") == "aperture":
            problems += _judge_regression(name, r, max_p99_ms)
            continue
        host = (r.get("host") or {}).get("int8", {})
        drop = 100.0 * (host.get("accuracy", r["accuracy"]["accuracy"]) - r["accuracy"]["accuracy"])
        if drop > max_drop:
            problems.append(f"{name}: accuracy {drop:.2f} points below the host's int8 model (allowed {max_drop:g})")
        agreement = r["accuracy"]["host_int8_argmax_agreement"]
        if agreement < min_agreement:
            problems.append(f"{name}: argmax agrees with the host's int8 model on {agreement:.2%} of test windows "
                            f"(at least {min_agreement:.2%} required)")
        if r["latency"]["p99_ms"] > max_p99_ms:
            problems.append(f"{name}: p99 latency {r['latency']['p99_ms']:.3f} ms over {max_p99_ms:g} ms")
    stream = result.get("stream")
    if stream:
        misses, bins = stream["latency"]["deadline_misses"], stream["latency"].get("bins", 0)
        if misses > max_miss_rate * max(bins, 1):
            problems.append(f"stream: {misses} of {bins} bins missed the {stream['bin_ms']:.0f} ms deadline "
                            f"(allowed {max_miss_rate:g} of the bins)")
    return problems


MAX_BOARD_R2_DROP = 0.005  # board vs host int8 on the same windows: runtimes round a few outputs by a step


def _judge_regression(name: str, r: dict, max_p99_ms: float) -> list[str]:
    """An aperture decoder on a board: its R2 within MAX_BOARD_R2_DROP of the host's int8 model on
    the same test windows (bit-exactness is reported, not required), and the same latency bound."""
    problems = []
    host_r2 = ((r.get("host") or {}).get("int8") or {}).get("r2")
    board_r2 = r["accuracy"]["r2"]
    if host_r2 is not None and not board_r2 >= host_r2 - MAX_BOARD_R2_DROP:  # NaN fails too
        problems.append(f"{name}: R2 {board_r2:.4f} on the board, {host_r2:.4f} on the host's int8 model "
                        f"(allowed drop {MAX_BOARD_R2_DROP:g})")
    if r["latency"]["p99_ms"] > max_p99_ms:
        problems.append(f"{name}: p99 latency {r['latency']['p99_ms']:.3f} ms over {max_p99_ms:g} ms")
    return problems


def firmware_test(board: Board, report_dir: Path, trust_new_host: bool = False) -> tuple[int, str, Path, dict]:
    """(pytest exit code, its summary lines, local junit file, what the board runs) of firmware_tests/
    run on the board."""
    conn, board = open_board(board, trust_new_host)
    remote = posixpath.join(board.root, "firmware-junit.xml")
    try:
        software = board_software(conn, board)
        run(conn, f"rm -f {shell(remote)}", board, "firmware-test")  # never fetch an old report
        result = command(conn, board, "firmware-test",  # failing tests exit non-zero: the report tells
                         runner(board, current(board), "pytest", "-q", "-rs", "firmware_tests", "-p", "no:cacheprovider",
                                f"--junitxml={remote}"), check=False, timeout=1800)
        report_dir.mkdir(parents=True, exist_ok=True)
        local = report_dir / f"{board.name}-firmware-junit.xml"
        try:
            conn.get(remote, str(local))
        except OSError:
            raise BoardError(board, "firmware-test", last_line(result.stderr + result.stdout,
                                                               f"pytest exit {result.exited}")) from None
    finally:
        close(conn)
    summary = [ln for ln in result.stdout.splitlines() if ln.strip()]
    return result.exited, "\n".join(summary[-12:]), local, software
