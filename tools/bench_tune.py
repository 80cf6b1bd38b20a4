"""Tuning throughput: trials per hour with 1, 2 and 4 local workers (KerasTuner's distributed mode),
beside one process searching alone with every core, on the same session, budget and seed.

Each run is one `grasptpu tune ... --workers N --worker-threads T` from start to written results
(data preparation, worker start-up and the chief included): what a user waits for. The budget is
small (default 16 trials of 2 epochs) and below the Bayesian search's random start, so every run
draws the same trials whatever the number of workers. Ratios are against 1 worker in the same
round. With `--repeat R` the runs are made in R rounds, each round's order the reverse of the one
before (so a slow spell of the machine does not fall on one setting only), and the summary gives
per setting the median trials per hour and the median of the rounds' ratios with their range: a
2-worker search lasts about a minute here, and single ratios drifted from 1.44x to 1.92x in one hour.
Usage: python tools/bench_tune.py data/ZRec50.neo.mat [--task object] [--trials 16] [--epochs 2] [--workers 1,2,4]
       [--repeat 3]
"""

from __future__ import annotations

import json
import statistics
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
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rounds of all the runs, each round in the reverse order of the one before; print medians.")
def main(recording: Path, task: str, trials: int, epochs: int, counts: str, json_out: Path | None,
         repeat: int) -> None:
    """Time the same search alone and with N workers each running one TensorFlow op at a time (on one thread)."""
    sys.path.insert(0, str(ROOT))
    from host.data.prepare import prepare
    from host.train.config import usable_cores

    cores = usable_cores()  # what `grasptpu tune --workers` divides among its workers
    worker_counts = [int(n) for n in counts.split(",") if n.strip()]
    if not worker_counts or min(worker_counts) < 1:
        raise click.BadParameter(f"{counts!r}: worker counts of 1 or more (the run alone is always made)",
                                 param_hint="--workers")
    prepare(recording)  # the session's cache, so no run pays the cold binning
    print(f"tuning throughput: {recording.name}, {task}, {trials} trials x <= {epochs} epochs, seed 0; "
          f"{cores} CPU cores; each worker one TensorFlow op at a time; wall time from start to written results"
          + (f"; {repeat} rounds" if repeat > 1 else ""))
    rows = []
    plan = [(None, cores)] + [(n, 1) for n in worker_counts]
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(repeat):
            for workers, threads in (plan if round_ % 2 == 0 else plan[::-1]):
                rows.append({"round": round_ + 1,
                             **_tune(recording.resolve(), task, trials, epochs, workers, threads, Path(tmp))})
                _print_row(rows[-1], [r for r in rows if r["round"] == round_ + 1], repeat)
            if round_ % 2:  # its 1-worker run came after the others: their ratios, now
                _print_round_ratios(rows, round_ + 1, worker_counts)
    if repeat > 1:
        _print_summary(rows, plan)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


def _label(workers: int | None) -> str:
    """How a run is named in the output: the search alone, or its number of workers."""
    return "alone (all cores)" if workers is None else f"{workers} worker(s)"


def _print_row(r: dict, this_round: list[dict], repeat: int) -> None:
    """One search's line; its ratio against the round's 1-worker run once that has run."""
    against = ratios(this_round, r["workers"]) if r["workers"] else []
    ratio = f"{against[0]:.2f}x 1 worker" if against else ""
    where = f"round {r['round']}: " if repeat > 1 else ""
    print(f"  {where}{_label(r['workers']):<18} {r['seconds']:7.1f} s  {r['trials']} trials ({r['failed']} failed)  "
          f"{r['trials_per_hour']:6.0f} trials/hour  {ratio}", flush=True)


def ratios(rows: list[dict], workers: int) -> list[float]:
    """Per round, `workers` workers' trials per hour over the same round's 1 worker's."""
    by_round = {(r["round"], r["workers"]): r["trials_per_hour"] for r in rows}
    return [by_round[(n, workers)] / by_round[(n, 1)] for n in sorted({r["round"] for r in rows})
            if (n, workers) in by_round and (n, 1) in by_round]


def _print_round_ratios(rows: list[dict], round_: int, worker_counts: list[int]) -> None:
    """The ratios of a round run in reverse order, whose lines came before its 1-worker run."""
    this_round = [r for r in rows if r["round"] == round_]
    found = [(n, ratios(this_round, n)) for n in worker_counts if n != 1]
    if found and all(r for _, r in found):
        print(f"  round {round_}: " + ", ".join(f"{_label(n)} {r[0]:.2f}x 1 worker" for n, r in found), flush=True)


def _print_summary(rows: list[dict], plan: list[tuple[int | None, int]]) -> None:
    """Per setting the median trials per hour over the rounds, and the median of its per-round ratios."""
    print("\nmedians over the rounds")
    for workers, _ in plan:
        per_hour = statistics.median(r["trials_per_hour"] for r in rows if r["workers"] == workers)
        line = f"  {_label(workers):<18} {per_hour:6.0f} trials/hour"
        against = ratios(rows, workers) if workers and workers != 1 else []
        if against:
            line += (f"  {statistics.median(against):.2f}x 1 worker (the median of the rounds' ratios, "
                     f"{min(against):.2f}x to {max(against):.2f}x)")
        print(line)


if __name__ == "__main__":
    main()
