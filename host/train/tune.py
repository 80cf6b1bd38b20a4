"""KerasTuner Bayesian search over the paper's hyperparameter space, on the validation split only.

The space is the paper's Table 2 (docs/method.md, "Hyperparameter search").

The tuner calls the very `build_model` that fixed configurations use; each trial trains on the
training windows and is scored by its best validation accuracy. Results land in
models/<name>-tuning/: a table (results.tsv), the best values (best_hyperparameters.json, which
`grasptpu train --hp-file` takes) and KerasTuner's own trial folder.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path


from host.errors import GrasptpuError
from host.modelfolder import StagedDir
from host.data.prepare import Prepared
from host.train.fit import assert_disjoint, input_statistics, make_feed, windows_for, write_json

BEST_FILE = "best_hyperparameters.json"


def search(prepared: Prepared, task: str, max_trials: int, epochs: int, seed: int, workdir: Path,
           batch_size: int = 256, stop_patience: int = 5, verbose: int | None = None):
    """Run the Bayesian search; returns the finished tuner."""
    import keras
    import keras_tuner as kt

    from host.train.model import build_model

    sets = windows_for(prepared, task)
    assert_disjoint(sets)
    keras.utils.set_random_seed(seed)
    mean, var = input_statistics(sets["train"], seed=seed)
    hypermodel = functools.partial(build_model, n_units=sets["train"].counts.shape[1],
                                   n_classes=len(sets["train"].label_names),
                                   window_bins=sets["train"].window_bins, input_mean=mean, input_var=var)
    tuner = kt.BayesianOptimization(hypermodel, objective=kt.Objective("val_accuracy", "max"),
                                    max_trials=max_trials, seed=seed, directory=str(workdir),
                                    project_name="search", overwrite=True)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=stop_patience)
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    tuner.search(make_feed(sets["train"], batch_size, True, seed), epochs=epochs,
                 validation_data=make_feed(sets["validation"], 1024, False, seed),
                 callbacks=[stop], verbose=verbose, shuffle=False)
    return tuner


def results_table(tuner) -> list[dict]:
    """One row per finished trial: its hyperparameters and best validation accuracy, best first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        score = trial.score
        rows.append({"trial": trial.trial_id, "val_accuracy": None if score is None else float(score),
                     **trial.hyperparameters.values})
    return sorted(rows, key=lambda r: -1.0 if r["val_accuracy"] is None else -r["val_accuracy"])


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no finished trials)"
    keys = list(rows[0])
    lines = ["\t".join(keys)]
    for row in rows:
        lines.append("\t".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys))
    return "\n".join(lines)


def run_tuning(recording: Path, task: str, models_dir: Path, name: str | None, max_trials: int, epochs: int,
               seed: int, data_options: dict | None = None) -> Path:
    """Search, then write the table and the best hyperparameters atomically; returns the folder."""
    from host.data.prepare import prepare

    prepared = prepare(recording, progress=True, seed=seed, **(data_options or {}))
    name = name or f"{prepared.binned.session}-{task}-tuning"
    with StagedDir(models_dir / name) as staged:
        tuner = search(prepared, task, max_trials, epochs, seed, staged.path / "keras_tuner")
        rows = results_table(tuner)
        if not rows or rows[0]["val_accuracy"] is None:
            raise GrasptpuError("every tuning trial failed (see the log above); nothing was written")
        best = tuner.get_best_hyperparameters(1)[0].values
        (staged.path / "results.tsv").write_text(format_table(rows) + "\n")
        write_json(staged.path / BEST_FILE, {
            "task": task, "session": prepared.binned.session, "objective": "val_accuracy (validation split)",
            "max_trials": max_trials, "epochs": epochs, "seed": seed,
            "best_val_accuracy": rows[0]["val_accuracy"] if rows else None, "hyperparameters": best,
        })
        shutil.rmtree(staged.path / "keras_tuner" / "search", ignore_errors=True)  # checkpoints: large, not needed
        folder = staged.commit()
    print(format_table(rows))
    print(f"best (validation accuracy {rows[0]['val_accuracy']:.4f}): {json.dumps(best)}")
    print(f"written to {folder / BEST_FILE}; train with: grasptpu train {recording} --task {task} --hp-file {folder / BEST_FILE}")
    return folder


def load_best(path: Path) -> dict:
    """Hyperparameters from a best_hyperparameters.json."""
    try:
        data = json.loads(Path(path).read_text())
        return dict(data["hyperparameters"])
    except (OSError, ValueError, KeyError) as exc:
        raise GrasptpuError(f"{path}: not a tuning result ({type(exc).__name__}); run `grasptpu tune` first") from None

