"""`grasptpu live`: replay -> board (device.live) -> recorder over LSL, then compare with the offline replay.

Three processes as in a rig: the replay (the acquisition system) and the recorder (the prosthesis
side) run here as subprocesses of this command, device.live runs on the board over SSH (or here,
with `--local`, in this machine's Python). Every bin the replay sent is looked up in what the
recorder received by its stamp (device.live passes the input's stamp through), which gives the
end-to-end latency (receive time minus stamp, one clock: both ends run here), the missed bins
(sent, never received) and, against device.stream's offline decisions on the same trials and the
same board, whether each decision is identical.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from device.contract import load_manifest, stream_decoders
from device.live import OUTPUT_CHANNELS, STATUS
from host.errors import GrasptpuError, report_json
from host.files import atomic_path, write_json

MISSING = -2  # bins.npz: the grasp / object value of a bin whose decision never arrived (-1: no decision)
REPO = Path(__file__).resolve().parents[2]  # where device/ is, for a Python that does not have grasptpu installed
IDLE_STOP_S = 2.0  # device.live stops this long after the last bin; the recorder waits a little longer


def by_task(model_dirs: list[Path]) -> dict:
    """{task: folder} for a detector, a classifier and optionally an aperture regressor, in the order
    device.live takes them (device.contract.stream_decoders)."""
    return stream_decoders((load_manifest(str(folder))["task"], Path(folder)) for folder in model_dirs)


class LocalRunner:
    """device.live / device.stream as subprocesses of a Python here (by default this one, with its TFLite
    runtime; the tests also pass the Coral-faithful board's Python 3.7), run from the project folder."""

    name = "local"

    def __init__(self, folders: dict, python: str = sys.executable) -> None:
        self.paths = {t: str(Path(f).absolute()) for t, f in folders.items()}
        self.python = python

    def start(self, module: str, args: list):
        return subprocess.Popen([self.python, "-m", module, *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)

    def finish(self, proc, timeout: float) -> tuple[dict, str]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate()
        return report_json(out, err, "device.live here"), err

    def stop(self, proc) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run_json(self, module: str, args: list, timeout: float) -> dict:
        done = subprocess.run([self.python, "-m", module, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        return report_json(done.stdout, done.stderr, module)

    def close(self) -> None:
        pass


class BoardRunner:
    """The same commands on a board over SSH, inside its current release (host.boards.remote)."""

    def __init__(self, board, trust_new_host: bool, folders: dict) -> None:
        from host.boards.deploy import current
        from host.boards.remote import open_board

        self.conn, self.board = open_board(board, trust_new_host)
        self.name = self.board.name
        self.release = current(self.board)
        self.paths = {t: f"models/{load_manifest(str(f))['name']}" for t, f in folders.items()}
        self.pidfile = f"{self.board.root}/live.pid"

    def start(self, module: str, args: list):
        from host.boards.remote import runner, start

        return start(self.conn, self.board, module, runner(self.board, self.release, module, *args, "--pidfile",
                                                           self.pidfile))

    def finish(self, promise, timeout: float) -> tuple[dict, str]:
        from host.boards.remote import finish

        result = finish(promise, self.board, "device.live", check=False)  # its report says more than its exit
        return report_json(result.stdout, result.stderr, f"device.live on board {self.name}"), result.stderr

    def stop(self, promise) -> None:
        from host.boards.remote import command, shell

        pid = shell(self.pidfile)  # only a device.live still running under that pid (never a reused one)
        command(self.conn, self.board, "stop device.live",
                f"p=$(cat {pid} 2>/dev/null) && grep -q device.live /proc/$p/cmdline && kill -TERM $p", check=False,
                timeout=30)

    def run_json(self, module: str, args: list, timeout: float) -> dict:
        from host.boards.remote import run_json, runner

        return run_json(self.conn, runner(self.board, self.release, module, *args), self.board, module, timeout)

    def close(self) -> None:
        from host.boards.remote import close

        close(self.conn)


def _cli(*args) -> list:
    return [sys.executable, "-m", "host.cli", *map(str, args)]


def run_session(folders: dict, runner, out_dir: Path, trials: int, stream: str, gap_bins: int = 1) -> dict:
    """Replay `trials` test trials into device.live through `runner`, record, compare; the summary (also written
    to out_dir/summary.json, with bins.npz: one row per bin sent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outlet = f"{stream}-decoded"
    ready = out_dir / ".recorder-ready"
    ready.unlink(missing_ok=True)
    decoders = [runner.paths[t] for t in folders]
    bin_ms = float(load_manifest(str(folders["grasp-phase"]))["data"]["bin_ms"])
    board = runner.start("device.live", [*decoders, "--stream", stream, "--outlet", outlet, "--idle-stop",
                                         IDLE_STOP_S, "--resolve-s", 60, "--json", "-"])
    procs = []
    try:
        procs.append(subprocess.Popen(_cli("record", outlet, "--out", out_dir / "received.npz", "--resolve-s", 60,
                                           "--idle-stop", IDLE_STOP_S + 3, "--ready-file", ready)))
        _wait_for(ready, 90, procs[0], "the recorder never subscribed to the board's outlet")
        replay = subprocess.run(_cli("replay", folders["grasp-phase"], "--stream", stream, "--trials", trials,
                                     "--gap-bins", gap_bins, "--log", out_dir / "replay.npz", "--wait-s", 60),
                                timeout=None, check=False)
        if replay.returncode:
            raise GrasptpuError(f"the replay failed (exit {replay.returncode})")
        board_summary, board_err = runner.finish(board, 120)
        try:
            failed = procs[0].wait(60)
        except subprocess.TimeoutExpired:
            failed = "it was still waiting 60 s after the board stopped"
        if failed:
            raise GrasptpuError(f"the recorder failed ({failed}); see its lines above")
    except BaseException:
        runner.stop(board)
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    offline = runner.run_json("device.stream", [*decoders, "--per-bin", "--trials", trials, "--json", "-"], 3600)
    summary = compare(out_dir, board_summary, offline, folders, bin_ms)
    summary.update(board=runner.name, models={t: load_manifest(str(f))["name"] for t, f in folders.items()},
                   model_dirs={t: str(f) for t, f in folders.items()}, stream=stream, gap_bins=gap_bins,
                   board_problems=[ln for ln in board_err.splitlines() if ln.startswith("device.live: ")][:20])
    write_json(out_dir / "summary.json", summary)
    return summary


def _wait_for(path: Path, timeout: float, proc, problem: str) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise GrasptpuError(problem)
        time.sleep(0.05)
    path.unlink()


def compare(out_dir: Path, board: dict, offline: dict, folders: dict, bin_ms: float) -> dict:
    """Join the replay log and the recording by stamp; latency, missed bins and agreement with the offline replay."""
    sent = dict(np.load(out_dir / "replay.npz"))
    got = dict(np.load(out_dir / "received.npz"))
    channels = [str(c) for c in got["channels"]]
    if channels != list(OUTPUT_CHANNELS):
        raise GrasptpuError(f"the board's outlet has channels {channels}; expected {list(OUTPUT_CHANNELS)}: "
                            "deploy this grasptpu's device/ again")
    rows, hit = match_stamps(sent["timestamp"], got["timestamp"])
    n = len(sent["timestamp"])
    values = np.full((n, len(OUTPUT_CHANNELS)), np.nan)
    values[hit] = got["values"][rows[hit]]
    received = np.where(hit, got["received"][rows], np.nan)
    col = {c: values[:, i] for i, c in enumerate(OUTPUT_CHANNELS)}
    off_state, off_decision = _offline_per_bin(offline, sent["trial"], sent["bin"])
    bins = {"trial": sent["trial"], "bin": sent["bin"], "timestamp": sent["timestamp"], "received": received,
            "latency_ms": (received - sent["timestamp"]) * 1e3,
            "grasp": np.nan_to_num(col["grasp"], nan=MISSING).astype(np.int8),
            "object_index": np.nan_to_num(col["object_index"], nan=MISSING).astype(np.int32),
            "probability": col["probability"], "aperture": col["aperture"], "aperture_smoothed": col["aperture_smoothed"],
            "detector_ms": col["detector_ms"], "classifier_ms": col["classifier_ms"], "aperture_ms": col["aperture_ms"],
            "board_ms": col["board_ms"], "status": np.nan_to_num(col["status"], nan=-1).astype(np.int8),
            "offline_grasp": off_state, "offline_object": off_decision}
    with atomic_path(out_dir / "bins.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **bins)
    same = _identical(bins, offline, sent, hit, window=int(load_manifest(str(folders["grasp-phase"]))["data"]["window_bins"]))
    lat = bins["latency_ms"][hit]
    late = (sent["pushed"] - sent["timestamp"]) * 1e3 if "pushed" in sent else np.zeros(0)
    return {"session": board.get("session"), "bin_ms": bin_ms, "data": offline.get("data"),
            "replay_late_ms": {"p50": _pct(late, 50), "p99": _pct(late, 99), "max": float(late.max()) if len(late) else None},
            "bins_sent": int(n), "bins_received": int(hit.sum()), "missed_bins": int(n - hit.sum()),
            "trials": int(len(np.unique(sent["trial"]))),
            "latency": {"p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": float(lat.max()) if len(lat) else None},
            "agreement": same, "board_live": board,
            "offline": {k: offline[k] for k in ("runtime", "detail", "latency", "trials") if k in offline}}


def match_stamps(sent: np.ndarray, got: np.ndarray, tolerance: float = 1e-6) -> tuple:
    """(row of `got` nearest each sent stamp, whether it is that bin's): the board passes each input
    stamp through, but liblsl may rebuild a regular stamp (last + 1 / rate) a rounding step away."""
    if not len(got):
        return np.zeros(len(sent), np.int64), np.zeros(len(sent), bool)
    order = np.argsort(got, kind="stable")
    stamps = got[order]
    right = np.clip(np.searchsorted(stamps, sent), 0, len(stamps) - 1)
    left = np.clip(right - 1, 0, len(stamps) - 1)
    nearer = np.where(np.abs(stamps[left] - sent) < np.abs(stamps[right] - sent), left, right)
    return order[nearer], np.abs(stamps[nearer] - sent) < tolerance


def _pct(values: np.ndarray, q: float):
    return float(np.percentile(values, q)) if len(values) else None


def _offline_per_bin(offline: dict, trial: np.ndarray, bin_: np.ndarray) -> tuple:
    """device.stream's per-bin state and decision at each (trial, bin) the replay sent."""
    per = offline["per_trial"]
    lengths = np.array([len(t["state"]) for t in per])
    offsets = np.r_[0, np.cumsum(lengths)]
    state = np.concatenate([np.asarray(t["state"], np.int8) for t in per])
    decision = np.concatenate([np.asarray(t["decision"], np.int32) for t in per])
    known = trial < len(per)
    idx = np.where(known, offsets[np.minimum(trial, len(per) - 1)] + bin_, 0)
    return (np.where(known, state[idx], MISSING).astype(np.int8),
            np.where(known, decision[idx], MISSING).astype(np.int32))


def _identical(bins: dict, offline: dict, sent: dict, hit: np.ndarray, window: int) -> dict:
    """Per received bin: is the live decision the offline one? A bin before the window fills has none in both."""
    filling = bins["status"] == STATUS["filling"]
    decoded = bins["status"] == STATUS["decoded"]
    same = (filling & (bins["bin"] < window - 1)) | (
        decoded & (bins["grasp"] == bins["offline_grasp"]) & (bins["object_index"] == bins["offline_object"]))
    out = {"bins": int(hit.sum()), "identical": int((same & hit).sum()), "decoded": int(decoded.sum())}
    per = offline["per_trial"]
    if per and "aperture" in per[0]:
        off_ap = np.concatenate([np.asarray([np.nan if v is None else v for v in t["aperture"]], float) for t in per])
        lengths = np.r_[0, np.cumsum([len(t["aperture"]) for t in per])]
        ref = off_ap[lengths[np.minimum(bins["trial"], len(per) - 1)] + bins["bin"]]
        both = decoded & np.isfinite(ref)
        out["aperture_bins"] = int(both.sum())
        out["aperture_identical"] = int((np.abs(np.round(bins["aperture"][both], 3) - ref[both]) < 1.5e-3).sum())
    first_bad = np.flatnonzero(hit & ~same)
    if len(first_bad):
        k = first_bad[0]
        out["first_difference"] = {"trial": int(bins["trial"][k]), "bin": int(bins["bin"][k]),
                                   "live": [int(bins["grasp"][k]), int(bins["object_index"][k])],
                                   "offline": [int(bins["offline_grasp"][k]), int(bins["offline_object"][k])]}
    return out

