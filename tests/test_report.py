"""The per-model PNGs: a valid image of a sensible size, written atomically, from metrics or json."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from host.train import metrics

pytest.importorskip("matplotlib")
from host.train.report import plot_detector_report, plot_object_report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must directly follow the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def object_metrics(class_ids=(15, 21, 22, 23, 31, 32, 81), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(class_ids)
    true = rng.integers(0, n, 400)
    pred = np.where(rng.random(400) < 0.7, true, np.clip(true + rng.integers(-2, 3, 400), 0, n - 1))
    return metrics.object_metrics(metrics.confusion(true, pred, n), np.array(class_ids))


def test_object_report_is_a_png_of_sensible_size(tmp_path):
    path = tmp_path / "object.png"
    assert plot_object_report(object_metrics(), "Tiny object classifier, test split", path) == path
    width, height = png_size(path)
    assert 800 <= width <= 3000 and 400 <= height <= 2000 and width > height
    assert [p.name for p in tmp_path.iterdir()] == ["object.png"]


def test_detector_report_is_a_png_of_sensible_size(tmp_path):
    path = tmp_path / "detector.png"
    m = metrics.detector_metrics(np.array([[12824, 173], [25, 1347]]))
    assert plot_detector_report(m, "MRec40 grasp-phase detector, test split", path) == path
    width, height = png_size(path)
    assert 500 <= width <= 2500 and 250 <= height <= 1500
    assert [p.name for p in tmp_path.iterdir()] == ["detector.png"]


def test_reports_draw_from_metrics_read_back_from_json(tmp_path):
    # The manifest stores metrics as json: lists, not arrays; a class set with no shape series
    # has shape/size accuracy None and must still draw.
    m = json.loads(json.dumps(object_metrics(class_ids=(15, 81, 82))))
    assert m["shape_accuracy"] is None
    plot_object_report(m, "no shaped objects", tmp_path / "o.png")
    d = json.loads(json.dumps(metrics.detector_metrics(np.array([[50, 0], [0, 0]]))))
    plot_detector_report(d, "no grasp windows", tmp_path / "d.png")
    assert png_size(tmp_path / "o.png")[0] > 0 and png_size(tmp_path / "d.png")[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "o.png"]


def test_report_replaces_an_existing_file_and_creates_the_folder(tmp_path):
    path = tmp_path / "models" / "m1" / "report.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")
    plot_object_report(object_metrics(), "again", path)
    png_size(path)
    assert [p.name for p in path.parent.iterdir()] == ["report.png"]
    fresh = tmp_path / "new" / "report.png"
    plot_detector_report(metrics.detector_metrics(np.array([[9, 1], [2, 8]])), "new folder", fresh)
    png_size(fresh)


def test_failed_draw_leaves_no_file_behind(tmp_path, monkeypatch):
    import matplotlib.figure

    def broken_savefig(self, fname, **kw):
        with open(fname, "wb") as fh:
            fh.write(PNG_SIGNATURE)  # half a PNG, then the disk fills up
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_object_report(object_metrics(), "broken", tmp_path / "r.png")
    assert list(tmp_path.iterdir()) == []


def drawn_matrix_ticks(monkeypatch, draw) -> tuple[list[str], list[str]]:
    """The x and y tick labels of the confusion matrix as drawn: read from the figure at savefig
    time (the report never returns its figure), then the real savefig writes the PNG."""
    import matplotlib.figure

    real_savefig = matplotlib.figure.Figure.savefig
    seen = []

    def recording_savefig(self, *args, **kw):
        self.canvas.draw()  # tick label texts are final once drawn
        (ax,) = [a for a in self.axes if a.get_xlabel() == "predicted object id"]
        seen.append(([t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()]))
        return real_savefig(self, *args, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    draw()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("n_turntables, k", [(1, 1), (8, 1), (10, 2), (22, 3)])
def test_many_classes_label_every_kth_id(tmp_path, monkeypatch, n_turntables, k):
    # 6 objects per turntable: 6 and 48 classes get every id; past MAX_TICK_LABELS (50), every
    # k-th id is labelled, k = ceil(n / 50): 60 classes -> every 2nd, 132 -> every 3rd.
    from host.train.report import MAX_TICK_LABELS

    ids = [10 * t + p for t in range(2, 2 + n_turntables) for p in range(1, 7)]
    assert k == max(1, -(-len(ids) // MAX_TICK_LABELS))
    path = tmp_path / "wide.png"
    x, y = drawn_matrix_ticks(monkeypatch, lambda: plot_object_report(object_metrics(class_ids=ids), "many", path))
    expected = [str(c) for c in ids[::k]]
    assert x == expected and y == expected
    assert len(expected) <= MAX_TICK_LABELS
    if k > 1:  # the ids in between are not labelled
        assert not set(x) & {str(c) for i, c in enumerate(ids) if i % k}
    png_size(path)


def test_reports_leave_pyplot_alone(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_object_report(object_metrics(), "x", tmp_path / "o.png")
    plot_detector_report(metrics.detector_metrics(np.array([[9, 1], [2, 8]])), "x", tmp_path / "d.png")
    assert plt.get_fignums() == before
