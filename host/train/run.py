"""`grasptpu train`: prepare a session, fit a decoder, score it on the test split and write a
self-contained model folder, models/<name>/, all at once.

The folder holds everything the later stages need, so `quantize`, `check-quant` and the board
use only the folder, never the recording again: the Keras model, the test windows (as the test
trials' uint8 counts and each window's end row, the contract's test_set.npz) and a stratified
calibration sample of training windows (calibration.npz). The recording's path and sha256 stay in
the manifest for provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.contract import (CALIBRATION, CALIBRATION_ARRAY, CALIBRATION_LABEL, KERAS_MODEL, MAX_COUNT, METRICS,
                             SUPPORTED_FORMAT, TEST_SET, save_test_set)
from host.data.binning import BinnedSession
from host.data.prepare import Prepared, prepare
from host.data.windows import WindowSet, calibration_indices
from host.errors import GrasptpuError
from host.files import StagedDir, write_json
from host.modelfolder import write_manifest
from host.provenance import environment
from host.train.evaluate import evaluate, write_aperture_report, write_report
from host.train.fit import TrainConfig, TrainResult, config_dict, graph_rewrites, train, use_threads


@dataclass
class Trained:
    """What a training run produced, for the command line to show."""

    folder: Path
    name: str
    task: str
    session: str
    result: TrainResult
    test_metrics: dict
    baseline: dict | None


def test_set_arrays(test: WindowSet, binned: BinnedSession) -> dict[str, np.ndarray]:
    """The test trials' binned counts, compacted, with each window's end row re-pointed into them
    (the contract's TEST_WINDOW_ARRAYS).

    Whole trials (with their Hold and Rew bins) are kept so the streaming replay can run them bin
    by bin; the board rebuilds the windows as zero-copy views.
    """
    trials = np.unique(test.trial)
    starts = binned.trial_offsets[trials]
    rows, new_offsets = trial_rows(binned.trial_offsets, trials)
    pos = np.searchsorted(trials, test.trial)
    end_row = new_offsets[pos] + (test.end_row - starts[pos])
    return {
        "counts": np.ascontiguousarray(binned.counts[rows]).astype(np.uint8),
        "trial_offsets": new_offsets.astype(np.int64),
        "trial_index": binned.trial_index[trials].astype(np.int64),
        "object_id": binned.object_id[trials].astype(np.int64),
        "hold_bin": binned.hold_bin[trials].astype(np.int64),
        "reward_bin": binned.reward_bin[trials].astype(np.int64),
        "end_row": end_row.astype(np.int64),
        "label": test.label.astype(np.int64),
        "window_trial": pos.astype(np.int64),
        **({} if test.target is None else {"target": test.target.astype(np.float32)}),
    }


def trial_rows(trial_offsets: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the count rows of `trials`, stacked in the order given; their offsets in that stack)."""
    starts = trial_offsets[trials]
    lengths = trial_offsets[np.asarray(trials) + 1] - starts
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1]), offsets


def calibration_arrays(windows: WindowSet, size: int, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """The calibration sample (uint8 windows and their labels) and what the manifest says of it."""
    idx = calibration_indices(windows, size, seed)
    per_label = np.bincount(windows.label[idx], minlength=len(windows.label_names))
    info = {"file": CALIBRATION, "source": "training split, stratified by label, plus the busiest window",
            "windows": int(len(idx)), "seed": seed,
            "per_label": {windows.label_names[k]: int(v) for k, v in enumerate(per_label)}}
    if windows.target is not None:
        info["source"] += " and the windows of the smallest and largest training target"
        info["training_target_range"] = [float(windows.target.min()), float(windows.target.max())]
    return {CALIBRATION_ARRAY: windows.batch(idx).astype(np.uint8), CALIBRATION_LABEL: windows.label[idx].astype(np.int64)}, info


def run_training(recording: Path, config: TrainConfig, models_dir: Path, name: str | None = None,
                 data_options: dict | None = None, progress: bool = False) -> Trained:
    """Prepare the session, train, evaluate on the test split and write models/<name>/ atomically.

    Writes: model.keras, config.json, history.json, split.json, metrics.json (test split),
    report.png, test_set.npz, calibration.npz and manifest.json.
    """
    data_options = dict(data_options or {})
    prepared = prepare(recording, progress=progress, **data_options)
    binned = prepared.binned
    if binned.counts.max(initial=0) > MAX_COUNT:
        raise GrasptpuError(f"{recording}: a bin holds more than {MAX_COUNT} spikes; the int8 input of the board's "
                            "model cannot carry it (use a shorter --bin-ms)")
    name = name or f"{binned.session}-{config.task}"
    result = train(prepared, config)
    sets = prepared.windows(config.task)
    test_metrics = evaluate(result.model, prepared, config.task, "test")
    baseline = {"object": _baseline, "aperture": _continuous_baselines}.get(config.task, lambda p: None)(prepared)
    calibration, calibration_info = calibration_arrays(sets["train"], config.calibration_windows, config.seed)
    with StagedDir(models_dir / name) as staged:
        folder = staged.path
        result.model.save(folder / KERAS_MODEL)
        write_json(folder / "config.json", config_dict(config))
        write_json(folder / "history.json", result.history)
        write_json(folder / "split.json", _split_record(prepared))
        write_json(folder / METRICS, {"test": test_metrics, "baseline": baseline})
        title = f"{name}: {config.task} on {binned.session}, test split"
        if config.task == "aperture":
            write_aperture_report(result.model, sets["test"], test_metrics, title, folder, binned.bin_ms)
        else:
            write_report(test_metrics, config.task, title, folder)
        save_test_set(str(folder / TEST_SET), test_set_arrays(sets["test"], binned))
        np.savez_compressed(folder / CALIBRATION, **calibration)
        write_manifest(folder, {
            "format": SUPPORTED_FORMAT, "name": name, "task": config.task,
            "data": _data_record(prepared, config, data_options), "config": config_dict(config),
            "training": {"seconds": result.seconds, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                         "train_windows": result.train_windows, "epoch_windows": result.epoch_windows,
                         "windows_per_second": result.windows_per_second,
                         "tf_threads": dict(zip(("intra_op", "inter_op"), use_threads())),
                         "tf_graph_rewrites": graph_rewrites()},
            "metrics": {"test": _headline(test_metrics)},
            "test_set": {"file": TEST_SET, "windows": len(sets["test"]), "split": "test"},
            "calibration": calibration_info,
            **environment()})
        final = staged.commit()
    return Trained(final, name, config.task, binned.session, result, test_metrics, baseline)


def _data_record(prepared: Prepared, config: TrainConfig, data_options: dict) -> dict:
    """The manifest's `data`: where the windows came from (the recording's sha256 for provenance)."""
    binned, sets = prepared.binned, prepared.windows(config.task)
    return {
        "session": binned.session, "path": binned.source.get("path"), "sha256": binned.source.get("sha256"),
        "bin_ms": binned.bin_ms, "window_bins": sets["train"].window_bins,
        "label_bin": data_options.get("label_bin", "last"), "n_units": binned.n_units,
        "classes": [int(c) for c in binned.classes] if config.task == "object" else [0, 1],
        **({"target": {"name": binned.layout.get("target"), "units": binned.target_units}}
           if config.task == "aperture" else {}),
        "label_names": list(sets["train"].label_names),
        "windows": {k: len(v) for k, v in sets.items()},
        "layout": binned.layout,
        "unit_index": [int(u) for u in binned.unit_index] if binned.unit_index is not None else None,
    }


def _split_record(prepared: Prepared) -> dict:
    split = prepared.split
    return {"seed": split.seed, "train_val_share": split.train_val_share, "validation_share": split.validation_share,
            "trial_index": {k: prepared.binned.trial_index[v].tolist() for k, v in split.as_dict().items()}}


def _baseline(prepared: Prepared) -> dict:
    """Schaffelhofer's naive Bayes on the same session: leave-one-out and on our test split."""
    from host.train.baseline import leave_one_out, split_evaluation

    return {"leave_one_out": leave_one_out(prepared.binned),
            "test_split": split_evaluation(prepared.binned, prepared.split)}


def _continuous_baselines(prepared: Prepared) -> dict:
    """The Wiener and Kalman filters on the same split (Wiener: the same windows; Kalman: every bin
    of the same trials, scored on the test windows' label bins)."""
    from host.train.continuous import fit_kalman, fit_wiener, regression_metrics

    sets, binned = prepared.windows("aperture"), prepared.binned
    wiener = fit_wiener(sets["train"], sets["train"].target, sets["validation"], sets["validation"].target)
    test = sets["test"]
    parts = prepared.target_trials  # the split's trials whose target covers every bin
    (train_rows, train_offsets), (test_rows, test_offsets) = (trial_rows(binned.trial_offsets, parts[k])
                                                              for k in ("train", "test"))
    kalman = fit_kalman(binned.counts[train_rows], binned.target[train_rows], train_offsets)
    decoded = np.empty(len(binned.counts))
    decoded[test_rows] = kalman.predict(binned.counts[test_rows], test_offsets)
    label_row = test.end_row + test.label_shift
    return {"wiener": {**regression_metrics(test.target, wiener.predict(test)),
                       "ridge": wiener.ridge},
            "kalman": regression_metrics(test.target, decoded[label_row])}


def _headline(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) or v is None}
