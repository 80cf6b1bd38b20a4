"""Our training against the reference way, on the same session, model and stopping rule.

The authors' reference scripts materialise every window as one float array and call `model.fit`
on it, every window every epoch, with Keras' default (looped) LSTM, one step per call, and
TensorFlow's default threads and graph optimiser. `grasptpu train` gathers each batch in-graph
from the uint8 counts, unrolls the LSTMs over the 12 bins, runs each op on one thread
(host.train.fit.use_threads) without TensorFlow's graph rewrites (host.train.fit.graph_rewrites),
runs 32 steps per call (host.train.model.STEPS_PER_EXECUTION), validates with each bin projected
once (host/train/validate.py), and trains the detector with its default `rest_sample` (each run
prints the value; K > 1 thins the far rest windows per epoch, their loss reweighted).

Each way runs in its own process (so peak RSS is its own: data preparation, arrays, TensorFlow),
seeded alike, with the same early stopping and learning-rate schedule; both are scored on the
session's test split. The split is seed 0's (`grasptpu train`'s default) for every training seed,
so the pairs of one session share their test set; `grasptpu train --seed N` draws the split with
N. With several recordings or seeds (`--seeds 0,1,2`) it ends with ours minus the reference way's
test accuracy and F1, mean and standard error over the (session, seed) pairs.
Usage: python tools/bench_reference.py data/ZRec50.neo.mat [data/ZRec35.neo.mat ...]
       [--tasks object,grasp-phase] [--seeds 0,1,2] [--json FILE]
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import click

from child_run import ROOT, child_json  # tools/, this script's own folder
sys.path.insert(0, str(ROOT))
WAYS = ("ours", "reference")
TASKS = ("object", "grasp-phase")  # the classifiers: both ways stop on validation accuracy
SPLIT_SEED = 0  # grasptpu train's default split


def _reference_fit(hypermodel, model) -> object:
    """The reference way: float32 arrays of every training and validation window, `model.fit`, with
    our early stopping and learning-rate schedule."""
    import numpy as np

    c, train, val = hypermodel.config, hypermodel.sets["train"], hypermodel.sets["validation"]
    x, xv = (w.batch(np.arange(len(w))).astype(np.float32) for w in (train, val))
    return model.fit(x, train.label, batch_size=c.batch_size, epochs=c.epochs, validation_data=(xv, val.label),
                     callbacks=hypermodel.schedule(), shuffle=True, verbose=0)


def run_way(recording: Path, task: str, way: str, seed: int = 0) -> dict:
    """Train one way in this process; its figures and this process's peak RSS."""
    from host.data.prepare import prepare
    from host.train.config import TrainConfig, preset_for
    from host.train.evaluate import evaluate
    from host.train.fit import DecoderHyperModel, graph_rewrites, use_threads
    from host.train.model import build_model, fixed_hp, preset

    name, _ = preset_for(recording.name, "auto", task)
    if way == "reference":  # TensorFlow's own threads (every core per op and side by side) and graph rewrites
        use_threads(0, 0)
        graph_rewrites(True)
    overrides = {"rest_sample": 1} if way == "reference" and task == "grasp-phase" else {}  # every window
    config = TrainConfig(task=task, hyperparameters=preset(name), verbose=0, seed=seed, **overrides)
    prepared = prepare(recording, seed=SPLIT_SEED)  # one split for every training seed: pairs share a test set
    hypermodel = DecoderHyperModel(prepared, config)
    t0 = time.perf_counter()
    if way == "ours":
        hp = fixed_hp(config.hyperparameters)
        history = hypermodel.fit(hp, hypermodel.build(hp))
    else:
        train = hypermodel.sets["train"]
        model = build_model(fixed_hp(config.hyperparameters), train.counts.shape[1], hypermodel.n_classes,
                            train.window_bins, hypermodel.mean, hypermodel.var, lstm="keras-loop",
                            steps_per_execution=1)  # Keras' default: a call per step
        history = _reference_fit(hypermodel, model)
    seconds = time.perf_counter() - t0
    test = evaluate(history.model, prepared, task, "test")
    return {"session": recording.name.split(".")[0], "seed": seed, "way": way, "task": task, "preset": name, "rest_sample": config.rest_sample, "seconds": seconds, "epochs": len(history.history["loss"]),
            "best_epoch": int(hypermodel.early_stopping.best_epoch) + 1, "accuracy": test["accuracy"],
            "f1": test.get("f1"), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(recording: Path, task: str, way: str, seed: int) -> dict:
    return child_json([__file__, str(recording), "--tasks", task, "--way", way, "--seeds", str(seed)])


def _row(r: dict, ratio: str) -> str:
    f1 = "" if r["f1"] is None else f"{r['f1']:.3f}"
    return (f"  {r['session']:<8} {r['seed']:>4} {r['task']:<12} {r['way']:<10} {r['seconds']:8.1f} {r['epochs']:6d}"
            f" {r['best_epoch']:5d} {r['seconds'] / r['epochs']:8.2f} {r['peak_rss_mb']:11.0f} {r['accuracy']:9.2%}"
            f" {f1:>6} {r['rest_sample']:2d}  {ratio}")


def paired_summary(rows: list[dict], task: str) -> list[str]:
    """Per score, ours minus the reference way over the (session, seed) pairs of `task`: mean,
    standard error, range, in percentage points; and the mean of each way. Both ways of a pair
    share the session's split and the seed, not their random streams (initial weights, dropout
    and shuffle are drawn by different code), so a pair's difference holds the seed noise of both."""
    import numpy as np

    pairs = {}
    for r in rows:
        if r["task"] == task:
            pairs.setdefault((r["session"], r["seed"]), {})[r["way"]] = r
    pairs = [p for p in pairs.values() if len(p) == len(WAYS)]
    lines = []
    for score in ("accuracy", "f1"):
        if not pairs or pairs[0]["ours"][score] is None:
            continue
        ours, ref = (np.array([p[w][score] for p in pairs]) * 100 for w in WAYS)
        d = ours - ref
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        lines.append(f"  {task} {score}: ours {ours.mean():.2f}, reference {ref.mean():.2f} (means of {len(d)} runs); "
                     f"ours - reference {d.mean():+.2f} +- {se:.2f} points (mean +- standard error), "
                     f"pairs {d.min():+.2f} to {d.max():+.2f}")
    return lines


@click.command()
@click.argument("recordings", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tasks", default="object,grasp-phase", show_default=True)
@click.option("--seeds", default="0", show_default=True,
              help=f"Comma-separated training seeds; each runs both ways, on seed {SPLIT_SEED}'s split.")
@click.option("--way", type=click.Choice(WAYS), default=None, help="Run one way here and print its JSON (internal).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the rows here.")
def main(recordings: tuple[Path, ...], tasks: str, seeds: str, way: str | None, json_out: Path | None) -> None:
    """Train each task both ways on each recording and seed, each in its own process, and print the
    comparison (with several runs, ours minus the reference way's scores, mean and standard error)."""
    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in TASKS]
    if unknown or not chosen:
        raise click.BadParameter(f"{unknown or tasks!r}: give {' and/or '.join(TASKS)}", param_hint="--tasks")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        seed_list = []
    if not seed_list or len(set(seed_list)) < len(seed_list):
        raise click.BadParameter(f"{seeds!r}: give distinct integers separated by commas", param_hint="--seeds")
    paths = [r.resolve() for r in recordings]
    if len({p.name for p in paths}) < len(paths):
        raise click.BadParameter("two recordings share a file name: give each session once", param_hint="RECORDINGS")
    if way:
        print(json.dumps(run_way(paths[0], chosen[0], way, seed_list[0])))
        return
    print(f"training: ours vs the reference way (float windows + model.fit, every window, looped LSTM); "
          f"{', '.join(r.name for r in recordings)}, default preset, split of seed {SPLIT_SEED} for every training "
          f"seed (training split fits, validation split stops, test split scores); {os.cpu_count()} CPU cores, "
          f"training seeds {', '.join(map(str, seed_list))}")
    print(f"  {'session':<8} {'seed':>4} {'task':<12} {'way':<10} {'train s':>8} {'epochs':>6} {'best':>5} {'s/epoch':>8}"
          f" {'peak RSS MB':>11} {'test acc':>9} {'F1':>6} {'K':>2}  ours vs reference")
    rows = []
    for task in chosen:
        for recording in paths:
            for seed in seed_list:
                pair = {w: _child(recording, task, w, seed) for w in WAYS}
                rows.extend(pair.values())
                for w, r in pair.items():
                    ratio = "" if w == "reference" else (
                        f"{pair['reference']['seconds'] / r['seconds']:.1f}x faster, "
                        f"{pair['reference']['peak_rss_mb'] / r['peak_rss_mb']:.1f}x less memory")
                    print(_row(r, ratio), flush=True)
                if json_out:
                    json_out.write_text(json.dumps(rows, indent=1))
    if len(rows) > len(WAYS) * len(chosen):
        for task in chosen:
            for line in paired_summary(rows, task):
                print(line)


if __name__ == "__main__":
    main()
