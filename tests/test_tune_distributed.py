"""`grasptpu tune --workers N`: KerasTuner's chief and workers as real processes on localhost, a
worker killed mid-trial, Ctrl-C on the chief, and the one-line refusals (no chief, port in use)."""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host.train.distributed import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session(write_session):
    return write_session(16, 160, seed=4)


def _tune(session, models: Path, *args, stderr=subprocess.STDOUT) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "host.cli", "tune", str(session), "--task", "object",
                             "--models-dir", str(models), *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=stderr, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # each line as it is printed


class Output:
    """The chief's output, read as it comes (to act on a line) and kept."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.times: list[float] = []  # when each line arrived
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in iter(proc.stdout.readline, ""):
            self.times.append(time.time())
            self.lines.append(line)

    def last_time(self, words: str) -> float:
        return max(t for t, ln in zip(self.times, self.lines) if words in ln)

    def wait_for(self, words: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while not any(words in ln for ln in self.lines):
            assert time.time() < deadline, f"no line with {words!r} in {timeout} s:\n" + "".join(self.lines[-30:])
            time.sleep(0.2)

    @property
    def text(self) -> str:
        self.thread.join(10)
        return "".join(self.lines)


def _workers_alive(tag: str) -> list[int]:
    """Pids of tune-worker processes whose command line holds `tag` (from /proc, no extra package)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "tune-worker" in cmd and tag in cmd:
                pids.append(int(entry.name))
    return pids


def _results(models: Path) -> tuple[dict, list[str]]:
    folder = models / "ZRec50-object-tuning"
    return json.loads((folder / "best_hyperparameters.json").read_text()), \
        (folder / "results.tsv").read_text().strip().splitlines()


@pytest.mark.slow
def test_a_chief_and_two_workers_finish_the_search(session, tmp_path):
    """...training the chief's --lstm, not the workers' own default layer (fused or fused-bf16 here)."""
    proc = _tune(session, tmp_path, "--max-trials", 3, "--epochs", 1, "--workers", 2, "--lstm", "keras")
    out = Output(proc)
    assert proc.wait(600) == 0, out.text
    # the chief writes the results once the last trial is in (KerasTuner's own chief looked every 20 s)
    assert out.last_time("written to") - out.last_time("Complete [") < 8.0, out.text
    best, rows = _results(tmp_path)
    assert best["workers"] == 2 and best["trials_finished"] == 3 and best["trials_failed"] == 0
    assert len(rows) == 4 and rows[0].startswith("trial\tval_accuracy")
    layer = rows[0].split("\t").index("lstm")
    assert best["lstm"] == "keras" and [row.split("\t")[layer] for row in rows[1:]] == ["keras"] * 3
    built = re.findall(r"tune-worker (tuner\d): trial model built with the (\S+) layer", out.text)
    assert len(built) >= 3 and {kind for _, kind in built} == {"keras"}, out.text  # the layer each worker built
    assert "chief serving on 127.0.0.1:" in out.text and not _workers_alive(str(session))
    # the same search in one process trains the same trials to the same scores (host.train.fit.trial_seed)
    alone = tmp_path / "alone"
    proc = _tune(session, alone, "--max-trials", 3, "--epochs", 1, "--lstm", "keras")
    out = Output(proc)
    assert proc.wait(600) == 0, out.text
    assert sorted(row.split("\t", 1)[1] for row in _results(alone)[1][1:]) == \
        sorted(row.split("\t", 1)[1] for row in rows[1:])


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_replaced_and_the_search_finishes(session, tmp_path):
    proc = _tune(session, tmp_path, "--max-trials", 3, "--epochs", 4, "--workers", 2)
    out = Output(proc)
    out.wait_for("Running Trial #", 300)
    time.sleep(2.0)  # it is training now
    victims = [p for p in _workers_alive(str(session)) if "--id tuner0" in
               Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()]
    assert victims, "no worker tuner0 to kill"
    os.kill(victims[0], signal.SIGKILL)
    assert proc.wait(900) == 0, out.text
    assert "worker tuner0 died (exit -9) in trial" in out.text  # it held a trial, which went back for a retry
    best, rows = _results(tmp_path)
    assert best["trials_finished"] == 3 and len(rows) == 4  # the killed trial was retried, the budget done
    assert any("tuner0 died" in e for e in best["events"])
    assert not _workers_alive(str(session))


@pytest.mark.slow
def test_a_worker_killed_after_the_other_was_told_to_stop_is_replaced_and_its_trial_retried(session, tmp_path):
    """The chief must not finish while a trial waits for its retry: a worker that dies near the end,
    after the other worker was told there is no trial left, leaves one (seed 7 draws a four-layer
    trial learning at 1e-4 and a one-layer one at 1e-2, so the one-layer worker is told to stop
    first; test_seven_draws_a_long_and_a_short_trial checks the draws)."""
    proc = _tune(session, tmp_path, "--max-trials", 2, "--epochs", 20, "--workers", 2, "--seed", 7)
    out = Output(proc)
    out.wait_for("has no trial left", 600)
    victims = _workers_alive(str(session))
    assert victims, "both workers ended before the kill:\n" + "".join(out.lines[-30:])
    os.kill(victims[0], signal.SIGKILL)
    assert proc.wait(900) == 0, out.text
    best, rows = _results(tmp_path)
    assert best["trials_finished"] == 2 and best["trials_failed"] == 0, best  # retried, not cut short
    assert any("died" in e for e in best["events"]) and not _workers_alive(str(session))


def test_seven_draws_a_long_and_a_short_trial(session, tmp_path):
    """The premise of the test above, from the search's own tuner (its space, its draws)."""
    from host.data.prepare import prepare
    from host.train.tune import make_tuner

    tuner = make_tuner(prepare(session, seed=7), "object", 2, 1, 7, tmp_path, verbose=0)
    first, second = (tuner.oracle.create_trial(f"worker{k}").hyperparameters.values for k in range(2))
    assert (first["bilstm_layers"], first["learning_rate"]) == (4, 1e-4)
    assert (second["bilstm_layers"], second["learning_rate"]) == (1, 1e-2)


@pytest.mark.slow
def test_ctrl_c_on_the_chief_stops_its_workers_and_leaves_the_results_readable(session, tmp_path):
    proc = _tune(session, tmp_path, "--max-trials", 8, "--epochs", 2, "--workers", 2)
    out = Output(proc)
    out.wait_for("Trial 1 Complete", 600)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 2, out.text
    assert "interrupted: stopped after" in out.text and "finished trial(s) of 8" in out.text
    best, rows = _results(tmp_path)
    assert best["interrupted"] is True and 1 <= best["trials_finished"] < 8
    status = rows[0].split("\t").index("status")
    cut = [row for row in rows[1:] if row.split("\t")[status] == "unfinished"]
    assert best.get("trials_unfinished", 0) == len(cut) and best["trials_failed"] == 0  # cut short is not failed
    assert not _workers_alive(str(session))


@pytest.mark.slow
def test_a_chief_whose_output_pipe_closes_stops_like_ctrl_c(session, tmp_path):
    """`grasptpu tune ... | head`: the chief's KerasTuner display prints inside gRPC calls, whose
    failure killed the workers with tracebacks and kept the chief going for minutes. Now the first
    write into the closed pipe stops the search: the finished trials written, one line on stderr."""
    proc = _tune(session, tmp_path, "--max-trials", 8, "--epochs", 2, "--workers", 2, stderr=subprocess.PIPE)
    seen = ""
    while "Trial 1 Complete" not in seen:  # read as `head` would, then go away
        line = proc.stdout.readline()
        assert line, "the chief ended before its first trial"
        seen += line
    proc.stdout.close()
    assert proc.wait(120) == 2
    errors = [ln for ln in proc.stderr.read().splitlines() if ln.startswith("grasptpu") or "Traceback" in ln]
    assert len(errors) == 1 and "output pipe closed" in errors[0] and "stopped after" in errors[0], errors
    best, rows = _results(tmp_path)
    assert best["interrupted"] is True and 1 <= best["trials_finished"] < 8
    assert not _workers_alive(str(session))


def test_a_worker_with_no_chief_says_so_in_one_line(session):
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "host.cli", "tune-worker", str(session), "--chief",
                           f"127.0.0.1:{free_port()}", "--id", "tuner0", "--wait-s", "2"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2 and time.time() - start < 60
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "no tuning chief answers at" in done.stderr


def test_a_chief_with_no_worker_asking_stops_in_one_line(session, tmp_path):
    """--workers 0 and nobody comes (or every worker elsewhere died): after --worker-timeout the chief
    stops and says why, instead of serving for ever."""
    done = subprocess.run([sys.executable, "-m", "host.cli", "tune", str(session), "--models-dir", str(tmp_path),
                           "--workers", "0", "--worker-timeout", "3", "--max-trials", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no worker has asked for a trial for 3 s and trials remain" in done.stderr
    assert "before any trial finished; nothing was written" in done.stderr


def test_a_chief_port_in_use_is_refused(session, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "host.cli", "tune", str(session), "--models-dir", str(tmp_path),
                               "--workers", "1", "--chief-address", f"127.0.0.1:{port}"], cwd=REPO,
                              capture_output=True, text=True)
    assert done.returncode == 2 and f"cannot serve the tuning chief on 127.0.0.1:{port}" in done.stderr
    assert "pick another --chief-address" in done.stderr and not (tmp_path / "ZRec50-object-tuning").exists()


@pytest.mark.slow
def test_the_slurm_script_starts_a_chief_and_workers_that_finish(session, tmp_path):
    """tools/slurm_tune.sh under stand-ins for the two SLURM commands it calls (no SLURM here): `srun`
    runs its command once per task with SLURM_PROCID set, `scontrol` names this host. The chief and
    workers it starts are the real ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\n"
        "for i in $(seq 0 $((NTASKS - 1))); do SLURM_PROCID=$i \"$@\" & done\nwait\n")
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NTASKS": "3", "SLURM_JOB_NODELIST": "node1",
           "SLURM_CPUS_PER_TASK": "1", "PORT": str(free_port()), "MODELS_DIR": str(tmp_path / "models"),
           "GRASPTPU": f"{sys.executable} -m host.cli", "LSTM": "fused"}
    done = subprocess.run(["bash", str(REPO / "tools" / "slurm_tune.sh"), str(session), "object", "2", "1"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    best, rows = _results(tmp_path / "models")
    assert best["workers"] == 0 and best["trials_finished"] == 2 and len(rows) == 3
    assert "tune-worker tuner1: the chief" in done.stdout and "tune-worker tuner2: the chief" in done.stdout
    assert best["lstm"] == "fused" and "built with the fused layer" in done.stdout  # LSTM= reaches the chief
