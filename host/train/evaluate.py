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


def write_report(result: dict, task: str, title: str, folder: Path) -> Path:
    """The paper-style PNG beside the model."""
    from host.train import report

    path = folder / "report.png"
    if task == "object":
        return report.plot_object_report(result, title, path)
    return report.plot_detector_report(result, title, path)
