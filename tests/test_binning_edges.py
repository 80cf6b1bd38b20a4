"""Exact bin edges: spikes, events and whole bins against elephant's BinnedSpikeTrain, the binning
of the method's authors, on the clocks real recordings use (1 kHz, 30 kHz), near t = 0 and late in
a session. A time exactly on an edge belongs to the bin it starts."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from host.data.binning import bin_session, time_to_bin
from host.data.load import Trials
from host.data.recording import Recording

BIN_MS = 40.0


def elephant_counts(times_s: np.ndarray, t_start: float, t_stop: float) -> np.ndarray:
    import neo
    import quantities as pq
    from elephant.conversion import BinnedSpikeTrain
    from elephant.utils import logger

    st = neo.SpikeTrain(times_s * pq.s, t_start=t_start * pq.s, t_stop=t_stop * pq.s)
    # elephant logs each edge correction through its own handler, bound to whichever stderr was
    # current at import (pytest's capture, closed after that test): "Logging error" tracebacks
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return BinnedSpikeTrain(st, bin_size=BIN_MS * pq.ms, t_start=t_start * pq.s,
                                    t_stop=t_stop * pq.s).to_array()[0]
    finally:
        logger.setLevel(level)


def clock_times(rng: np.random.Generator, clock_hz: int, t_start: float, duration_s: float, n: int) -> np.ndarray:
    """`n` sample times on the clock, half of them exactly on a 40 ms edge, as a file stores them."""
    first = round(t_start * clock_hz)
    ticks_per_bin = round(clock_hz * BIN_MS / 1000)
    n_ticks = round(duration_s * clock_hz)
    on_edge = first + ticks_per_bin * rng.integers(0, n_ticks // ticks_per_bin, n // 2)
    anywhere = first + rng.integers(0, n_ticks, n - n // 2)
    return np.sort(np.r_[on_edge, anywhere]) / clock_hz


@pytest.mark.parametrize("clock_hz", [1000, 30000])
@pytest.mark.parametrize("t_start", [0.0, 100.0, 5000.0])
def test_spike_counts_match_elephant(clock_hz, t_start, capsys):
    rng = np.random.default_rng(clock_hz + int(t_start))
    duration = 3.76  # whole bins: 94 (floor in floating point said 93)
    times = clock_times(rng, clock_hz, t_start, duration, 4000)
    want = elephant_counts(times, t_start, t_start + duration)
    n_bins = int(time_to_bin(np.array([duration]), BIN_MS)[0])
    b = time_to_bin(times - t_start, BIN_MS)
    got = np.bincount(b[(b >= 0) & (b < n_bins)], minlength=n_bins)
    assert n_bins == len(want) == 94
    np.testing.assert_array_equal(got, want)
    old = np.floor((times - t_start) / (BIN_MS / 1000)).astype(int)  # the rule before exact edges
    edge = np.isclose(((times - t_start) * 1000) % BIN_MS, 0) | np.isclose(((times - t_start) * 1000) % BIN_MS, BIN_MS)
    with capsys.disabled():
        print(f"\n{clock_hz} Hz clock, t_start {t_start:g} s: old floor rule put {np.mean(old[edge] != b[edge]):.1%} "
              f"of {edge.sum()} edge times ({np.mean(old != b):.2%} of all) in the wrong bin; now 0")


@pytest.mark.parametrize("clock_hz", [1000, 30000])
def test_whole_bins_per_trial_match_elephant(clock_hz):
    rng = np.random.default_rng(7)
    ticks_per_bin = round(clock_hz * BIN_MS / 1000)
    for t_start in (0.0, 100.0, 5000.0):
        for n in rng.integers(20, 200, 30):  # durations of whole bins, and of whole bins plus a tick
            for extra in (0, 1, ticks_per_bin - 1):
                duration = (int(n) * ticks_per_bin + extra) / clock_hz
                t0 = round(t_start * clock_hz) / clock_hz
                t1 = (round(t_start * clock_hz) + int(n) * ticks_per_bin + extra) / clock_hz
                want = len(elephant_counts(np.array([t0]), t0, t1))
                assert time_to_bin(np.array([t1 - t0]), BIN_MS)[0] == want == n, (t_start, duration)


def test_an_event_on_an_edge_lands_in_the_bin_it_starts():
    t_start = 100.0
    onsets = t_start + np.array([1160, 2000, 3760]) / 1000  # 29, 50, 94 bins after the start
    np.testing.assert_array_equal(time_to_bin(onsets - t_start, BIN_MS), [29, 50, 94])


def test_bin_session_puts_edge_spikes_where_elephant_does():
    rng = np.random.default_rng(3)
    t_start, duration, units = 100.0, 3.76, 3
    trains = [clock_times(rng, 30000, t_start, duration, 600) for _ in range(units)]
    rec = Recording.from_trials(
        path="edges", name="edges", n_units=units, unit_counts=[units], train_counts=[np.array([len(t) for t in trains])],
        t_start_s=[np.array([t_start])], t_stop_s=[np.array([t_start + duration])], event_labels=[[]],
        event_times_s=[np.empty(0)], spike_times_s=np.concatenate(trains))
    trials = Trials(index=np.array([0], np.int32), object_id=np.array([41], np.int16), hold_s=np.array([1.16]),
                    reward_s=np.array([2.0]), duration_s=rec.t_stop_s - rec.t_start_s)
    binned = bin_session(rec, trials, BIN_MS)
    want = np.stack([elephant_counts(t, t_start, t_start + duration) for t in trains], axis=1)
    np.testing.assert_array_equal(binned.counts, want)
    assert (binned.hold_bin[0], binned.reward_bin[0]) == (29, 50)
