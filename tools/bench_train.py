"""Training benchmark: wall time, epochs and windows/s per model, and the six-session tables.

For each session (default: all six synthetic sessions; written first if missing), train the
object classifier, the grasp-phase detector and the aperture regressor with the default settings
(early stopping), then print BiLSTM vs naive Bayes accuracy and relaxed accuracy, the detector's
accuracy and F1, and the aperture regressor's R2 beside the Wiener and Kalman filters fitted on the
same split in the same run (and its int8 model's R2, after `grasptpu quantize`), all on each
session's test split. Timings are read from each model's manifest (training only, excluding data
preparation and evaluation).
"windows/s" counts the windows trained on per epoch (fewer than the split's when epochs are
sampled or the detector's far rest windows thinned).
With `--repeat R` every model trains R times, in rounds over all the sessions (so a slow spell of
the machine does not fall on one model's runs only), and the time printed is the median with its
range: one run's time drifts by 10-20 % on this machine, while with fixed seeds the runs are the
same run (same epochs and test metrics; a difference is printed).
Usage: python tools/bench_train.py [--sessions ZRec50,MRec40] [--tasks aperture] [--data data] [--models models/bench]
       [--repeat 3]
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import click

from child_run import ROOT, run_child  # tools/, this script's own folder
sys.path.insert(0, str(ROOT))
ALL = "MRec40,MRec41,MRec42,ZRec32,ZRec35,ZRec50"
TASKS = ("object", "grasp-phase", "aperture")

# The accuracy table's columns: (row key, title, width, format); a decoder not trained shows "-".
ACCURACY_COLUMNS = (("classes", "classes", 7, "d"), ("acc", "BiLSTM acc", 10, ".1%"), ("relaxed", "relaxed", 8, ".1%"),
                    ("nb_acc", "NB acc", 7, ".1%"), ("nb_relaxed", "relaxed", 8, ".1%"), ("nb_loo", "NB LOO", 7, ".1%"),
                    ("det_acc", "detector acc", 12, ".2%"), ("det_f1", "F1 grasp", 8, ".3f"),
                    ("det_macro_f1", "F1 mean", 8, ".3f"))


def _run(args: list[str]) -> None:
    run_child(["-m", "host.cli", *args])


def _load(folder: Path) -> tuple[dict, dict]:
    return (json.loads((folder / "manifest.json").read_text()), json.loads((folder / "metrics.json").read_text()))


@click.command()
@click.option("--sessions", default=ALL, show_default=True, help="Comma-separated session names.")
@click.option("--data", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--models", type=click.Path(path_type=Path), default=Path("models/bench"), show_default=True)
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated decoders to train.")
@click.option("--train-args", default="", help="More `grasptpu train` options for every model, e.g. '--rest-sample 4'.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train every model this many times, in rounds over the sessions; print the median time and range.")
def main(sessions: str, data: Path, models: Path, tasks: str, train_args: str, repeat: int) -> None:
    """Train the decoders per session and print the timing and accuracy tables."""
    names = list(dict.fromkeys(s.strip() for s in sessions.split(",") if s.strip()))  # each session once
    chosen = [t for t in TASKS if t in tasks.split(",")]
    extra = shlex.split(train_args)
    print(f"training benchmark: sessions {', '.join(names)}; decoders {', '.join(chosen)}; {os.cpu_count()} CPU cores; "
          f"models in {models}" + (f"; train options {' '.join(extra)}" if extra else "")
          + (f"; {repeat} runs per model, in rounds" if repeat > 1 else ""))
    runs = _train_rounds(names, chosen, data, models, extra, repeat)
    timing = [{"session": name, "task": task, **summarise(runs[(name, task)])} for name in names for task in chosen]
    for t in timing:
        if not t["same_run"]:
            print(f"  note: {t['session']} {t['task']}: its {repeat} runs differ in epochs or test metrics (fixed "
                  "seeds should make them one run); the tables show the last")
    _print_timing(timing, repeat)  # before the aperture models are quantised, so a failure there loses no timing
    table = [row for row in (_accuracy_row(name, chosen, runs) for name in names) if len(row) > 1]
    _print_accuracy(table)
    aperture = [_aperture_row(t["session"], models / f"{t['session']}-aperture", runs[(t["session"], "aperture")][-1],
                              t["seconds"]) for t in timing if t["task"] == "aperture"]
    _print_aperture(aperture)
    (models / "bench-train.json").write_text(json.dumps({"timing": timing, "table": table, "aperture": aperture},
                                                        indent=1))


def _accuracy_row(name: str, tasks: list[str], runs: dict) -> dict:
    """One session's row of the accuracy table from its classifiers' last runs (their folders are on disk)."""
    row = {"session": name}
    if "object" in tasks:
        test, nb = (runs[(name, "object")][-1]["metrics"][k] for k in ("test", "baseline"))
        row.update(acc=test["accuracy"], relaxed=test["relaxed_accuracy"], nb_acc=nb["test_split"]["accuracy"],
                   nb_relaxed=nb["test_split"]["relaxed_accuracy"], nb_loo=nb["leave_one_out"]["accuracy"],
                   classes=test["classes"])
    if "grasp-phase" in tasks:
        test = runs[(name, "grasp-phase")][-1]["metrics"]["test"]
        row.update(det_acc=test["accuracy"], det_f1=test["f1"], det_macro_f1=test["macro_f1"])
    return row


def _train_rounds(names: list[str], tasks: list[str], data: Path, models: Path, extra: list[str],
                  repeat: int) -> dict[tuple[str, str], list[dict]]:
    """Train every (session, task) `repeat` times, a round over all of them at a time (so a slow spell
    of the machine is spread over the models); per model its runs' manifest training records, wall
    seconds and metrics, read right after each run (the next run overwrites the folder)."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(repeat):
        for name in names:
            recording = (data / f"{name}.neo.mat").resolve()
            if not recording.exists():
                _run(["synth", "--session", name, "--out", str(data)])
            for task in tasks:
                t0 = time.perf_counter()
                _run(["train", str(recording), "--task", task, "--models-dir", str(models.resolve()), *extra])
                wall = time.perf_counter() - t0
                manifest, metrics = _load(models / f"{name}-{task}")
                tr = manifest["training"]
                runs.setdefault((name, task), []).append({"training": tr, "wall_seconds": wall, "metrics": metrics})
                where = f" (round {round_ + 1} of {repeat})" if repeat > 1 else ""
                print(f"  {name} {task}{where}: {tr['seconds']:.1f} s training, {tr['epochs_run']} epochs", flush=True)
    return runs


def summarise(runs: list[dict]) -> dict:
    """One model's runs (each {"training": the manifest's training record, "wall_seconds": s, "metrics":
    metrics.json}): the median training seconds with its range, the median wall seconds, the last run's
    epochs and windows (the tables show the last run), and whether the runs are one run (same epochs,
    best epoch and test metrics: fixed seeds make them so, so only the time should differ)."""
    last = runs[-1]["training"]
    seconds = [r["training"]["seconds"] for r in runs]

    def outcome(run: dict) -> tuple:  # test metrics as JSON text: NaN (an undefined score) equals itself there
        tr = run["training"]
        return tr["epochs_run"], tr["best_epoch"], json.dumps(run["metrics"]["test"], sort_keys=True)

    return {"seconds": statistics.median(seconds), "min_seconds": min(seconds), "max_seconds": max(seconds),
            "runs_seconds": seconds, "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
            "epochs": last["epochs_run"], "best": last["best_epoch"], "windows": last["train_windows"],
            "epoch_windows": last["epoch_windows"],
            "windows_per_second": statistics.median(r["training"]["windows_per_second"] for r in runs),
            "same_run": len({outcome(r) for r in runs}) == 1}


def _print_timing(timing: list[dict], repeat: int) -> None:
    """The training-time table: per model the (median) training and wall seconds, epochs, windows."""
    print("\ntraining time (2-core CPU; targets: object < 60 s, grasp-phase < 180 s, aperture < 60 s)"
          + (f"; median of {repeat} runs, range beside it" if repeat > 1 else ""))
    spread = repeat > 1
    print(f"  {'session':<8} {'task':<12} {'train s':>8}" + (f" {'range s':>11}" if spread else "")
          + f" {'wall s':>7} {'epochs':>6} {'best':>5} {'windows':>8} {'per epoch':>9} {'windows/s':>10}")
    for t in timing:
        span = f" {t['min_seconds']:.1f}-{t['max_seconds']:.1f}".rjust(12) if spread else ""
        print(f"  {t['session']:<8} {t['task']:<12} {t['seconds']:8.1f}{span} {t['wall_seconds']:7.1f} {t['epochs']:6d}"
              f" {t['best']:5d} {t['windows']:8d} {t['epoch_windows']:9d} {t['windows_per_second']:10.0f}")


def _print_accuracy(table: list[dict]) -> None:
    """The classifiers' test-split accuracy per session, beside naive Bayes (either classifier may be missing)."""
    classified = [r for r in table if {"acc", "det_acc"} & set(r)]
    if not classified:
        return
    print("\ntest-split accuracy per session (object: windows for the BiLSTM, trials for naive Bayes)")
    print(f"  {'session':<8} " + " ".join(f"{title:>{width}}" for _, title, width, _ in ACCURACY_COLUMNS))
    for r in classified:
        cells = (format(r[key], f"{width}{spec}") if key in r else "-".rjust(width)
                 for key, _, width, spec in ACCURACY_COLUMNS)
        print(f"  {r['session']:<8} " + " ".join(cells))


def _print_aperture(aperture: list[dict]) -> None:
    """The aperture regressor's R2 per session: BiLSTM float and int8 beside the Wiener and Kalman filters."""
    if not aperture:
        return
    print("\naperture regressor, test split: R2 (BiLSTM float, its int8 model, "
          "and the baselines fitted in this run)")
    print(f"  {'session':<8} {'BiLSTM':>7} {'int8':>7} {'Wiener':>7} {'Kalman':>7} {'vs Wiener':>9} {'RMSE mm':>8}"
          f" {'int8 RMS diff mm':>16} {'train s':>8}  beats both")
    for a in aperture:
        print(f"  {a['session']:<8} {a['r2']:7.3f} {a['int8_r2']:7.3f} {a['wiener_r2']:7.3f} {a['kalman_r2']:7.3f}"
              f" {a['r2'] - a['wiener_r2']:+9.3f} {a['rmse']:8.2f} {a['int8_rms_diff']:16.3f} {a['seconds']:8.1f}"
              f"  {'yes' if a['r2'] > max(a['wiener_r2'], a['kalman_r2']) else 'NO'}")


def _aperture_row(session: str, folder: Path, run: dict, seconds: float) -> dict:
    """One session's aperture figures: the BiLSTM and its baselines (the run's metrics.json), then the
    int8 model's, quantised here (`grasptpu quantize` also runs the float-vs-int8 comparison)."""
    test, baseline = run["metrics"]["test"], run["metrics"]["baseline"]
    _run(["quantize", str(folder)])
    q = json.loads((folder / "manifest.json").read_text())["quantization"]
    return {"session": session, "r2": test["r2"], "rmse": test["rmse"], "wiener_r2": baseline["wiener"]["r2"],
            "kalman_r2": baseline["kalman"]["r2"], "int8_r2": q["int8"]["r2"], "int8_rms_diff": q["int8"]["rms_error"],
            "seconds": seconds}


if __name__ == "__main__":
    main()
