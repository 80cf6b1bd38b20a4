"""Continuous targets binned like the counts (host/data/targets.py), against a plain reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from host.data.recording import Recording, Signal
from host.data.targets import bin_signal


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


@pytest.mark.parametrize("damage,gap", [
    (lambda v: v[:30], 8),                                                            # shorter than its trial
    (lambda v: np.where((np.arange(len(v)) >= 40) & (np.arange(len(v)) < 48), np.nan, v), 10),  # a NaN stretch
])
def test_bins_the_signal_does_not_cover_are_nan_and_the_trial_incomplete(damage, gap):
    from host.data.targets import complete_trials, first_gap

    sig = one_trial(damage(np.arange(110.0)), 7.0, 0, 100)
    got = bin_signal(sig, np.array([0]), np.array([7.0]), np.array([25]), 40.0)
    assert np.isnan(got[gap]) and np.isfinite(got[:gap]).all()
    assert first_gap(got, np.array([0, 25]), 0) == gap
    whole = bin_signal(one_trial(np.arange(110.0), 7.0, 0, 100), np.array([0]), np.array([7.0]), np.array([25]), 40.0)
    both = np.r_[whole, got]
    np.testing.assert_array_equal(complete_trials(both, np.array([0, 25, 50])), [True, False])


def _damaged_session(tmp_path, damage):
    """A 60-trial synthetic session whose aperture is damaged by `damage(signal)`, written as MAT."""
    from host.data import matfile, synth

    rec = synth.generate(n_units=6, n_trials=60, seed=4)
    damage(rec.signals["aperture"])
    path = tmp_path / "damaged.neo.mat"
    matfile.save_recording(rec, path)
    return path


def test_trials_with_a_gap_in_the_target_are_skipped_by_the_aperture_task_only_and_counted(tmp_path):
    from host.data.prepare import prepare
    from host.render import prepared_summary

    def nan_stretch(sig):  # trials 3 and 7: NaN for 200 ms
        for k in (3, 7):
            a = sig.offsets[k]
            sig.values[a + 50:a + 70] = np.nan

    prepared = prepare(_damaged_session(tmp_path, nan_stretch), use_cache=False)
    kept = prepared.binned.trial_index.tolist()
    skipped = prepared.binned.trial_index[prepared.target_skipped].tolist()
    assert set(skipped) == {3, 7} & set(kept) and skipped
    ape = prepared.windows("aperture")
    assert all(np.isfinite(w.target).all() for w in ape.values())
    aperture_trials = set().union(*(set(prepared.binned.trial_index[np.unique(w.trial)].tolist()) for w in ape.values()))
    grasp_trials = set().union(*(set(prepared.binned.trial_index[np.unique(w.trial)].tolist())
                                 for w in prepared.windows("grasp-phase").values()))
    assert aperture_trials == grasp_trials - set(skipped)  # the classifiers keep those trials
    summary = prepared_summary(prepared)
    line = next(x for x in summary.splitlines() if "skipped by the aperture decoder only" in x)
    assert f"{len(skipped)} of {len(kept)} trials" in line and f"first: trial {min(skipped)}, bin " in line


def test_a_target_whose_unit_changes_between_trials_is_one_line_for_the_aperture_task_only(tmp_path):
    from host.data.prepare import prepare
    from host.errors import GrasptpuError

    from host.data import matfile, synth
    rec = synth.generate(n_units=6, n_trials=60, seed=4)
    path = tmp_path / "mixed.neo.mat"
    matfile.save_recording(rec, path)
    # trial 5's signal in cm, as a file assembled from two exports would have it
    import scipy.io
    mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    seg = mat["block"][0, 0].segments[0, 5][0, 0]
    seg.analogsignals[0, 0][0, 0].signal_units = np.array(["cm"])
    scipy.io.savemat(path, mat, do_compression=False, oned_as="column", long_field_names=True)
    prepared = prepare(path, use_cache=False)
    assert len(prepared.windows("object")["train"]) > 0  # the classifiers do not need the target
    with pytest.raises(GrasptpuError) as info:
        prepared.windows("aperture")
    message = str(info.value)
    assert "changes its unit or sampling rate at the file's trial 5" in message and "mm" in message and "cm" in message
    assert "\n" not in message


@pytest.mark.parametrize("fmt", ["mat", "neo", "nwb"])
def test_the_synthetic_aperture_travels_through_every_format_into_binned_targets(tmp_path, fmt):
    from host.data import matfile, synth
    from host.data.load import load_recording
    from host.data.nwbwrite import save_nwb
    from host.data.prepare import prepare

    rec = synth.generate(n_units=6, n_trials=60, seed=4)
    path = tmp_path / ("s.nwb" if fmt == "nwb" else "s.neo.mat")
    (save_nwb if fmt == "nwb" else matfile.save_recording)(rec, path)
    if fmt == "neo":  # neo.io's own reader, in the child process
        from host.data import isolated

        back = isolated.read(path)
    else:
        back = load_recording(path)
    want, got = rec.signals["aperture"], back.signals["aperture"]
    assert (got.units, got.rate_hz) == ("mm", 100.0)
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_allclose(got.values, want.values)
    np.testing.assert_allclose(got.t_start_s, want.t_start_s)
    binned = prepare(path, use_cache=False).binned
    assert binned.target is not None and len(binned.target) == len(binned.counts) and binned.target_units == "mm"
    k = 0  # the first kept trial: its bins' targets are the means of its samples
    trial = int(binned.trial_index[k])
    n = int(binned.trial_offsets[1])
    samples = want.trial(trial)[: n * 4].reshape(n, 4).mean(axis=1)  # 100 Hz: 4 samples per 40 ms bin
    np.testing.assert_allclose(binned.target[:n], samples, rtol=1e-5)
    hold = binned.target[binned.hold_bin[k] + 1:binned.reward_bin[k]]
    assert hold.std() < 2.0 and abs(hold.mean() - binned.target[0]) > 3  # holding the object, not at rest


def test_a_cut_segment_keeps_its_signal_samples():
    from host.data.cut import Segments, cut_segments

    t = np.arange(0, 1000) / 100  # one 10 s segment, 100 Hz
    sig = Signal("aperture", "mm", 100.0, t * 10, np.array([0, 1000]), np.array([0.0]))
    rec = Recording.from_trials(path="c", name="c", n_units=1, unit_counts=[1], train_counts=[np.array([3])],
                                t_start_s=[np.array([0.0])], t_stop_s=[np.array([10.0])],
                                event_labels=[["GO", "GO", "GO"]], event_times_s=[np.array([1.0, 4.0, 7.0])],
                                spike_times_s=np.array([1.5, 4.5, 7.5]), signals={"aperture": sig})
    cut = cut_segments(rec, Segments("GO"))
    got = cut.signals["aperture"]
    assert cut.n_trials == 3 and np.allclose(got.t_start_s, [1.0, 4.0, 7.0])
    assert np.allclose(got.trial(1), np.arange(400, 700) / 10) and np.allclose(got.trial(2), np.arange(700, 1000) / 10)


@pytest.mark.parametrize("label_bin", ["last", "next"])
def test_aperture_windows_take_the_target_at_their_label_bin(label_bin):
    from host.data import synth
    from host.data.binning import bin_session
    from host.data.load import select_trials
    from host.data.windows import aperture_windows, grasp_phase_windows

    rec = synth.generate(n_units=5, n_trials=40, seed=3)
    trials = select_trials(rec)
    binned = bin_session(rec, trials, 40.0)
    binned.target = bin_signal(rec.signals["aperture"], trials.index, rec.t_start_s[trials.index], binned.n_bins, 40.0)
    kept = np.arange(binned.n_trials)
    w = aperture_windows(binned, kept, 12, label_bin)
    g = grasp_phase_windows(binned, kept, 12, label_bin)
    shift = 0 if label_bin == "last" else 1
    np.testing.assert_array_equal(w.end_row, g.end_row)
    np.testing.assert_array_equal(w.label, g.label)
    np.testing.assert_array_equal(w.target, binned.target[w.end_row + shift])
    assert set(np.unique(w.phase)) == {0, 1, 2, 3} and w.label_shift == shift
    assert (w.phase == 2).sum() == (w.label == 1).sum()  # hold = the grasp-phase detector's grasp windows


def test_asking_for_the_aperture_of_a_recording_without_one_is_one_line(tmp_path):
    from host.data import matfile
    from host.data.prepare import prepare
    from host.errors import GrasptpuError
    from tests.conftest import make_recording

    path = tmp_path / "plain.neo.mat"
    matfile.save_recording(make_recording(n_trials=12, n_units=3, objects=[41] * 6 + [24] * 6), path)
    prepared = prepare(path, use_cache=False)
    with pytest.raises(GrasptpuError, match="no target signal 'aperture'"):
        prepared.windows("aperture")
