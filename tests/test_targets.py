"""Continuous targets binned like the counts (host/data/targets.py), against a plain reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from host.data.targets import Signal, bin_signal
from host.errors import DataError


def reference(values: np.ndarray, first_sample_ms: int, rate_hz: int, n_bins: int, bin_ms: int = 40) -> np.ndarray:
    """Per bin, the mean of the samples whose time (exact: milliseconds as fractions) lies in it."""
    sums, counts = np.zeros(n_bins), np.zeros(n_bins)
    for i, v in enumerate(values):
        t_ms = Fraction(first_sample_ms) + Fraction(1000 * i, rate_hz)
        b = int(t_ms // bin_ms)
        if 0 <= b < n_bins:
            sums[b] += v
            counts[b] += 1
    return sums / counts


def one_trial(values, trial_start_s: float, first_sample_ms: int, rate_hz: int) -> Signal:
    return Signal("aperture", "mm", float(rate_hz), np.asarray(values, float), np.array([0, len(values)]),
                  np.array([trial_start_s + first_sample_ms / 1000]))


@pytest.mark.parametrize("rate_hz", [100, 1000, 30000])
@pytest.mark.parametrize("trial_start_s,first_sample_ms", [(0.0, 0), (100.0, 0), (5000.0, 5), (3.2, 13)])
def test_bins_match_a_plain_reference(rate_hz, trial_start_s, first_sample_ms):
    rng = np.random.default_rng(rate_hz)
    n_bins = 25
    values = rng.normal(30, 10, int(rate_hz * (n_bins * 0.04 + 0.1)))
    sig = one_trial(values, trial_start_s, first_sample_ms, rate_hz)
    got = bin_signal(sig, np.array([0]), np.array([trial_start_s]), np.array([n_bins]), 40.0)
    np.testing.assert_allclose(got, reference(values, first_sample_ms, rate_hz, n_bins), rtol=1e-6)


def test_trials_stack_in_the_order_given():
    a, b = np.arange(100.0), 1000 + np.arange(100.0)
    sig = Signal("x", "mm", 100.0, np.r_[a, b], np.array([0, 100, 200]), np.array([10.0, 20.0]))
    got = bin_signal(sig, np.array([1, 0]), np.array([20.0, 10.0]), np.array([3, 2]), 40.0)
    np.testing.assert_allclose(got, [1001.5, 1005.5, 1009.5, 1.5, 5.5])


@pytest.mark.parametrize("damage,says", [
    (lambda v: v[:30], "no finite sample in bin 8 of 25"),              # shorter than its trial (7.5 bins)
    (lambda v: np.where((np.arange(len(v)) >= 40) & (np.arange(len(v)) < 48), np.nan, v), "bin 10 of 25"),
])
def test_a_signal_that_does_not_cover_its_trial_is_one_line(damage, says):
    values = damage(np.arange(110.0))
    sig = one_trial(values, 7.0, 0, 100)
    with pytest.raises(DataError) as info:
        bin_signal(sig, np.array([0]), np.array([7.0]), np.array([25]), 40.0, path="rec.mat")
    assert says in str(info.value) and "trial 0" in str(info.value) and "\n" not in str(info.value)
