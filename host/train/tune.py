"""KerasTuner Bayesian search over the paper's hyperparameter space, on the validation split only.

The space is the paper's Table 2 (docs/method.md, "Hyperparameter search").

The tuner drives the very `DecoderHyperModel` that `grasptpu train` fits (host.train.fit): same
model builder, same feeds, early stopping and learning-rate schedule; each trial is scored by its
best validation accuracy (classifiers) or its lowest validation loss, the mean squared error in the
target's unit squared (the aperture regressor: on one validation set, the lowest error is the
highest R2). Results land in models/<name>-tuning/: a table (results.tsv), the best
values (best_hyperparameters.json, which `grasptpu train --hp-file` takes) and KerasTuner's own
trial folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from host.data.prepare import Prepared, prepare
from host.errors import GrasptpuError
from host.files import StagedDir, write_json, write_text
from host.train import distributed as dist
from host.train.config import LAYER_HP, TrainConfig
from host.train.model import SEARCH_SPACE

BEST_FILE = "best_hyperparameters.json"
OBJECTIVES = {"object": ("val_accuracy", "max"), "grasp-phase": ("val_accuracy", "max"), "aperture": ("val_loss", "min")}
# Random trials before the Bayesian model guides the search: KerasTuner's default, 3 per
# hyperparameter searched, counted on the paper's space (KerasTuner would also count the fixed
# layer value, LAYER_HP, and a 20-trial search would then never leave its random start).
INITIAL_POINTS = 3 * len(SEARCH_SPACE)
TUNE_STOP_PATIENCE = 5  # a trial is a screening run: stop sooner than a final training (10)
BATCH_SIZE = next(f.default for f in fields(TrainConfig) if f.name == "batch_size")  # a training run's, not a copy


@dataclass
class Tuned:
    """What a search produced, for the command line to show."""

    folder: Path
    best_file: Path
    recording: Path
    task: str
    rows: list[dict]
    best: dict


def make_tuner(prepared: Prepared, task: str, max_trials: int, epochs: int, seed: int, workdir: Path,
               batch_size: int = BATCH_SIZE, stop_patience: int = TUNE_STOP_PATIENCE, verbose: int | None = None,
               lstm: str | None = None):
    """The Bayesian tuner over the task's hypermodel, its random start run longest trial first and
    seeded as asked (host.train.oracle). In KerasTuner's distributed mode (its environment
    variables set) the same call makes the chief's tuner or a worker's. A trial whose worker died is
    retried once (max_retries_per_trial), then recorded as failed. `lstm`: the layer trained (None:
    this CPU's default); the chief's choice is part of the search space (DecoderHyperModel.build), so
    every worker trains the chief's layer whatever its own CPU's default."""
    import keras_tuner as kt

    from host.train.fit import DecoderHyperModel
    from host.train.oracle import LongestFirstOracle

    config = TrainConfig(task=task, hyperparameters={}, epochs=epochs, batch_size=batch_size,
                         stop_patience=stop_patience, seed=seed, verbose=verbose, lstm=lstm)
    oracle = LongestFirstOracle(objective=kt.Objective(*OBJECTIVES[task]), max_trials=max_trials, seed=seed,
                                max_retries_per_trial=1, num_initial_points=INITIAL_POINTS)
    return kt.Tuner(oracle=oracle, hypermodel=DecoderHyperModel(prepared, config, seed_per_trial=True),
                    directory=str(workdir), project_name="search", overwrite=True)


def search(prepared: Prepared, task: str, max_trials: int, epochs: int, seed: int, workdir: Path,
           batch_size: int = BATCH_SIZE, stop_patience: int = TUNE_STOP_PATIENCE, verbose: int | None = None,
           lstm: str | None = None):
    """Run the Bayesian search in this process; returns the finished tuner."""
    tuner = make_tuner(prepared, task, max_trials, epochs, seed, workdir, batch_size, stop_patience, verbose, lstm)
    tuner.search(epochs=epochs)
    return tuner


def serve(prepared: Prepared, task: str, max_trials: int, epochs: int, seed: int, workdir: Path, workers: dist.Workers,
          echo=print, lstm: str | None = None):
    """Be the chief of a distributed search until its budget is done; (tuner, supervisor events, why it
    stopped early: "" when it did not, "interrupted" on Ctrl-C / SIGTERM, else the supervisor's reason).
    The tuner is None if the search stopped before the chief had one."""
    import os
    import signal

    def terminated(*_):
        raise KeyboardInterrupt  # `kill` / `scancel` on the chief: stop the workers and write, as Ctrl-C does

    dist.check_port_free(workers.address)
    previous = signal.signal(signal.SIGTERM, terminated)
    saved = {k: os.environ.get(k) for k in dist.role_environment("chief", workers.address)}
    os.environ.update(dist.role_environment("chief", workers.address))
    supervisor = dist.Supervisor(workers.command, workers.address, workers.count, workers.timeout, echo)
    closed = "this command's output pipe closed (its reader ended)"  # `| head`: stop as on Ctrl-C
    try:
        with dist.guarded_stdout(lambda: supervisor.abort(closed)):
            supervisor.launch()  # the workers load TensorFlow and the session while the chief does
            try:
                tuner = make_tuner(prepared, task, max_trials, epochs, seed, workdir, lstm=lstm)
            except KeyboardInterrupt:  # stopped while starting: no tuner, no trial
                return None, supervisor.events, supervisor.failed or "interrupted"
            dist.track_reports(tuner.oracle)
            supervisor.watch(tuner.oracle)
            echo(f"tune: chief serving on {workers.address}; {workers.count} local worker(s) started")
            try:
                dist.serve_oracle(tuner)
                stopped = ""
            except KeyboardInterrupt:
                stopped = supervisor.failed or "interrupted"
            return tuner, supervisor.events, stopped
    finally:
        signal.signal(signal.SIGTERM, previous)
        supervisor.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def results_table(tuner, task: str) -> list[dict]:
    """One row per trial: its score on the task's objective (best validation accuracy, or lowest
    validation loss), how it ended and its hyperparameters, best first; trials without a score
    (failed, or cut short by a stopped search) last."""
    name, direction = OBJECTIVES[task]
    sign = -1.0 if direction == "max" else 1.0
    rows = []
    for trial in tuner.oracle.trials.values():
        score = trial.score
        rows.append({"trial": trial.trial_id, name: None if score is None else float(score),
                     "status": trial_status(trial), **trial.hyperparameters.values})
    return sorted(rows, key=lambda r: (r[name] is None, 0.0 if r[name] is None else sign * r[name]))


def trial_status(trial) -> str:
    """KerasTuner's word for how a trial ended (COMPLETED, FAILED, ...), or "unfinished" for one still
    running when the search was stopped."""
    status = str(trial.status)
    return "unfinished" if status in ("RUNNING", "IDLE") else status


def tsv(rows: list[dict]) -> str:
    """The trial table as tab-separated text (results.tsv, and what the command prints)."""
    if not rows:
        return "(no finished trials)"
    keys = list(rows[0])
    lines = ["\t".join(keys)]
    for row in rows:
        lines.append("\t".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys))
    return "\n".join(lines)


def run_tuning(recording: Path, task: str, models_dir: Path, name: str | None, max_trials: int, epochs: int,
               seed: int, data_options: dict | None = None, workers: dist.Workers | None = None, echo=print,
               lstm: str | None = None) -> Tuned:
    """Search (here, or as the chief of workers), then write the table and the best hyperparameters
    atomically; an interrupted distributed search writes the trials it finished and says so. Every
    trial trains the layer `lstm` (None: this CPU's default), recorded per trial in the table and
    once in the best file (not among the hyperparameters: `grasptpu train` picks its own layer)."""
    prepared = prepare(recording, progress=True, seed=seed, **(data_options or {}))
    name = name or f"{prepared.binned.session}-{task}-tuning"
    events, stopped = [], ""
    with StagedDir(models_dir / name) as staged:
        if workers is None:
            tuner = search(prepared, task, max_trials, epochs, seed, staged.path / "keras_tuner", lstm=lstm)
        else:
            tuner, events, stopped = serve(prepared, task, max_trials, epochs, seed, staged.path / "keras_tuner",
                                           workers, echo, lstm)
        rows = results_table(tuner, task) if tuner is not None else []
        objective, direction = OBJECTIVES[task]
        if not rows or rows[0][objective] is None:
            if stopped:
                raise TuningInterrupted(f"{stopped} before any trial finished; nothing was written")
            raise GrasptpuError("every tuning trial failed (see the log above); nothing was written")
        best = dict(tuner.get_best_hyperparameters(1)[0].values)
        layer = best.pop(LAYER_HP)
        write_text(staged.path / "results.tsv", tsv(rows) + "\n")
        done = sum(r[objective] is not None for r in rows)
        unfinished = sum(r["status"] == "unfinished" for r in rows)
        write_json(staged.path / BEST_FILE, {
            "task": task, "session": prepared.binned.session,
            "objective": f"{objective} ({direction}imum, validation split)",
            "max_trials": max_trials, "epochs": epochs, "seed": seed,
            f"best_{objective}": rows[0][objective], "hyperparameters": best, "lstm": layer,
            "trials_finished": done, "trials_failed": len(rows) - done - unfinished,
            **({"trials_unfinished": unfinished} if unfinished else {}),
            **({"workers": workers.count, "chief": str(workers.address), "events": events} if workers else {}),
            **({"interrupted": True, "stopped": stopped} if stopped else {}),
        })
        shutil.rmtree(staged.path / "keras_tuner" / "search", ignore_errors=True)  # checkpoints: large, not needed
        folder = staged.commit()
    if stopped:
        raise TuningInterrupted(f"{stopped}: stopped after {done} finished trial(s) of {max_trials}; the trials so "
                                f"far are in {folder}")
    return Tuned(folder, folder / BEST_FILE, Path(recording), task, rows, best)


class TuningInterrupted(GrasptpuError):
    """A distributed search stopped early (Ctrl-C, SIGTERM, or no way to finish): the local workers were
    stopped and the finished trials written."""


def load_best(path: Path) -> dict:
    """Hyperparameters from a best_hyperparameters.json."""
    try:
        data = json.loads(Path(path).read_text())
        values = dict(data["hyperparameters"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GrasptpuError(f"{path}: not a tuning result ({type(exc).__name__}); run `grasptpu tune` first") from None
    unknown = sorted(set(values) - set(SEARCH_SPACE))
    if unknown:  # e.g. the layer, which --lstm chooses: a stray one would override it unrecorded
        raise GrasptpuError(f"{path}: {', '.join(map(str, unknown))} not among the searched hyperparameters "
                            f"({', '.join(SEARCH_SPACE)}); remove them from \"hyperparameters\"")
    return values
