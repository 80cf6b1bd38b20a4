"""Every metric against a hand-made confusion matrix, the expected figure worked out by hand.

Matrices are rows true, columns predicted, classes in catalogue order (as host.train.metrics expects).
"""

from __future__ import annotations

import numpy as np
import pytest

from host.train import metrics

# Distances from the diagonal are deliberately asymmetric (row 1 errs below, row 0 above) so a
# signed distance, or the transpose, would give a different histogram.
FOUR = np.array([[10, 2, 1, 1],
                 [3, 20, 0, 0],
                 [0, 1, 5, 2],
                 [1, 0, 0, 4]])

# Class 1 has no true windows (predicted once), class 4 never occurs at all.
GAPPY = np.array([[3, 1, 0, 0, 0],
                  [0, 0, 0, 0, 0],
                  [1, 0, 2, 1, 0],
                  [0, 0, 0, 5, 0],
                  [0, 0, 0, 0, 0]])

# The paper's MRec40 grasp-phase matrix: rows true rest / grasp, columns predicted rest / grasp.
MREC40 = np.array([[12824, 173],
                   [25, 1347]])

# Real catalogue ids: 15 (mixed turntable) and 81 (special) have no shape series.
SHAPED_IDS = np.array([15, 21, 22, 23, 31, 32, 81])


def shaped_cm() -> np.ndarray:
    index = {int(c): k for k, c in enumerate(SHAPED_IDS)}
    cm = np.zeros((7, 7), np.int64)
    for true, pred, count in [
        (21, 21, 4),  # shape right, size right
        (21, 22, 3),  # ring 1 -> ring 2: shape right, size wrong
        (21, 31, 2),  # ring 1 -> cube 1: shape wrong, size right
        (23, 32, 1),  # ring 3 -> cube 2: both wrong
        (32, 32, 5),  # both right
        (22, 23, 2),  # ring 2 -> ring 3: shape right, size wrong
        (15, 15, 7),  # true has no shape: left out of both
        (21, 81, 6),  # predicted has no shape: left out of both
        (81, 22, 8),  # true has no shape: left out of both
    ]:
        cm[index[true], index[pred]] = count
    return cm


def test_accuracy_is_the_diagonal_share():
    # diagonal 10 + 20 + 5 + 4 = 39; total 14 + 23 + 8 + 5 = 50
    assert metrics.accuracy(FOUR) == pytest.approx(39 / 50)
    assert metrics.accuracy(np.zeros((3, 3), np.int64)) == 0.0


def test_balanced_accuracy_ignores_classes_without_support():
    # recalls of the rows with support: class 0 3/4, class 2 2/4, class 3 5/5 -> mean 0.75.
    # Counting the empty rows as recall 0 would give (0.75 + 0 + 0.5 + 1 + 0) / 5 = 0.45.
    assert metrics.balanced_accuracy(GAPPY) == pytest.approx((3 / 4 + 2 / 4 + 5 / 5) / 3)
    # FOUR: 10/14, 20/23, 5/8, 4/5
    assert metrics.balanced_accuracy(FOUR) == pytest.approx((10 / 14 + 20 / 23 + 5 / 8 + 4 / 5) / 4)


def test_f1_per_class_and_macro_f1():
    # F1 = 2 tp / (row sum + column sum); rows 4, 0, 4, 5, 0; columns 4, 1, 2, 6, 0
    # class 0: 2*3 / (4 + 4) = 6/8; class 1: 0 / (0 + 1) = 0; class 2: 2*2 / (4 + 2) = 4/6;
    # class 3: 2*5 / (5 + 6) = 10/11; class 4: never true nor predicted -> 0 and left out.
    expected = [6 / 8, 0.0, 4 / 6, 10 / 11, 0.0]
    np.testing.assert_allclose(metrics.f1_per_class(GAPPY), expected)
    # class 1 is predicted once, so it counts (F1 0); class 4 does not: mean over 4 classes
    assert metrics.macro_f1(GAPPY) == pytest.approx((6 / 8 + 0 + 4 / 6 + 10 / 11) / 4)


def test_distance_histogram_counts_absolute_class_distance():
    # d0: 10+20+5+4 = 39
    # d1: (0,1) 2 + (1,0) 3 + (2,1) 1 + (2,3) 2 = 8
    # d2: (0,2) 1 = 1
    # d3: (0,3) 1 + (3,0) 1 = 2
    hist = metrics.distance_histogram(FOUR)
    assert hist.tolist() == [39, 8, 1, 2]
    assert hist.dtype == np.int64
    assert hist.sum() == FOUR.sum()


def test_relaxed_accuracy_tolerance_one_and_two():
    # tolerance 1: (39 + 8) / 50; tolerance 2: (39 + 8 + 1) / 50; 3 covers everything
    assert metrics.relaxed_accuracy(FOUR) == pytest.approx(47 / 50)
    assert metrics.relaxed_accuracy(FOUR, tolerance=1) == pytest.approx(47 / 50)
    assert metrics.relaxed_accuracy(FOUR, tolerance=2) == pytest.approx(48 / 50)
    assert metrics.relaxed_accuracy(FOUR, tolerance=3) == pytest.approx(1.0)
    assert metrics.relaxed_accuracy(FOUR, tolerance=0) == pytest.approx(metrics.accuracy(FOUR))


def test_shape_and_size_accuracy_leave_out_objects_without_a_shape_series():
    cm = shaped_cm()
    # windows where true and predicted both have a shape: 4 + 3 + 2 + 1 + 5 + 2 = 17
    # shape right: 21->21 4, 21->22 3, 32->32 5, 22->23 2 = 14
    # size right:  21->21 4, 21->31 2, 32->32 5 = 11
    assert metrics.grouped_accuracy(cm, SHAPED_IDS, "shape") == pytest.approx(14 / 17)
    assert metrics.grouped_accuracy(cm, SHAPED_IDS, "size") == pytest.approx(11 / 17)
    # plain accuracy keeps every window: diagonal 4 + 5 + 7 = 16 of 17 + 7 + 6 + 8 = 38
    assert metrics.accuracy(cm) == pytest.approx(16 / 38)


def test_grouped_accuracy_is_none_without_shaped_classes():
    cm = np.array([[3, 1], [2, 4]])
    assert metrics.grouped_accuracy(cm, np.array([15, 81]), "shape") is None
    assert metrics.grouped_accuracy(cm, np.array([15, 81]), "size") is None


def test_object_metrics_bundles_the_figures():
    cm = shaped_cm()
    m = metrics.object_metrics(cm, SHAPED_IDS)
    assert m["windows"] == 38 and m["classes"] == 7
    assert m["chance"] == pytest.approx(1 / 7)
    assert m["accuracy"] == pytest.approx(16 / 38)
    assert m["shape_accuracy"] == pytest.approx(14 / 17)
    assert m["size_accuracy"] == pytest.approx(11 / 17)
    assert m["confusion"] == cm.tolist() and m["class_ids"] == SHAPED_IDS.tolist()
    # every value must survive json (the manifest stores them)
    import json
    assert json.loads(json.dumps(m)) == m


def test_detector_metrics_on_the_papers_mrec40_matrix():
    m = metrics.detector_metrics(MREC40)
    # total 12824 + 173 + 25 + 1347 = 14369; right 12824 + 1347 = 14171
    assert m["windows"] == 14369
    assert m["accuracy"] == pytest.approx(14171 / 14369)
    assert m["accuracy"] == pytest.approx(0.98622, abs=1e-5)
    # grasp is positive: tp 1347, fp 173 (rest called grasp), fn 25 (grasp missed)
    assert m["precision"] == pytest.approx(1347 / (1347 + 173))
    assert m["recall"] == pytest.approx(1347 / (1347 + 25))
    assert m["f1"] == pytest.approx(2 * 1347 / (2 * 1347 + 173 + 25))  # 2694 / 2892 = 0.93154
    assert m["false_grasp_rate"] == pytest.approx(173 / (12824 + 173))
    assert m["missed_grasp_rate"] == pytest.approx(25 / (1347 + 25))
    assert m["balanced_accuracy"] == pytest.approx((12824 / 12997 + 1347 / 1372) / 2)


def test_mrec40_macro_f1_lands_in_the_papers_f1_range():
    # The paper quotes detection F1 0.95-0.97; the grasp-class F1 of its own MRec40 matrix is
    # 0.932, the mean over both classes is: rest 25648 / 25846 = 0.99234, grasp 2694 / 2892
    # = 0.93154, mean 0.96194. So the paper's figure is most likely the macro F1.
    assert metrics.macro_f1(MREC40) == pytest.approx((25648 / 25846 + 2694 / 2892) / 2)
    assert 0.95 <= metrics.macro_f1(MREC40) <= 0.97
    assert not 0.95 <= metrics.detector_metrics(MREC40)["f1"] <= 0.97


def test_confusion_matches_a_loop_built_matrix():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 6, 500)
    pred = np.where(rng.random(500) < 0.6, true, rng.integers(0, 6, 500))
    expected = np.zeros((6, 6), np.int64)
    for t, p in zip(true, pred):
        expected[t, p] += 1
    cm = metrics.confusion(true, pred, 6)
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64 and cm.shape == (6, 6)


def test_confusion_keeps_classes_that_never_occur():
    # 2 true 0 -> 0, 1 true 0 -> 2; class 1 and 3 absent but still get a row and a column
    cm = metrics.confusion(np.array([0, 0, 0]), np.array([0, 0, 2]), 4)
    assert cm.tolist() == [[2, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_confusion_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion(np.zeros(5, int), np.zeros(4, int), 3)


@pytest.mark.parametrize("true, pred", [([0, 3], [0, 1]), ([0, 1], [0, 3]), ([0, -1], [0, 1])])
def test_confusion_rejects_labels_outside_the_classes(true, pred):
    # Without the check a predicted label 3 of 3 classes lands silently in the next row's column 0.
    with pytest.raises(ValueError, match="expected 0 .. 2"):
        metrics.confusion(np.array(true), np.array(pred), 3)
