"""Trial selection, other Neo formats, and every bad input: one clear line, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from neo.io import NeoMatlabIO

from host.data import matfile
from host.cli import main
from host.errors import DataError
from host.data.load import load_recording, select_trials
from tests.conftest import make_recording, neo_block, write_with_neo


def test_selection_drops_and_merges_with_a_reason_for_each():
    objects = [21, 21, 21, 41, 11, 11, 22, 22, 22, 90, 23, 23, 24, 24, 24]
    rec = make_recording(n_trials=len(objects), objects=objects)
    rec.trial_annotations["correct"][2] = 0             # incorrect
    rec.event_labels[7] = [x for x in rec.event_labels[7] if x != "Hold"]  # no Hold
    rec.event_labels[8], rec.event_times_s[8] = [], np.empty(0)             # no events at all
    trials = select_trials(rec)
    assert trials.drops == {
        "incorrect trial (correct != 1)": 1,
        "not a grasp object (obj >= 85)": 1,
        "no events": 1,
        "no 'Hold' or 'Rew' event": 1,
        "class with < 3 kept trials": 5,   # 21 (2 left), 22 (1 left), 23 (2)
    }
    assert trials.dropped_objects == {"21": 2, "22": 1, "23": 2}
    assert trials.merged == {"11": 2}                    # 11 -> 41: 41 now has 3 trials
    np.testing.assert_array_equal(trials.index, [3, 4, 5, 12, 13, 14])
    np.testing.assert_array_equal(trials.object_id, [41, 41, 41, 24, 24, 24])
    np.testing.assert_array_equal(trials.classes, [24, 41])
    k = 3  # hold and reward onsets relative to the trial start
    assert trials.hold_s[0] == rec.event_times_s[k][6] - rec.t_start_s[k]
    assert trials.reward_s[0] == rec.event_times_s[k][7] - rec.t_start_s[k]


def test_a_session_where_every_object_is_rare_is_refused():
    rec = make_recording(n_trials=6, objects=[21, 21, 22, 22, 23, 23])
    with pytest.raises(DataError, match="no usable trial is left.*< 3 kept trials"):
        select_trials(rec, "rare.mat")


@pytest.mark.parametrize("suffix", [".nix", ".pkl"])
def test_other_neo_formats_load_through_neo_io(tmp_path, tiny, suffix):
    import neo.io

    path = tmp_path / f"s{suffix}"
    block = neo_block(tiny)
    if suffix == ".nix":
        with neo.io.NixIO(str(path), mode="ow") as io:
            io.write_block(block)
    else:
        neo.io.PickleIO(str(path)).write_block(block)
    rec = load_recording(path, allow_pickle=suffix == ".pkl")  # a pickle only when the user vouches for it
    np.testing.assert_array_equal(rec.spike_times_s, tiny.spike_times_s)
    np.testing.assert_array_equal(rec.object_ids, tiny.object_ids)
    assert rec.event_labels == tiny.event_labels


class _Payload:
    """What a hostile pickle holds: unpickling it calls os.system, which writes a file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("suffix", [".pkl", ".pickle"])
def test_a_pickle_is_refused_before_it_is_read(tmp_path, suffix):
    """A recording that runs code: refused, and its code never ran (nothing reads it without
    --allow-pickle); with the flag the user vouches for the file and it is unpickled."""
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    result = CliRunner().invoke(main, ["prepare", str(path), "--no-cache"])
    assert result.exit_code == 2 and "refusing to read a Neo pickle" in result.output and "--allow-pickle" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not marker.exists()
    result = CliRunner().invoke(main, ["prepare", str(path), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2 and not marker.exists()
    with pytest.raises(DataError):  # with the flag it is read (and is no Neo block): the user's call
        load_recording(path, allow_pickle=True)
    assert marker.exists()


def test_a_directory_and_an_endless_trial_are_one_line(tmp_path, tiny):
    folder = tmp_path / "session.mat"
    folder.mkdir()
    assert "a directory, not a recording file" in _error(folder)
    rec = tiny
    path = tmp_path / "long.neo.mat"
    rec.t_stop_s[3] = rec.t_start_s[3] + 2e6  # a damaged t_stop: trial 3 "lasts" 2e6 s, 50 M bins
    matfile.save_recording(rec, path)
    result = CliRunner().invoke(main, ["prepare", str(path), "--no-cache"])
    assert result.exit_code == 2 and "trial 3" in result.output and "more than --max-trial-bins 15000" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _error(path) -> str:
    with pytest.raises(DataError) as info:
        load_recording(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_not_a_neo_file(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("these are my notes, not a recording\n" * 10)
    assert "not a MAT v5/v7 file" in _error(path)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert "not a readable Neo file" in _error(other)


def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "absent.neo.mat")


def test_truncated_file(tmp_path, tiny):
    path = write_with_neo(tiny, tmp_path / "full.mat")
    cut = tmp_path / "cut.mat"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "corrupt or truncated" in _error(cut)


def test_corrupt_compressed_file(tmp_path, tiny):
    import scipy.io
    from tests.test_matfile import _neo_like_dicts

    path = tmp_path / "v7.mat"
    scipy.io.savemat(path, {"block": _neo_like_dicts(tiny)}, oned_as="row", do_compression=True)
    raw = bytearray(path.read_bytes())
    raw[400:420] = b"\xff" * 20
    path.write_bytes(bytes(raw))
    assert "corrupt or truncated" in _error(path)


def test_block_with_no_segments(tmp_path):
    import neo

    path = tmp_path / "empty.mat"
    NeoMatlabIO(str(path)).write_block(neo.Block(name="empty"))
    assert "no segments" in _error(path)


def test_zero_units(tmp_path):
    rec = make_recording(n_trials=3, n_units=1)
    block = neo_block(rec)
    for seg in block.segments:
        seg.spiketrains.clear()
    path = tmp_path / "nounits.mat"
    NeoMatlabIO(str(path)).write_block(block)
    assert "zero units" in _error(path)


def test_unit_count_changes_between_trials(tmp_path, tiny):
    block = neo_block(tiny)
    block.segments[3].spiketrains.pop()
    path = tmp_path / "ragged.mat"
    NeoMatlabIO(str(path)).write_block(block)
    message = _error(path)
    assert "trial 3" in message and "4 spike trains where the first trial has 5" in message


def test_spike_outside_its_trial_and_nan_times(tmp_path, tiny):
    outside = make_recording()
    outside.spike_times_s[outside.train_offsets[2 * 5 + 1]] = outside.t_stop_s[2] + 1.0
    path = tmp_path / "outside.mat"
    matfile.save_recording(outside, path)
    message = _error(path)
    assert "trial 2" in message and "unit 1" in message and "outside the trial" in message

    nan = make_recording()
    nan.spike_times_s[nan.train_offsets[4 * 5 + 3]] = np.nan
    path = tmp_path / "nan.mat"
    matfile.save_recording(nan, path)
    message = _error(path)
    assert "trial 4" in message and "NaN spike time in unit 3" in message


def test_missing_annotation(tmp_path, tiny):
    block = neo_block(tiny)
    del block.segments[5].annotations["obj"]
    path = tmp_path / "noobj.mat"
    NeoMatlabIO(str(path)).write_block(block)
    rec = load_recording(path)
    assert np.isnan(rec.trial_annotations["obj"][5]) and not np.isnan(rec.trial_annotations["obj"][:5]).any()
    assert select_trials(rec).drops.get("no 'obj' value") == 1  # a counted skip, as any other unusable trial


def test_cli_prints_one_line_and_exits_non_zero(tmp_path):
    path = tmp_path / "bad.neo.mat"
    path.write_bytes(b"\x00" * 50)
    result = CliRunner().invoke(main, ["prepare", str(path), "--no-cache"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith("grasptpu: error: ") and "too short" in result.output
