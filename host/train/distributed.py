"""`grasptpu tune --workers N`: KerasTuner's distributed mode, with a chief that never hangs on a dead worker.

KerasTuner's distributed mode (keras.io, "Distributed hyperparameter tuning") is three
environment variables: KERASTUNER_TUNER_ID ("chief", or a worker's own id), KERASTUNER_ORACLE_IP
and KERASTUNER_ORACLE_PORT. The chief serves the oracle (the Bayesian search's state) over gRPC;
each worker asks it for a trial, trains it and reports back. Here the `grasptpu tune` process is
the chief, and with `--workers N` it also starts N worker processes on this machine
(`grasptpu tune-worker`, each with its own TensorFlow threads); workers on other machines run the
same `grasptpu tune-worker` command pointed at the chief (tools/slurm_tune.sh does this).

KerasTuner's chief waits for every trial a worker holds: a worker that dies mid-trial would stall
the search for ever. So the chief keeps a `Supervisor`: a local worker that exits without
finishing is dropped from the oracle at once, its trial ended as INVALID (KerasTuner's own retry:
retried once by the next free worker, then recorded FAILED), and a new worker takes its place;
a worker elsewhere not heard of for `worker_timeout` seconds is dropped the same way. The search
finishes its budget, or stops with one line saying why it cannot (every local worker dead, no
worker asking for `worker_timeout` seconds while trials remain, too many failed trials in a row). Ctrl-C stops the local workers
and writes the trials finished so far.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from host.errors import GrasptpuError, first_line

MAX_RESTARTS_PER_SLOT = 3  # a local worker that keeps dying is not restarted for ever


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise GrasptpuError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8470)")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Workers:
    """How a distributed search runs: the chief's address, the local workers and their command."""

    address: Address           # where the chief serves
    count: int                 # local workers to start (0: only workers elsewhere)
    command: list              # a local worker's command line, without its --id
    timeout: float = 3600.0    # a worker elsewhere silent this long is dropped


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(address: Address) -> None:
    """gRPC would share a port another chief holds (SO_REUSEPORT): refuse it here, in one line."""
    with socket.socket() as s:
        try:
            s.bind((address.host, address.port))
        except OSError as exc:
            raise GrasptpuError(f"cannot serve the tuning chief on {address}: {exc.strerror or exc} (another chief "
                                "or program holds it); pick another --chief-address") from None


def role_environment(tuner_id: str, address: Address) -> dict:
    return {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": address.host,
            "KERASTUNER_ORACLE_PORT": str(address.port)}


def wait_for_chief(address: Address, timeout: float) -> None:
    """Return once the chief's gRPC service answers; a one-line error after `timeout` s."""
    import grpc

    # gRPC retries a refused connection after 1 s, then 1.6 times longer each time: a local worker
    # waiting for a chief that is still starting would connect 1-3 s late; retry every 0.1-0.25 s
    channel = grpc.insecure_channel(str(address), options=[("grpc.initial_reconnect_backoff_ms", 100),
                                                           ("grpc.min_reconnect_backoff_ms", 100),
                                                           ("grpc.max_reconnect_backoff_ms", 250)])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise GrasptpuError(f"no tuning chief answers at {address} after {timeout:g} s; start `grasptpu tune ... "
                            f"--workers N --chief-address HOST:{address.port}` there first (or check the address)") from None
    finally:
        channel.close()


def drop_worker(oracle, tuner_id: str, why: str) -> str | None:
    """Forget a worker that will not report again: its trial ends INVALID (retried, then FAILED) and it
    no longer counts as running, so the chief can finish. Returns the trial's id, if it held one."""
    import keras_tuner as kt
    from keras_tuner.src.engine import trial as trial_module

    @kt.synchronized
    def _drop(oracle_, tuner_id_):
        trial, problem = oracle_.ongoing_trials.get(tuner_id_), ""
        if trial is not None:
            ended = trial_module.Trial(trial.hyperparameters.copy(), trial.trial_id, trial_module.TrialStatus.INVALID,
                                       message=why)
            try:  # kt.synchronized keeps its lock if an exception passes through it: none may
                oracle_.end_trial(ended)
            except Exception as exc:  # KerasTuner stops after too many failed trials in a row
                problem = first_line(exc)
            oracle_.ongoing_trials.pop(tuner_id_, None)
        oracle_.tuner_ids.discard(tuner_id_)
        return (trial.trial_id if trial is not None else None), problem

    trial_id, problem = _drop(oracle, tuner_id)
    if problem:
        raise GrasptpuError(f"the search cannot go on after worker {tuner_id} died: {problem}")
    return trial_id


@dataclass
class Slot:
    """One local worker position: the process now in it, and how often it was restarted."""

    index: int
    proc: subprocess.Popen | None = None
    tuner_id: str = ""
    restarts: int = 0
    done: bool = False  # its search ended normally (the oracle told it to stop)
    dead: bool = False  # died too often to be restarted


@dataclass
class Supervisor:
    """Starts the local workers, replaces dead ones, drops silent remote ones (see the module docstring).
    The workers start (`launch`) before the chief has its oracle, so that both load TensorFlow at the
    same time; the watching starts (`watch`) once the oracle exists."""

    worker_command: list
    address: Address
    n_workers: int
    worker_timeout: float = 3600.0
    echo: object = print
    oracle: object = None
    slots: list = field(default_factory=list)
    events: list = field(default_factory=list)
    failed: str = ""

    def launch(self) -> None:
        self.slots = [Slot(k) for k in range(self.n_workers)]
        for slot in self.slots:
            self._launch(slot)

    def watch(self, oracle) -> None:
        """Supervise the workers (twice a second, in a thread) against the chief's `oracle`."""
        self.oracle = oracle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tune-supervisor", daemon=True)
        self._thread.start()

    def _launch(self, slot: Slot) -> None:
        slot.tuner_id = f"tuner{slot.index}" + (f"-r{slot.restarts}" if slot.restarts else "")
        env = {**os.environ, **role_environment(slot.tuner_id, self.address), CHIEF_PID: str(os.getpid())}
        # its own session: a Ctrl-C meant for the chief reaches the chief, which then stops the workers
        # (and a worker ends itself if the chief is killed: die_with_chief)
        slot.proc = subprocess.Popen([*self.worker_command, "--id", slot.tuner_id], env=env, start_new_session=True)

    def _watch(self) -> None:
        """Check the workers twice a second; any failure here ends the search with one line, never a hang."""
        idle_since = time.time()
        while not self._stop.wait(0.5):
            try:
                for slot in self.slots:
                    self._check(slot)
                self._drop_silent()
                idle_since = time.time() if self.oracle.tuner_ids or not self._unfinished() else idle_since
                why = self._why_stuck(idle_since)
            except Exception as exc:  # a supervisor that died silently would leave the chief waiting for ever
                why = str(exc) if isinstance(exc, GrasptpuError) else f"the supervisor failed: {exc!r}"
            if why:
                self.abort(why)
            if self.failed:  # this check's, or another thread's abort()
                return

    def abort(self, why: str) -> None:
        """End the search (from the watch or any other thread; the first reason stands): the chief
        stops its workers and writes the finished trials; `why` is its one line."""
        import _thread

        if not self.failed:
            self.failed = why
            _thread.interrupt_main()

    def _check(self, slot: Slot) -> None:
        code = None if slot.proc is None else slot.proc.poll()
        if code is None:
            return
        slot.proc = None
        if code == 0:
            slot.done = True
            return
        trial = drop_worker(self.oracle, slot.tuner_id, f"worker {slot.tuner_id} exited with {code}")
        self._say(f"worker {slot.tuner_id} died (exit {code})" + (
            f" in trial {trial}: the trial goes back for one retry" if trial else ""))
        if slot.restarts >= MAX_RESTARTS_PER_SLOT:
            slot.dead = True
            self._say(f"worker slot {slot.index} died {slot.restarts + 1} times; not restarted")
            return
        slot.restarts += 1
        self._launch(slot)

    def _unfinished(self) -> bool:
        """Trials are still to run: held by a worker, waiting for a retry, or not yet handed out."""
        return (bool(self.oracle.ongoing_trials) or bool(self.oracle._retry_queue)
                or len(self.oracle.trials) < (self.oracle.max_trials or 0))

    def _why_stuck(self, idle_since: float) -> str:
        """Why the search cannot finish ("" while it can): every local worker dead (or ended before a
        trial came back for a retry) with no worker elsewhere, or, with no worker of any kind left
        asking, trials unfinished for worker_timeout s."""
        if self.slots and all(s.dead for s in self.slots) and self._unfinished():
            return "every local worker died (see the lines above); the search cannot finish"
        if (self.slots and all(s.dead or s.done for s in self.slots) and self._unfinished()
                and not self.oracle.tuner_ids):
            return ("the local workers ended or died with trials left (see the lines above) and no worker elsewhere "
                    "asks; the search cannot finish")
        if time.time() - idle_since > self.worker_timeout:
            return (f"no worker has asked for a trial for {self.worker_timeout:g} s and trials remain; start "
                    "workers (`grasptpu tune-worker`), or stop the chief (Ctrl-C writes the finished trials)")
        return ""

    def _drop_silent(self) -> None:
        """A worker elsewhere that holds a trial and has not been heard of for worker_timeout s is gone.
        KerasTuner 1.4 workers report once, at the end of a trial: the timeout must exceed a whole trial."""
        now = time.time()
        local = {s.tuner_id for s in self.slots}
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            seen = LAST_SEEN.get(trial.trial_id, now)
            if tuner_id not in local and now - seen > self.worker_timeout:
                drop_worker(self.oracle, tuner_id, f"worker {tuner_id} silent for {self.worker_timeout:g} s")
                self._say(f"worker {tuner_id} silent for {self.worker_timeout:g} s in trial {trial.trial_id}: dropped, "
                          "the trial goes back for one retry")

    def _say(self, text: str) -> None:
        self.events.append(text)
        self.echo(f"tune: {text}")

    def stop(self) -> None:
        """Stop the supervisor and every local worker still running."""
        if hasattr(self, "_stop"):
            self._stop.set()
            self._thread.join(5)
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
        for slot in self.slots:
            if slot.proc is not None:
                try:
                    slot.proc.wait(20)
                except subprocess.TimeoutExpired:
                    slot.proc.kill()


class GuardedOutput:
    """Standard output that outlives its reader (`grasptpu tune ... | head`): the first write that
    finds the pipe closed points the descriptor at /dev/null, drops that write and all later ones,
    and calls `on_break` once. Without it the chief's KerasTuner display, printing inside a gRPC
    call, failed that call, and the worker that made it died with a traceback, over and over."""

    def __init__(self, stream, on_break=lambda: None) -> None:
        self._stream, self._on_break, self.broken = stream, on_break, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._break()

    def _break(self) -> None:
        self.broken = True
        try:  # what is still buffered then flushes into /dev/null, at exit too, not into an error
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass
        self._on_break()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_stdout(on_break=lambda: None):
    """sys.stdout as a GuardedOutput for the duration (print and click.echo both write through it)."""
    original = sys.stdout
    sys.stdout = GuardedOutput(original, on_break)
    try:
        yield sys.stdout
    finally:
        sys.stdout = original


LAST_SEEN: dict = {}  # trial id -> when a worker was handed it or last reported on it, chief side


CHIEF_PID = "GRASPTPU_TUNE_CHIEF_PID"  # set for local workers: the chief that started them


def die_with_chief() -> bool:
    """In a local worker: ask the kernel for SIGTERM when the chief that started it dies (Linux
    PR_SET_PDEATHSIG), so a killed chief leaves no worker training; exit now if it is already gone.
    True in a local worker (started by a chief on this machine), False in one started by hand or SLURM."""
    import ctypes
    import signal

    chief = os.environ.get(CHIEF_PID)
    if not chief:
        return False
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))
    except OSError:  # not Linux: the chief's own stop() is then the only way its workers end
        return True
    if str(os.getppid()) != chief:
        raise GrasptpuError("the chief that started this worker is gone")
    return True


def serve_oracle(tuner, poll_s: float = 0.2) -> None:
    """Be the chief: serve the tuner's oracle over gRPC until the search is done. KerasTuner's own
    `start_server` checks whether it may exit every 20 s once a worker has been told to stop, so a
    search whose workers end a trial apart kept the chief (and the results) waiting up to 20 s; this
    is the same service, checked every `poll_s`. Its exit rule (a worker was told to stop, no trial
    running, no worker registered) also waits for any trial queued for a retry: a worker that died
    near the end leaves one, and its replacement needs seconds to connect."""
    import grpc
    from concurrent import futures
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    tuner.save()  # as KerasTuner's chief does before serving
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrasptpuError(f"cannot serve the tuning chief on {address}: {first_line(exc)}; pick another "
                            "--chief-address") from None
    server.start()
    try:
        while not (servicer.stop_triggered and exit_chief(tuner.oracle) and not tuner.oracle._retry_queue):
            time.sleep(poll_s)
    finally:
        server.stop(grace=1.0).wait()  # no request still changing the oracle while the results are read


def track_reports(oracle) -> None:
    """Note the time of every report a worker makes on its trial (each epoch), for the silent-worker check."""
    original = oracle.update_trial

    def update_trial(trial_id, metrics, step=0):
        LAST_SEEN[trial_id] = time.time()
        return original(trial_id, metrics, step=step)

    oracle.update_trial = update_trial
    original_create = oracle.create_trial

    def create_trial(tuner_id):
        trial = original_create(tuner_id)
        LAST_SEEN[trial.trial_id] = time.time()
        return trial

    oracle.create_trial = create_trial


def worker_command(recording, task: str, max_trials: int, epochs: int, address: Address, threads: int,
                   data_args: list) -> list:
    """The `grasptpu tune-worker` command line a local worker runs (the id is appended per worker);
    `data_args` are the chief's data options, its --seed among them."""
    return [sys.executable, "-m", "host.cli", "tune-worker", str(recording), "--task", task, "--max-trials",
            str(max_trials), "--epochs", str(epochs), "--chief", str(address), "--threads", str(threads), *data_args]
