"""The data stage end to end: cache hits and misses, the summary, no test trial in training."""

from __future__ import annotations

import os

import numpy as np
from click.testing import CliRunner

from host.data import cache
from host.data import matfile
from host.cli import main
from host.data.prepare import prepare
from tests.conftest import make_recording


def write_tiny(path, seed=0):
    rec = make_recording(n_trials=30, n_units=6, objects=[21, 22, 23, 24, 25] * 6, seed=seed)
    matfile.save_recording(rec, path)
    return rec


def test_second_prepare_is_a_cache_hit_with_the_same_arrays(tmp_path):
    path = tmp_path / "s.neo.mat"
    write_tiny(path)
    cold = prepare(path, cache_dir=tmp_path / "c")
    warm = prepare(path, cache_dir=tmp_path / "c")
    assert not cold.cache_hit and warm.cache_hit
    assert isinstance(warm.binned.counts, np.memmap)
    np.testing.assert_array_equal(np.asarray(warm.binned.counts), cold.binned.counts)
    assert warm.binned.drops == cold.binned.drops and warm.binned.session == cold.binned.session
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(warm.object[name].end_row, cold.object[name].end_row)
        np.testing.assert_array_equal(warm.object[name].label, cold.object[name].label)


def test_changed_file_or_parameters_miss_the_cache(tmp_path):
    path = tmp_path / "s.neo.mat"
    write_tiny(path)
    prepare(path, cache_dir=tmp_path / "c")
    assert not prepare(path, bin_ms=20.0, cache_dir=tmp_path / "c").cache_hit
    write_tiny(path, seed=1)
    os.utime(path, ns=(1, 1))
    changed = prepare(path, cache_dir=tmp_path / "c")
    assert not changed.cache_hit
    assert changed.binned.source["sha256"] == cache.file_sha256(path, tmp_path / "c")


def test_a_damaged_cache_entry_is_rebuilt_not_trusted(tmp_path):
    path = tmp_path / "s.neo.mat"
    write_tiny(path)
    prepare(path, cache_dir=tmp_path / "c")
    entry = next((tmp_path / "c" / "binned").iterdir())
    (entry / "counts.npy").write_bytes(b"garbage")
    again = prepare(path, cache_dir=tmp_path / "c")
    assert not again.cache_hit


def test_no_test_trial_is_in_training_or_validation_windows(tmp_path):
    path = tmp_path / "s.neo.mat"
    write_tiny(path)
    p = prepare(path, cache_dir=tmp_path / "c")
    for task in (p.grasp_phase, p.object):
        test_trials = set(np.unique(task["test"].trial))
        assert test_trials <= set(p.split.test)
        for name in ("train", "validation"):
            assert not test_trials & set(np.unique(task[name].trial))
            rows = set(task[name].end_row)
            test_rows = np.concatenate([np.arange(p.binned.trial_offsets[k], p.binned.trial_offsets[k + 1])
                                        for k in p.split.test])
            assert not rows & set(test_rows)


def test_cli_prepare_summary(tmp_path):
    path = tmp_path / "s.neo.mat"
    write_tiny(path)
    result = CliRunner().invoke(main, ["prepare", str(path), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "units 6" in out and "trials kept 30" in out and "classes 5" in out
    assert "train 20 trials, validation 5 trials, test 5 trials" in out
    assert "grasp-phase windows" in out and "object windows" in out
