"""Binning, splitting and windowing against plain references and hand-built trials."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.data.binning import bin_session
from host.data.load import select_trials
from host.data.split import split_trials, validation_share
from host.data.windows import grasp_phase_windows, object_windows
from tests.conftest import make_recording


def reference_counts(rec, trials, bin_ms):
    """One spike at a time, the rule written out: floor((t - t_start) / bin), whole bins only."""
    bin_s = bin_ms / 1000.0
    rows = []
    for k in trials.index:
        n_bins = math.floor((rec.t_stop_s[k] - rec.t_start_s[k]) / bin_s)
        grid = np.zeros((n_bins, rec.n_units), int)
        for u in range(rec.n_units):
            for t in rec.train(k, u):
                b = math.floor((t - rec.t_start_s[k]) / bin_s)
                if 0 <= b < n_bins:
                    grid[b, u] += 1
        rows.append(grid)
    return np.concatenate(rows)


@pytest.mark.parametrize("bin_ms,seed", [(40.0, 0), (10.0, 1), (25.0, 2)])
def test_binning_equals_plain_reference(bin_ms, seed, monkeypatch):
    import host.data.binning

    monkeypatch.setattr(host.data.binning, "TRIALS_PER_CHUNK", 4)  # several chunks
    rec = make_recording(n_trials=12, n_units=7, seed=seed, rate_hz=60.0)
    trials = select_trials(rec)
    binned = bin_session(rec, trials, bin_ms)
    np.testing.assert_array_equal(binned.counts, reference_counts(rec, trials, bin_ms))
    assert binned.counts.dtype == np.uint8
    k = 1
    assert binned.hold_bin[k] == math.floor((rec.event_times_s[k][6] - rec.t_start_s[k]) / (bin_ms / 1000))
    assert binned.reward_bin[k] == math.floor((rec.event_times_s[k][7] - rec.t_start_s[k]) / (bin_ms / 1000))


def test_counts_above_255_widen_the_dtype():
    rec = make_recording(n_trials=3, n_units=1, objects=[21, 21, 21])
    burst = np.full(300, rec.t_start_s[0] + 0.01)
    rec.spike_times_s = np.concatenate((burst, rec.spike_times_s))
    rec.train_offsets = rec.train_offsets + np.r_[0, np.full(len(rec.train_offsets) - 1, 300)]
    binned = bin_session(rec, select_trials(rec), 40.0)
    assert binned.counts.dtype == np.uint16 and binned.counts[0, 0] >= 300


def test_split_is_by_whole_trial_and_covers_every_class():
    labels = np.repeat(np.arange(10), [3, 4, 5, 6, 8, 10, 12, 20, 30, 3])
    split = split_trials(labels, seed=7)
    parts = [split.train, split.validation, split.test]
    together = np.concatenate(parts)
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)  # no trial twice
    for part in parts:
        assert set(labels[part]) == set(labels)                                     # every class in each
    assert abs(len(split.test) / len(labels) - 0.2) < 0.05
    assert abs(len(split.validation) / (len(labels) - len(split.test)) - 0.2) < 0.06
    again = split_trials(labels, seed=7)
    np.testing.assert_array_equal(again.test, split.test)
    assert not np.array_equal(split_trials(labels, seed=8).test, split.test)


def test_small_training_shares_raise_the_validation_share():
    assert validation_share(0.8) == 0.2 and validation_share(0.3) == 0.3 and validation_share(0.2) == 0.4
    labels = np.repeat(np.arange(5), 20)
    split = split_trials(labels, train_val_share=0.2, seed=0)
    assert len(split.test) == 80 and len(split.validation) == 10 and len(split.train) == 10
    with pytest.raises(ValueError, match="class 1 has 2 trials"):
        split_trials(np.array([0, 0, 0, 1, 1]))


def hand_built():
    """Two trials with known Hold/Rew bins: trial 0 30 bins hold [15, 20), trial 1 25 bins hold [12, 18)."""
    rec = make_recording(n_trials=6, n_units=3, objects=[21, 21, 21, 22, 22, 22], seed=4)
    rec.t_stop_s = rec.t_start_s + np.array([30, 25, 30, 25, 30, 25]) * 0.04 + 0.01
    for k, (hold, rew) in enumerate([(15, 20), (12, 18)] * 3):
        rec.event_times_s[k] = rec.t_start_s[k] + np.array([0, 1, 2, 3, 4, 5, hold + 0.5, rew + 0.5, 24.9]) * 0.04
    trains = [rec.train(k, u) for k in range(6) for u in range(3)]
    trains = [t[t < rec.t_stop_s[i // 3]] for i, t in enumerate(trains)]
    rec.spike_times_s = np.concatenate(trains)
    rec.train_offsets = np.concatenate(([0], np.cumsum([len(t) for t in trains])))
    return rec


def test_window_labels_match_hand_built_event_bins():
    binned = bin_session(*(lambda r: (r, select_trials(r)))(hand_built()), 40.0)
    assert list(binned.n_bins) == [30, 25] * 3
    g = grasp_phase_windows(binned, np.array([0, 1]))
    # trial 0: label bins 11..29 (19 windows), grasp for 15..19; trial 1: 11..24, grasp 12..17
    expected = np.r_[[1 if 15 <= b < 20 else 0 for b in range(11, 30)], [1 if 12 <= b < 18 else 0 for b in range(11, 25)]]
    np.testing.assert_array_equal(g.label, expected)
    np.testing.assert_array_equal(g.end_row, np.r_[np.arange(11, 30), 30 + np.arange(11, 25)])
    nxt = grasp_phase_windows(binned, np.array([0, 1]), label_bin="next")
    expected_next = np.r_[[1 if 15 <= b + 1 < 20 else 0 for b in range(11, 29)], [1 if 12 <= b + 1 < 18 else 0 for b in range(11, 24)]]
    np.testing.assert_array_equal(nxt.label, expected_next)
    obj = object_windows(binned, np.array([0, 1, 3]))
    np.testing.assert_array_equal(obj.label, [0] * 5 + [0] * 6 + [1] * 6)  # classes: 21 -> 0, 22 -> 1
    np.testing.assert_array_equal(obj.end_row, np.r_[15:20, 30 + np.arange(12, 18), 85 + np.arange(12, 18)])


def test_windows_are_views_and_batches_are_the_right_bins():
    rec = make_recording(n_trials=9, n_units=4, rate_hz=80.0)
    binned = bin_session(rec, select_trials(rec), 40.0)
    g = grasp_phase_windows(binned, np.arange(binned.n_trials))
    assert np.shares_memory(g.all_windows, binned.counts)
    idx = np.array([0, 17, len(g) - 1])
    batch = g.batch(idx)
    assert batch.shape == (3, 12, 4) and batch.dtype == np.uint8
    for row, end in zip(batch, g.end_row[idx]):
        np.testing.assert_array_equal(row, binned.counts[end - 11:end + 1])
    assert g.end_row.dtype == np.int64 and g.label.dtype == np.uint8 and g.trial.dtype == np.int32
    # a window never crosses into the previous trial
    starts = g.end_row - 11
    assert np.all(starts >= binned.trial_offsets[g.trial])
