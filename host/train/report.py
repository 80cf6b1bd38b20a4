"""One PNG per trained model, in the paper's figure style.

The object report is the paper's per-session figure: the row-normalised confusion matrix, the
"distance from diagonal" histogram on a log scale (how far off the wrong predictions are, in
catalogue order, where one class away is the same shape one size apart), and the figures beside
them. The detector report is the 2x2 grasp-phase matrix with counts and row percentages; it
prints F1 both for the grasp class and as the mean over both classes, because the paper's
0.95-0.97 matches the mean (its MRec40 matrix gives 0.932 grasp-only, 0.962 mean).
Inputs are the dicts of host.train.metrics (or the same dicts read back from a manifest's json).
matplotlib is imported only here and only when a report is drawn; nothing is shown on screen.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from host.files import atomic_path
from host.train.metrics import macro_f1

MAX_TICK_LABELS = 50  # beyond this, label every k-th class so ids stay readable


def plot_object_report(metrics: dict, title: str, path: Path) -> Path:
    """Confusion matrix, distance histogram and the figures of an object classifier.

    Args:
      metrics: the dict returned by host.train.metrics.object_metrics.
      title: names the model, session and split, e.g. "MRec40 object classifier, test split".
      path: the PNG to write (replaced atomically).
    Returns:
      path.
    """
    fig = _figure(figsize=(13.0, 6.5))
    cm = np.asarray(metrics["confusion"], dtype=float)
    class_ids = [int(c) for c in metrics["class_ids"]]
    n = len(class_ids)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1.0], height_ratios=[1.6, 1.0],
                            left=0.06, right=0.98, top=0.9, bottom=0.1, wspace=0.3, hspace=0.35)

    ax = fig.add_subplot(grid[:, 0])
    image = ax.imshow(_row_normalised(cm), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    step = max(1, math.ceil(n / MAX_TICK_LABELS))
    ticks = np.arange(0, n, step)
    fontsize = float(np.clip(320 / max(len(ticks), 1), 4.5, 9))
    ax.set_xticks(ticks, [class_ids[k] for k in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [class_ids[k] for k in ticks], fontsize=fontsize)
    # Faint lines between turntables: each block is one shape in ascending size.
    for k in range(1, n):
        if class_ids[k] // 10 != class_ids[k - 1] // 10:
            ax.axhline(k - 0.5, color="white", lw=0.4, alpha=0.5)
            ax.axvline(k - 0.5, color="white", lw=0.4, alpha=0.5)
    ax.set_xlabel("predicted object id")
    ax.set_ylabel("true object id")

    hist = np.asarray(metrics["distance_histogram"], dtype=float)
    ax = fig.add_subplot(grid[0, 1])
    colors = ["tab:green" if d == 0 else "tab:olive" if d == 1 else "tab:gray" for d in range(len(hist))]
    ax.bar(np.arange(len(hist)), hist, width=0.85, color=colors)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)  # a single window (10^0) stays visible as a bar
    ax.set_xlim(-0.8, max(len(hist), 2) - 0.2)
    ax.set_xlabel("distance from diagonal (classes)")
    ax.set_ylabel("windows (log)")
    ax.set_title("green: right, olive: one class away (relaxed)", fontsize=9)

    lines = [
        f"accuracy           {_pct(metrics['accuracy'])}",
        f"relaxed accuracy   {_pct(metrics['relaxed_accuracy'])}   (one class away counts)",
        f"balanced accuracy  {_pct(metrics.get('balanced_accuracy'))}",
        f"macro F1           {_num(metrics.get('macro_f1'))}",
        f"shape accuracy     {_pct(metrics.get('shape_accuracy'))}",
        f"size accuracy      {_pct(metrics.get('size_accuracy'))}",
        f"windows            {int(cm.sum())}",
        f"classes            {n}   (chance {_pct(1.0 / max(n, 1))})",
    ]
    _text_panel(fig.add_subplot(grid[1, 1]), lines)
    fig.suptitle(title, fontsize=13)
    return _save(fig, Path(path))


def plot_aperture_report(metrics: dict, traces: list[tuple[np.ndarray, np.ndarray]], title: str, path: Path,
                         bin_ms: float) -> Path:
    """Predicted against true target for a few test trials (one panel each) and the figures.

    Args:
      metrics: the dict of host.train.evaluate.regression_scores.
      traces: per shown trial, (true, predicted) per window in time order (one per bin).
      title: names the model, session and split.
      path: the PNG to write (replaced atomically).
      bin_ms: the bin width, which spaces the windows in time.
    """
    fig = _figure(figsize=(10.0, 2.0 + 1.6 * len(traces)))
    grid = fig.add_gridspec(len(traces), 1, left=0.08, right=0.98, top=0.88, bottom=0.08, hspace=0.35)
    for i, (true, pred) in enumerate(traces):
        ax = fig.add_subplot(grid[i, 0])
        t = np.arange(len(true)) * (bin_ms / 1000.0)
        ax.plot(t, true, color="black", lw=1.2, label="true")
        ax.plot(t, pred, color="tab:orange", lw=1.0, label="BiLSTM")
        ax.set_ylabel(metrics["units"])
        if i == 0:
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        if i == len(traces) - 1:
            ax.set_xlabel("s from the first window's label bin")
    fig.suptitle(f"{title}\nR2 {metrics['r2']:.3f}, r {metrics['pearson_r']:.3f}, RMSE {metrics['rmse']:.2f} "
                 f"{metrics['units']}", fontsize=10)
    return _save(fig, path)


def plot_detector_report(metrics: dict, title: str, path: Path) -> Path:
    """The 2x2 grasp-phase matrix (counts and row percentages) and the detector's figures.

    Args:
      metrics: the dict returned by host.train.metrics.detector_metrics.
      title: names the model, session and split.
      path: the PNG to write (replaced atomically).
    Returns:
      path.
    """
    fig = _figure(figsize=(9.0, 4.2))
    cm = np.asarray(metrics["confusion"], dtype=float)
    share = _row_normalised(cm)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.1], left=0.1, right=0.98, top=0.85,
                            bottom=0.14, wspace=0.15)

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * share[i, j]:.1f} %", ha="center", va="center",
                    fontsize=11, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], ["rest", "grasp"])
    ax.set_yticks([0, 1], ["rest", "grasp"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")

    lines = [
        f"accuracy           {_pct(metrics['accuracy'])}",
        f"F1 (grasp)         {_num(metrics['f1'])}",
        f"F1 (mean of both)  {_num(macro_f1(cm))}",
        f"precision          {_pct(metrics.get('precision'))}",
        f"recall             {_pct(metrics.get('recall'))}",
        f"false grasp rate   {_pct(metrics.get('false_grasp_rate'))}",
        f"missed grasp rate  {_pct(metrics.get('missed_grasp_rate'))}",
        f"balanced accuracy  {_pct(metrics.get('balanced_accuracy'))}",
        f"windows            {int(cm.sum())}",
    ]
    _text_panel(fig.add_subplot(grid[0, 1]), lines)
    fig.suptitle(title, fontsize=12)
    return _save(fig, Path(path))


def _figure(figsize: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # A bare Figure, not pyplot: no global figure registry to leak into when many models are drawn.
    return Figure(figsize=figsize, dpi=110)


def _row_normalised(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)


def _text_panel(ax, lines: list[str]) -> None:
    ax.axis("off")
    ax.text(0.0, 1.0, "\n".join(lines), transform=ax.transAxes, va="top", ha="left",
            family="monospace", fontsize=10, linespacing=1.5)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:5.1f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _save(fig, path: Path) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see half a PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
