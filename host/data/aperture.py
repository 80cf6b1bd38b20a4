"""A hand-aperture trajectory (thumb to index tip, mm) for a synthetic grasp trial: what a real
hand makes, as the reach-to-grasp literature describes it (docs/method.md, "Hand aperture"):

- rest: nearly closed and relaxed until the movement starts;
- reach: the hand opens after the go cue, to a peak aperture reached at about two thirds of the
  reach, which grows with the object's size (about 0.8 mm per mm of object, plus a safety margin);
- grasp and hold: it closes onto the object by the hold onset; the final aperture is the object's
  width, set by its size and shape (a plate or a bar is gripped thinner than a sphere of the same
  size rank);
- release: after the reward it opens past the object to let go, then returns to rest.

Segments between these key points follow the minimum-jerk profile (10 s^3 - 15 s^4 + 6 s^5),
the classic smooth shape of human and monkey hand movements. Each trial varies: key times jitter
by tens of ms, amplitudes by a few percent. Everything is vectorised over samples.
"""

from __future__ import annotations

import numpy as np

from host.data import objects

REST_MM = 18.0
SHAPE_WIDTH = {"ring": 0.8, "cube": 1.0, "sphere": 1.1, "cylinder": 1.0, "horizontal bar": 0.6, "vertical plate": 0.5}
DEFAULT_SIZE_RANK = 3  # mixed and special objects: a middle-sized object
PEAK_GAIN, PEAK_MARGIN_MM = 0.8, 25.0
RELEASE_MARGIN_MM = 15.0


def object_width_mm(object_id: int) -> float:
    """The aperture that holds the object: its size rank (1-6) scaled by its shape."""
    size = objects.size_of(object_id) or DEFAULT_SIZE_RANK
    shape = objects.shape_of(object_id)
    return SHAPE_WIDTH.get(shape, 1.0) * (12.0 + 9.0 * size)


def key_points(labels: list[str], onsets: np.ndarray, object_id: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(times s from the trial start, apertures mm) the trajectory passes through, in time order."""
    at = dict(zip(labels, np.asarray(onsets, float)))
    end = float(onsets[-1])
    rest = REST_MM * (1 + 0.05 * rng.standard_normal())
    if "Mov" not in at:  # aborted before moving: the hand stays at rest
        return np.array([0.0, end]), np.array([rest, rest])
    width = object_width_mm(object_id) * (1 + 0.04 * rng.standard_normal())
    peak = (PEAK_GAIN * width + PEAK_MARGIN_MM) * (1 + 0.05 * rng.standard_normal())
    jitter = lambda: 0.03 * rng.standard_normal()  # noqa: E731 - one line per key time below
    t_open = max(at["Mov"] - 0.08 + jitter(), 0.0)
    if "Hold" not in at:  # aborted during the reach: opens, then gives up and relaxes
        t_back = max(end - 0.3, t_open + 0.2)
        return np.array([0.0, t_open, (t_open + t_back) / 2, end]), np.array([rest, rest, peak, rest])
    t_hold = at["Hold"]
    t_peak = t_open + 0.65 * (t_hold - t_open) + jitter()
    t_close = t_hold - 0.02
    t_release = at.get("Rew", t_hold + 0.5) + 0.15 + abs(jitter())
    t_let_go = t_release + 0.25
    t_rest = min(t_let_go + 0.5, end)
    times = np.array([0.0, t_open, t_peak, t_close, t_release, t_let_go, t_rest, max(end, t_rest)])
    values = np.array([rest, rest, peak, width, width - 2.0, width + RELEASE_MARGIN_MM, rest, rest])
    times = np.maximum.accumulate(times)  # jitter never reorders key points
    return times, values


def min_jerk(t: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The piecewise minimum-jerk curve through (times, values) at times t (held flat outside)."""
    t = np.asarray(t, float)
    i = np.clip(np.searchsorted(times, t, "right") - 1, 0, len(times) - 2)
    span = np.maximum(times[i + 1] - times[i], 1e-9)
    s = np.clip((t - times[i]) / span, 0.0, 1.0)
    shape = s ** 3 * (10 - 15 * s + 6 * s ** 2)
    return values[i] + (values[i + 1] - values[i]) * shape


def trajectory(labels: list[str], onsets: np.ndarray, object_id: int, t: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """The trial's aperture (mm) at times `t` (s from the trial start)."""
    times, values = key_points(labels, onsets, object_id, rng)
    return min_jerk(t, times, values)
