"""The synthetic hand-aperture trajectory behaves as a hand does (docs/method.md, "Hand aperture")."""

from __future__ import annotations

import numpy as np
import pytest

from host.data import objects
from host.data.aperture import REST_MM, min_jerk, object_width_mm, trajectory

LABELS = ["Start", "Fix", "Cue", "Mem", "Go", "Mov", "Hold", "Rew", "End"]
ONSETS = np.array([0.0, 0.5, 1.7, 2.5, 3.8, 4.2, 5.0, 5.7, 8.0])


def trace(object_id: int, seed: int = 0, labels=LABELS, onsets=ONSETS) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0.0, onsets[-1], 0.01)
    return t, trajectory(labels, onsets, object_id, t, np.random.default_rng(seed))


def test_rest_reach_hold_release_rest():
    t, a = trace(43)  # sphere, size 3
    at = lambda s: a[np.searchsorted(t, s)]  # noqa: E731
    width = object_width_mm(43)
    assert abs(at(1.0) - REST_MM) < 3 and abs(at(3.9) - at(1.0)) < 1e-9          # at rest until the reach
    reach = (t >= 4.2) & (t <= 5.0)
    peak_t = t[reach][np.argmax(a[reach])]
    assert a[reach].max() > width + 15 and 4.5 < peak_t < 4.9                      # peak at ~2/3 of the reach
    assert abs(at(5.3) - width) < 0.12 * width                                     # holds the object
    assert at(6.2) > at(5.5) + 8                                                   # opens to release
    assert abs(at(7.9) - at(1.0)) < 1e-6                                           # back to rest
    assert np.abs(np.diff(a)).max() < 4.0                                          # smooth: < 4 mm per 10 ms


@pytest.mark.parametrize("shape_turntable", [2, 3, 4, 5, 6, 7])
def test_peak_and_hold_grow_with_size(shape_turntable):
    peaks, holds = [], []
    for size in range(1, 7):
        t, a = trace(10 * shape_turntable + size, seed=size)
        peaks.append(a[(t >= 4.2) & (t <= 5.0)].max())
        holds.append(a[np.searchsorted(t, 5.3)])
    assert all(np.diff(holds) > 0)  # the hold aperture is the object: trial noise is a few percent
    assert np.corrcoef(range(6), peaks)[0, 1] > 0.85 and peaks[-1] > peaks[0] + 10  # the peak too, noisier


def test_shape_sets_the_hold_aperture():
    assert object_width_mm(74) < object_width_mm(34) < object_width_mm(44)  # plate < cube < sphere, size 4
    assert objects.shape_of(74) == "vertical plate"


def test_trials_vary_and_aborted_trials_never_grasp():
    _, a0 = trace(43, seed=0)
    _, a1 = trace(43, seed=1)
    assert np.abs(a0 - a1).max() > 1.0
    t, rest = trace(43, labels=LABELS[:4] + ["End"], onsets=np.array([0, 0.5, 1.7, 2.5, 3.2]))
    assert np.ptp(rest) == 0
    t, gave_up = trace(43, labels=LABELS[:6] + ["End"], onsets=np.array([0, 0.5, 1.7, 2.5, 3.8, 4.2, 5.2]))
    assert gave_up.max() > REST_MM + 20 and abs(gave_up[-1] - gave_up[0]) < 1.0


def test_min_jerk_hits_its_key_points_with_zero_speed():
    times, values = np.array([0.0, 1.0, 3.0]), np.array([0.0, 10.0, 4.0])
    assert np.allclose(min_jerk(times, times, values), values)
    eps = 1e-4
    speed = (min_jerk(times + eps, times, values) - min_jerk(times - eps, times, values)) / (2 * eps)
    assert np.allclose(speed, 0, atol=1e-3)
    assert min_jerk(np.array([0.5]), times, values)[0] == pytest.approx(5.0)
