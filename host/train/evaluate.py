"""Score a trained decoder on the test split: the figures of the paper, a metrics.json and a PNG.

Only evaluation reads the test windows; training and tuning never see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from host.train import metrics
from host.data.prepare import Prepared


def predict(model, windows, batch_size: int = 2048) -> np.ndarray:
    """Class probabilities of a Keras model for every window of `windows` (a WindowSet or the
    contract's TestSet: anything with `len` and `batch`), in batches (bounded memory)."""
    out = [model.predict_on_batch(windows.batch(slice(lo, lo + batch_size)).astype(np.float32))
           for lo in range(0, len(windows), batch_size)]
    return np.concatenate(out) if out else np.empty((0, model.output_shape[-1]), np.float32)


def evaluate(model, prepared: Prepared, task: str, split: str = "test") -> dict:
    """Metrics of `model` on one split's windows of `task`."""
    windows = prepared.windows(task)[split]
    probs = predict(model, windows)
    if windows.target is not None:
        return {**regression_scores(windows, probs[:, 0], prepared.binned.target_units), "split": split,
                "trials": int(len(np.unique(windows.trial)))}
    pred = probs.argmax(axis=1)
    n_classes = len(windows.label_names)
    cm = metrics.confusion(windows.label, pred, n_classes)
    if task == "object":
        result = metrics.object_metrics(cm, prepared.binned.classes, metrics.has_catalogue(prepared.binned.layout))
    else:
        result = metrics.detector_metrics(cm)
    result["split"] = split
    result["trials"] = int(len(np.unique(windows.trial)))
    return result


def regression_scores(windows, pred: np.ndarray, units: str) -> dict:
    """R2, Pearson r and RMSE overall and per movement phase (rest, reach, hold, release)."""
    from host.data.windows import MOVEMENT_PHASES
    from host.train.continuous import regression_metrics

    result = {**regression_metrics(windows.target, pred), "units": units, "windows": int(len(windows))}
    result["per_phase"] = {name: regression_metrics(windows.target[windows.phase == i], pred[windows.phase == i])
                           for i, name in enumerate(MOVEMENT_PHASES) if (windows.phase == i).sum() > 1}
    return result


TRACE_TRIALS = 4


def write_aperture_report(model, windows, result: dict, title: str, folder: Path, bin_ms: float) -> Path:
    """Predicted against true target for the first TRACE_TRIALS test trials, beside the figures."""
    from host.train import report

    traces = []
    for trial in np.unique(windows.trial)[:TRACE_TRIALS]:  # a few trials: a loop over panels, not windows
        idx = np.flatnonzero(windows.trial == trial)
        traces.append((windows.target[idx], model.predict_on_batch(windows.batch(idx).astype(np.float32))[:, 0]))
    return report.plot_aperture_report(result, traces, title, folder / "report.png", bin_ms)


def write_report(result: dict, task: str, title: str, folder: Path) -> Path:
    """The paper-style PNG beside the model."""
    from host.train import report

    path = folder / "report.png"
    if task == "object":
        return report.plot_object_report(result, title, path)
    return report.plot_detector_report(result, title, path)
