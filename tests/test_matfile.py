"""The fast .neo.mat reader and writer agree exactly with neo.io and scipy."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.io
from neo.io import NeoMatlabIO

from host.data import matfile
from host.data.load import load_recording
from tests.conftest import make_recording, neo_block, write_with_neo


def assert_same_recording(a, b) -> None:
    assert a.n_units == b.n_units and a.n_trials == b.n_trials
    np.testing.assert_array_equal(a.train_offsets, b.train_offsets)
    np.testing.assert_array_equal(a.spike_times_s, b.spike_times_s)
    np.testing.assert_array_equal(a.t_start_s, b.t_start_s)
    np.testing.assert_array_equal(a.t_stop_s, b.t_stop_s)
    np.testing.assert_array_equal(a.object_ids, b.object_ids)
    np.testing.assert_array_equal(a.correct, b.correct)
    assert a.event_labels == b.event_labels
    for x, y in zip(a.event_times_s, b.event_times_s):
        np.testing.assert_array_equal(x, y)


def recording_via_neo(path):
    from host.data.neoread import recording_from_block

    return recording_from_block(NeoMatlabIO(str(path)).read_block(), path)


def edge_case_recording():
    """Empty trains, single-spike trains and an empty first train (no template there)."""
    rec = make_recording(n_trials=6, n_units=4, seed=3)
    trains = [rec.train(k, u) for k in range(rec.n_trials) for u in range(rec.n_units)]
    trains[0] = trains[0][:0]          # first train empty: template comes from the next one
    trains[5] = trains[5][:1]          # a single spike (scipy squeezes it to a scalar)
    trains[9] = trains[9][:0]
    counts = np.array([len(t) for t in trains])
    rec.spike_times_s = np.concatenate(trains)
    rec.train_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return rec


@pytest.mark.parametrize("time_unit", ["s", "ms"])
def test_fast_reader_equals_neo_on_files_written_by_plain_neo(tmp_path, time_unit):
    rec = edge_case_recording()
    path = write_with_neo(rec, tmp_path / "plain.mat", time_unit=time_unit)
    fast = matfile.read_recording(path)
    slow = recording_via_neo(path)
    assert_same_recording(fast, slow)
    if time_unit == "s":  # in ms, seconds are recovered to within rounding only
        np.testing.assert_array_equal(fast.spike_times_s, rec.spike_times_s)


def test_neo_reads_our_writer_back_with_the_same_content(tmp_path, tiny):
    path = tmp_path / "ours.mat"
    matfile.save_recording(tiny, path)
    block = NeoMatlabIO(str(path)).read_block()
    assert len(block.segments) == tiny.n_trials
    seg = block.segments[4]
    assert len(seg.spiketrains) == tiny.n_units
    assert seg.annotations == {"obj": int(tiny.object_ids[4]), "correct": 1}
    assert [s.strip() for s in seg.events[0].labels] == tiny.event_labels[4]
    np.testing.assert_array_equal(seg.spiketrains[2].magnitude, tiny.train(4, 2))
    assert float(seg.spiketrains[2].t_start) == tiny.t_start_s[4]
    assert_same_recording(recording_via_neo(path), tiny)


def _neo_like_dicts(rec):
    """The dicts NeoMatlabIO.write_block would hand to savemat, with our neo_id numbering."""
    segments, neo_id = [], 2
    for k in range(rec.n_trials):
        trains = [{
            "neo_id": neo_id + 2 + u, "times": rec.train(k, u), "times_units": "s",
            "t_start": float(rec.t_start_s[k]), "t_start_units": "s",
            "t_stop": float(rec.t_stop_s[k]), "t_stop_units": "s",
            "sampling_rate": 1.0, "sampling_rate_units": "Hz", "annotations": {},
        } for u in range(rec.n_units)]
        event = {"neo_id": neo_id + 1, "times": rec.event_times_s[k], "times_units": "s",
                 "labels": np.array([s.ljust(matfile.LABEL_WIDTH) for s in rec.event_labels[k]]), "annotations": {}}
        segments.append({
            "neo_id": neo_id, "analogsignals": [], "epochs": [], "events": [event],
            "irregularlysampledsignals": [], "spiketrains": trains, "imagesequences": [],
            "name": f"trial {k}", "annotations": {"obj": int(rec.object_ids[k]), "correct": int(rec.correct[k])},
        })
        neo_id += rec.n_units + 2
    return {"neo_id": 1, "segments": segments, "groups": [], "name": rec.name, "annotations": {}}


def test_writer_bytes_equal_scipy_savemat_of_neo_structs(tmp_path):
    rec = edge_case_recording()
    ours = io.BytesIO()
    matfile.write_recording(rec, ours)
    theirs = io.BytesIO()
    scipy.io.savemat(theirs, {"block": _neo_like_dicts(rec)}, oned_as="row")
    assert ours.getvalue()[116:] == theirs.getvalue()[116:]  # the first 116 bytes hold a timestamp


def test_our_field_layout_is_the_one_neo_writes(tmp_path, tiny):
    write_with_neo(tiny, tmp_path / "neo.mat")
    matfile.save_recording(tiny, tmp_path / "ours.mat")

    def layout(path):
        b = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["block"]
        seg = b.segments[0]
        return (b._fieldnames, seg._fieldnames, seg.spiketrains[0]._fieldnames, seg.events._fieldnames)

    assert layout(tmp_path / "neo.mat") == layout(tmp_path / "ours.mat")


def test_compressed_v7_file_reads_the_same(tmp_path):
    rec = edge_case_recording()
    path = tmp_path / "v7.mat"
    scipy.io.savemat(path, {"block": _neo_like_dicts(rec)}, oned_as="row", do_compression=True)
    assert_same_recording(matfile.read_recording(path), recording_via_neo(path))


def test_trains_that_differ_from_the_template_take_the_slow_path(tmp_path, tiny):
    block = neo_block(tiny)
    block.segments[1].spiketrains[3].name = "unit 3"      # an extra field in one train
    block.segments[2].spiketrains[0].description = "odd"  # and in a template train
    path = tmp_path / "mixed.mat"
    NeoMatlabIO(str(path)).write_block(block)
    assert_same_recording(matfile.read_recording(path), tiny)


def test_unknown_layout_falls_back_to_neo_io(tmp_path, tiny, caplog):
    d = _neo_like_dicts(tiny)
    fields = list(d["segments"][0])
    arr = np.empty((1, len(d["segments"])), dtype=[(f, object) for f in fields])
    for i, seg in enumerate(d["segments"]):
        for f in fields:
            arr[0, i][f] = seg[f]
    d["segments"] = arr  # a 1 x n struct array instead of neo's cell of structs
    path = tmp_path / "structarray.mat"
    scipy.io.savemat(path, {"block": d}, oned_as="row")
    with pytest.raises(matfile.UnknownLayout):
        matfile.read_recording(path)
    assert_same_recording(load_recording(path), tiny)
    assert "neo.io.NeoMatlabIO" in caplog.text
