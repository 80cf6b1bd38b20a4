"""Score a trained decoder on the test split: the figures of the paper, a metrics.json and a PNG.

Only evaluation reads the test windows; training and tuning never see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from host.train import metrics
from host.data.prepare import Prepared
from host.train.fit import predict, windows_for


def evaluate(model, prepared: Prepared, task: str, split: str = "test") -> dict:
    """Metrics of `model` on one split's windows of `task`."""
    windows = windows_for(prepared, task)[split]
    probs = predict(model, windows)
    pred = probs.argmax(axis=1)
    n_classes = len(windows.label_names)
    cm = metrics.confusion(windows.label, pred, n_classes)
    if task == "object":
        result = metrics.object_metrics(cm, prepared.binned.classes)
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


def format_metrics(result: dict, task: str) -> str:
    """One or two lines a person reads at a glance."""
    if task == "object":
        shape = result.get("shape_accuracy")
        size = result.get("size_accuracy")
        extra = ""
        if shape is not None and size is not None:
            extra = f", shape {shape:.1%}, size {size:.1%}"
        return (f"accuracy {result['accuracy']:.1%}, relaxed {result['relaxed_accuracy']:.1%}, "
                f"balanced {result['balanced_accuracy']:.1%}, macro F1 {result['macro_f1']:.3f}{extra} "
                f"({result['windows']} windows, {result['classes']} classes, chance {result['chance']:.1%})")
    (tn, fp), (fn, tp) = result["confusion"]
    return (f"accuracy {result['accuracy']:.2%}, F1 {result['f1']:.3f}, balanced {result['balanced_accuracy']:.1%} "
            f"({result['windows']} windows; rest->rest {tn}, rest->grasp {fp}, grasp->rest {fn}, grasp->grasp {tp})")
