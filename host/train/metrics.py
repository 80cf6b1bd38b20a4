"""Decoder metrics from a confusion matrix, as the paper and its predecessors report them.

Everything is computed from the confusion matrix (rows true, columns predicted, classes in
catalogue order), so a hand-made matrix checks every figure. "Relaxed" accuracy counts a
prediction one class away as right: classes are in catalogue order, where neighbours are the
same shape one size apart (a very similar grip). Shape-only and size-only accuracy regroup the
classes by shape (turntable) or size (position) to compare with Fabiani (2021), who reported
those two; objects without a shape series (the mixed and special groups) are left out of them.
"""

from __future__ import annotations

import numpy as np

from host.data import objects


def confusion(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows true class, columns predicted class (int64)."""
    true, pred = np.asarray(true, np.int64), np.asarray(pred, np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"true and pred differ in shape: {true.shape} vs {pred.shape}")
    # An out-of-range label would not fail in bincount: it would land in a neighbouring row.
    for name, labels in (("true", true), ("pred", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} has class indices {labels.min()} .. {labels.max()}, "
                             f"expected 0 .. {n_classes - 1} (n_classes={n_classes})")
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean per-class recall over the classes that occur."""
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur (as true or predicted)."""
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(np.mean(f1_per_class(cm)[present]))


def distance_histogram(cm: np.ndarray) -> np.ndarray:
    """Predictions per |predicted - true| class distance, 0 .. n_classes - 1."""
    n = cm.shape[0]
    dist = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    return np.bincount(dist.reshape(-1), weights=cm.reshape(-1), minlength=n).astype(np.int64)


def relaxed_accuracy(cm: np.ndarray, tolerance: int = 1) -> float:
    """Share of predictions at most `tolerance` classes away from the truth."""
    return float(distance_histogram(cm)[: tolerance + 1].sum() / max(cm.sum(), 1))


def has_catalogue(layout: dict | None) -> bool:
    """Whether a stored layout (a manifest's or a binned session's) names the paper's catalogue;
    folders written before layouts existed are the paper's."""
    return not layout or bool(layout.get("catalogue"))


def grouped_accuracy(cm: np.ndarray, class_ids: np.ndarray, group: str) -> float | None:
    """Accuracy after mapping classes to their shape or size; None if no class has one.

    Only windows whose true and predicted objects both have a shape series count.
    """
    key = objects.shape_of if group == "shape" else objects.size_of
    groups = [key(int(c)) for c in class_ids]
    has = np.array([g is not None for g in groups])
    if not has.any():
        return None
    sub = cm[np.ix_(has, has)]
    labels = np.array([g for g in groups if g is not None], dtype=object)
    same = labels[:, None] == labels[None, :]
    return float(sub[same].sum() / max(sub.sum(), 1))


def object_metrics(cm: np.ndarray, class_ids: np.ndarray, catalogue: bool = True) -> dict:
    """Every figure the object classifier is judged by; shape and size accuracies only when the
    classes are the paper's catalogued objects (`catalogue`: the layout names the catalogue)."""
    n = len(class_ids)
    return {
        "windows": int(cm.sum()),
        "classes": n,
        "chance": 1.0 / n,
        "accuracy": accuracy(cm),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "relaxed_accuracy": relaxed_accuracy(cm),
        "shape_accuracy": grouped_accuracy(cm, class_ids, "shape") if catalogue else None,
        "size_accuracy": grouped_accuracy(cm, class_ids, "size") if catalogue else None,
        "distance_histogram": distance_histogram(cm).tolist(),
        "confusion": cm.tolist(),
        "class_ids": [int(c) for c in class_ids],
    }


def detector_metrics(cm: np.ndarray) -> dict:
    """Grasp-phase detector figures; class 1 (grasp) is the positive class."""
    tn, fp, fn, tp = (int(x) for x in cm.reshape(-1))
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "windows": int(cm.sum()),
        "accuracy": accuracy(cm),
        "balanced_accuracy": balanced_accuracy(cm),
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        # the paper's detector F1 (0.95-0.97) matches the mean over rest and grasp, not grasp alone
        "macro_f1": macro_f1(cm),
        "precision": precision,
        "recall": recall,
        "false_grasp_rate": fp / max(tn + fp, 1),
        "missed_grasp_rate": fn / max(tp + fn, 1),
        "confusion": cm.tolist(),
    }
