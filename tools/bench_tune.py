"""Tuning throughput: trials per hour with 1, 2 and 4 local workers (KerasTuner's distributed mode),
beside one process searching alone with every core, on the same session, budget and seed.

Each run is one `grasptpu tune ... --workers N --worker-threads T` from start to written results
(data preparation, worker start-up and the chief included): what a user waits for. The budget is
small (default 16 trials of 2 epochs) and below the Bayesian search's random start, so every run
draws the same trials whatever the number of workers. Ratios are against 1 worker in the same run.
Usage: python tools/bench_tune.py data/ZRec50.neo.mat [--task object] [--trials 16] [--epochs 2] [--workers 1,2,4]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click

from child_run import ROOT, run_child  # tools/, this script's own folder


def _tune(recording: Path, task: str, trials: int, epochs: int, workers: int | None, threads: int,
          out: Path) -> dict:
    """One search; its wall time and what its results say."""
    name = f"w{workers or 0}"
    args = ["-m", "host.cli", "tune", str(recording), "--task", task, "--max-trials", str(trials),
            "--epochs", str(epochs), "--models-dir", str(out), "--name", name]
    if workers:
        args += ["--workers", str(workers), "--worker-threads", str(threads)]
    t0 = time.perf_counter()
    run_child(args)
    wall = time.perf_counter() - t0
    best = json.loads((out / name / "best_hyperparameters.json").read_text())
    done = best["trials_finished"]
    return {"workers": workers, "threads": threads, "seconds": wall, "trials": done, "failed": best["trials_failed"],
            "trials_per_hour": done / wall * 3600}


@click.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", type=click.Choice(["object", "grasp-phase", "aperture"]), default="object", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--workers", "counts", default="1,2,4", show_default=True, help="Comma-separated worker counts.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the rows here.")
def main(recording: Path, task: str, trials: int, epochs: int, counts: str, json_out: Path | None) -> None:
    """Time the same search alone and with N workers each running one TensorFlow op at a time (on one thread)."""
    sys.path.insert(0, str(ROOT))
    from host.data.prepare import prepare
    from host.train.fit import usable_cores

    cores = usable_cores()  # what `grasptpu tune --workers` divides among its workers
    worker_counts = [int(n) for n in counts.split(",") if n.strip()]
    if not worker_counts or min(worker_counts) < 1:
        raise click.BadParameter(f"{counts!r}: worker counts of 1 or more (the run alone is always made)",
                                 param_hint="--workers")
    prepare(recording)  # the session's cache, so no run pays the cold binning
    print(f"tuning throughput: {recording.name}, {task}, {trials} trials x <= {epochs} epochs, seed 0; "
          f"{cores} CPU cores; each worker one TensorFlow op at a time; wall time from start to written results")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [(None, cores)] + [(n, 1) for n in worker_counts]
        for workers, threads in plan:
            rows.append(_tune(recording.resolve(), task, trials, epochs, workers, threads, Path(tmp)))
            r = rows[-1]
            label = "alone (all cores)" if workers is None else f"{workers} worker(s)"
            base = next((b for b in rows if b["workers"] == 1), None)
            ratio = f"{r['trials_per_hour'] / base['trials_per_hour']:.2f}x 1 worker" if base and workers else ""
            print(f"  {label:<18} {r['seconds']:7.1f} s  {r['trials']} trials ({r['failed']} failed)  "
                  f"{r['trials_per_hour']:6.0f} trials/hour  {ratio}", flush=True)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
