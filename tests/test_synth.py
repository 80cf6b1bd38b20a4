"""The synthetic sessions must have the real files' structure and be hard in the real ways."""

from __future__ import annotations

import numpy as np
import pytest

from host.data import objects
from host.data import synth
from host.errors import GrasptpuError
from host.data.recording import Recording


@pytest.fixture(scope="module")
def tiny() -> Recording:
    return synth.generate("ZRec50", seed=3, n_units=12, n_trials=60)


@pytest.fixture(scope="module")
def full_table() -> Recording:
    """The full ZRec50 trial table; two units keep it fast."""
    return synth.generate("ZRec50", n_units=2)


@pytest.fixture(scope="module")
def tuned() -> Recording:
    """Enough units and trials to see object tuning in hold-phase counts."""
    return synth.generate("ZRec50", n_units=100)


def _event(rec: Recording, trial: int, label: str) -> float | None:
    labels = rec.event_labels[trial]
    return float(rec.event_times_s[trial][labels.index(label)]) if label in labels else None


def _counts_between(rec: Recording, trial: int, start_s: float, stop_s: float) -> np.ndarray:
    """Spikes per unit of one trial in [start_s, stop_s)."""
    offsets = rec.train_offsets[trial * rec.n_units:(trial + 1) * rec.n_units + 1]
    unit = np.repeat(np.arange(rec.n_units), np.diff(offsets))
    times = rec.spike_times_s[offsets[0]:offsets[-1]]
    inside = (times >= start_s) & (times < stop_s)
    return np.bincount(unit[inside], minlength=rec.n_units)


def _hold_rates(rec: Recording, trials: np.ndarray) -> np.ndarray:
    """Per-unit rate (Hz) over each trial's whole hold phase, shape (trials, units)."""
    rates = []
    for k in trials:
        hold, rew = _event(rec, k, "Hold"), _event(rec, k, "Rew")
        rates.append(_counts_between(rec, k, hold, rew) / (rew - hold))
    return np.array(rates)


def _kept(rec: Recording) -> tuple[np.ndarray, np.ndarray]:
    """Trials the loader keeps (correct, obj < 85, >= 3 per merged class) and their classes."""
    merged = objects.merge_duplicates(rec.object_ids.astype(np.int64))
    ok = (rec.correct == 1) & (rec.object_ids < objects.FIRST_EXCLUDED_ID)
    classes, counts = np.unique(merged[ok], return_counts=True)
    keep = np.flatnonzero(ok & np.isin(merged, classes[counts >= 3]))
    return keep, merged[keep]


# ---------------------------------------------------------------- structure

def test_shapes_and_dtypes(tiny: Recording) -> None:
    assert (tiny.n_trials, tiny.n_units) == (60, 12)
    assert tiny.name == "ZRec50"
    assert tiny.object_ids.dtype in (np.int16, np.int32)
    assert tiny.correct.dtype == np.int8
    assert tiny.spike_times_s.dtype == np.float64
    assert tiny.train_offsets.dtype == np.int64
    assert tiny.train_offsets.shape == (60 * 12 + 1,)
    assert tiny.train_offsets[0] == 0 and tiny.train_offsets[-1] == tiny.spike_times_s.size
    assert np.all(np.diff(tiny.train_offsets) >= 0)
    assert len(tiny.event_labels) == len(tiny.event_times_s) == 60
    assert tiny.t_start_s.shape == tiny.t_stop_s.shape == (60,)


def test_trains_sorted_and_inside_their_trial(tiny: Recording) -> None:
    for k in range(tiny.n_trials):
        for u in range(tiny.n_units):
            train = tiny.train(k, u)
            assert np.all(np.diff(train) >= 0)
            assert np.all(train >= tiny.t_start_s[k]) and np.all(train < tiny.t_stop_s[k])


def test_trials_follow_each_other_in_session_time(tiny: Recording) -> None:
    assert tiny.t_start_s[0] > 0
    assert np.all(tiny.t_start_s[1:] > tiny.t_stop_s[:-1])


def test_events_in_phase_order_from_start_to_end(tiny: Recording) -> None:
    for labels, times, t0, t1 in zip(tiny.event_labels, tiny.event_times_s,
                                     tiny.t_start_s, tiny.t_stop_s):
        assert labels[0] == "Start" and labels[-1] == "End"
        assert times[0] == t0 and times[-1] == t1
        assert len(labels) == len(times) and np.all(np.diff(times) > 0)
        order = [synth.PHASE_LABELS.index(label) for label in labels]
        assert order == sorted(order)


def test_refractory_period(tiny: Recording) -> None:
    times, offsets = tiny.spike_times_s, tiny.train_offsets
    same_train = np.ones(times.size, dtype=bool)
    same_train[offsets[:-1][offsets[:-1] < times.size]] = False  # first spike of every train
    isi = np.diff(times)[same_train[1:]]
    assert isi.size > 1000
    assert isi.min() >= 0.0015


def test_unknown_session_names_the_valid_ones() -> None:
    with pytest.raises(GrasptpuError, match="ZRec50") as info:
        synth.generate("ZRec99")
    assert "\n" not in str(info.value)


def test_bad_sizes_rejected() -> None:
    with pytest.raises(GrasptpuError, match="n_units"):
        synth.generate(n_units=0, n_trials=3)


def test_session_table() -> None:
    assert set(synth.SESSIONS) == {"MRec40", "MRec41", "MRec42", "ZRec32", "ZRec35", "ZRec50"}
    assert (synth.SESSIONS["MRec41"].n_units, synth.SESSIONS["MRec41"].n_trials) == (568, 757)
    assert synth.SESSIONS["ZRec32"].animal == "Z"
    assert synth.DEFAULT_SESSION == "ZRec50"


# ---------------------------------------------------------------- randomness

def test_deterministic(tiny: Recording) -> None:
    again = synth.generate("ZRec50", seed=3, n_units=12, n_trials=60)
    np.testing.assert_array_equal(again.spike_times_s, tiny.spike_times_s)
    np.testing.assert_array_equal(again.train_offsets, tiny.train_offsets)
    np.testing.assert_array_equal(again.object_ids, tiny.object_ids)
    assert again.event_labels == tiny.event_labels


def test_seeds_and_sessions_differ(tiny: Recording) -> None:
    other_seed = synth.generate("ZRec50", seed=4, n_units=12, n_trials=60)
    other_session = synth.generate("ZRec35", seed=3, n_units=12, n_trials=60)
    for other in (other_seed, other_session):
        assert not np.array_equal(other.object_ids, tiny.object_ids)
        assert other.spike_times_s.size != tiny.spike_times_s.size


def test_trial_table_does_not_depend_on_unit_count(full_table: Recording) -> None:
    """So tests (and users) can study the trial table of a full session with few units."""
    three = synth.generate("ZRec50", n_units=3)
    np.testing.assert_array_equal(three.object_ids, full_table.object_ids)
    np.testing.assert_array_equal(three.t_stop_s, full_table.t_stop_s)


# ---------------------------------------------------------------- rates and timing

@pytest.mark.parametrize("session", ["ZRec50", "MRec41"])
def test_median_baseline_rate(session: str) -> None:
    rec = synth.generate(session, n_units=300, n_trials=15)
    rates = [_counts_between(rec, k, _event(rec, k, "Start"), _event(rec, k, "Cue"))
             / (_event(rec, k, "Cue") - _event(rec, k, "Start"))
             for k in range(rec.n_trials) if "Cue" in rec.event_labels[k]]
    assert 5.0 <= np.median(np.mean(rates, axis=0)) <= 10.0


def test_hold_and_trial_durations(full_table: Recording) -> None:
    done = [k for k in range(full_table.n_trials) if "Rew" in full_table.event_labels[k]]
    hold_s = np.array([_event(full_table, k, "Rew") - _event(full_table, k, "Hold") for k in done])
    assert hold_s.min() >= 0.5 and hold_s.max() <= 1.0
    assert hold_s.std() > 0.05  # jittered, not constant
    trial_s = (full_table.t_stop_s - full_table.t_start_s)[done]
    assert 7.0 <= trial_s.mean() <= 9.0


def test_about_ten_rest_windows_per_grasp_window(full_table: Recording) -> None:
    keep, _ = _kept(full_table)
    rest = grasp = 0
    for k in keep:
        n_bins = int((full_table.t_stop_s[k] - full_table.t_start_s[k]) // 0.04)
        hold_bin = int((_event(full_table, k, "Hold") - full_table.t_start_s[k]) // 0.04)
        rew_bin = int((_event(full_table, k, "Rew") - full_table.t_start_s[k]) // 0.04)
        label_bins = np.arange(11, n_bins)
        in_grasp = np.count_nonzero((label_bins >= hold_bin) & (label_bins < rew_bin))
        grasp, rest = grasp + in_grasp, rest + label_bins.size - in_grasp
    assert 8.0 <= rest / grasp <= 12.0


# ---------------------------------------------------------------- trial table

def test_incorrect_and_aborted_trials(full_table: Recording) -> None:
    incorrect = full_table.correct == 0
    assert 0.02 <= incorrect.mean() <= 0.10
    aborted = np.array(["Hold" not in labels for labels in full_table.event_labels])
    assert aborted.any() and np.all(incorrect[aborted])
    length = full_table.t_stop_s - full_table.t_start_s
    assert length[aborted].max() < length[~aborted].min()


def test_special_objects_present_and_correct(full_table: Recording) -> None:
    special = full_table.object_ids >= objects.FIRST_EXCLUDED_ID
    assert 0.01 <= special.mean() <= 0.06
    assert np.all(full_table.correct[special] == 1)


def test_duplicates_and_imbalance(full_table: Recording) -> None:
    ids = full_table.object_ids
    duplicates = np.isin(ids, list(objects.DUPLICATE_IDS))
    assert len(np.unique(ids[duplicates])) >= 4
    assert 0.02 <= duplicates.mean() <= 0.15
    assert set(np.unique(ids)) <= set(objects.all_object_ids()) | set(range(85, 89))
    ok = (full_table.correct == 1) & (ids < objects.FIRST_EXCLUDED_ID)
    _, counts = np.unique(objects.merge_duplicates(ids[ok].astype(np.int64)), return_counts=True)
    assert counts.min() < 3  # some objects are too rare and must be dropped by the loader
    assert counts.max() >= 3 * np.median(counts) / 2


# ---------------------------------------------------------------- object tuning

def _object_means(rec: Recording) -> dict[int, np.ndarray]:
    """Mean hold-rate vector per raw object id (correct trials), centred over objects."""
    trials = np.flatnonzero((rec.correct == 1) & np.array(
        ["Hold" in labels for labels in rec.event_labels]))
    rates = np.sqrt(_hold_rates(rec, trials))
    ids = rec.object_ids[trials]
    means = {int(i): rates[ids == i].mean(axis=0) for i in np.unique(ids) if np.sum(ids == i) >= 3}
    centre = np.mean(list(means.values()), axis=0)
    return {i: m - centre for i, m in means.items()}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_tuning_smooth_in_size(tuned: Recording) -> None:
    """Neighbouring sizes of a shape evoke similar responses; sizes 1 and 6 do not."""
    means = _object_means(tuned)
    near_corr, far_corr, near_dist, far_dist = [], [], [], []
    for turntable in objects.SHAPES:
        ids = [10 * turntable + s for s in range(1, 7)]
        for a in ids[:-1]:
            if a in means and a + 1 in means:
                near_corr.append(_corr(means[a], means[a + 1]))
                near_dist.append(np.linalg.norm(means[a] - means[a + 1]))
        if ids[0] in means and ids[-1] in means:
            far_corr.append(_corr(means[ids[0]], means[ids[-1]]))
            far_dist.append(np.linalg.norm(means[ids[0]] - means[ids[-1]]))
    assert len(near_corr) >= 20 and len(far_corr) >= 3
    assert np.mean(near_corr) > np.mean(far_corr) + 0.12
    assert np.mean(near_dist) < 0.7 * np.mean(far_dist)


def test_duplicates_respond_like_their_canonical_object(tuned: Recording) -> None:
    means = _object_means(tuned)
    pairs = [(d, c) for d, c in objects.DUPLICATE_IDS.items() if d in means and c in means]
    assert len(pairs) >= 2
    same = np.mean([_corr(means[d], means[c]) for d, c in pairs])
    other = np.mean([_corr(means[d], means[o]) for d, _ in pairs for o in means
                     if o // 10 != objects.DUPLICATE_IDS[d] // 10 and o // 10 != 1])
    assert same > other + 0.3


def _ncm_accuracy(rec: Recording, seed: int = 0) -> float:
    """Nearest class mean on sqrt hold rates (per-unit pooled within-class sd), 80/20 split."""
    keep, classes = _kept(rec)
    features = np.sqrt(_hold_rates(rec, keep))
    rng = np.random.default_rng(seed)
    test = np.zeros(keep.size, dtype=bool)
    for c in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == c))
        test[members[:max(1, round(0.2 * members.size))]] = True
    labels = np.unique(classes[~test])
    means = np.array([features[~test][classes[~test] == c].mean(axis=0) for c in labels])
    residual = features[~test] - means[np.searchsorted(labels, classes[~test])]
    scale = residual.std(axis=0) + 1e-3
    distance = ((((features[test][:, None] - means[None]) / scale) ** 2).sum(axis=-1))
    return float(np.mean(labels[distance.argmin(axis=1)] == classes[test]))


def test_object_is_learnable_but_not_trivial(tuned: Recording) -> None:
    accuracy = _ncm_accuracy(tuned)
    chance = 1 / 35
    assert 6 * chance < accuracy < 0.9


def test_difficulty_makes_decoding_harder(tuned: Recording) -> None:
    harder = synth.generate("ZRec50", n_units=100, difficulty=3.0)
    assert _ncm_accuracy(harder) < _ncm_accuracy(tuned) - 0.15


def test_progress_bar_on_a_terminal_only(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import sys

    synth.generate(n_units=2, n_trials=5, progress=True)
    assert "synthetic trials" not in capsys.readouterr().err  # not a terminal: no bar in logs
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    synth.generate(n_units=2, n_trials=5, progress=True)
    assert "synthetic trials" in capsys.readouterr().err
