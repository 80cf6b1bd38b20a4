"""`grasptpu synth` writes files that plain neo.io reads with the real recordings' structure.

That structure is described in docs/method.md ("Recordings").
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from neo.io import NeoMatlabIO

from host.data import matfile
from host.data import synth
from host.cli import main
from host.data.load import load_recording


def check_structure(path, n_units: int, n_trials: int) -> None:
    block = NeoMatlabIO(str(path)).read_block()
    assert len(block.segments) == n_trials
    raw_labels = set()
    for seg in block.segments:
        assert len(seg.spiketrains) == n_units
        assert set(seg.annotations) == {"obj", "correct"}
        assert seg.annotations["correct"] in (0, 1)
        raw_labels.update(str(x) for x in seg.events[0].labels)
        t0, t1 = seg.spiketrains[0].t_start, seg.spiketrains[0].t_stop
        assert all(st.t_start == t0 and st.t_stop == t1 for st in seg.spiketrains)
        assert seg.events[0].times.min() >= t0 and seg.events[0].times.max() <= t1
    assert {s.strip() for s in raw_labels} >= {"Start", "Hold", "Rew"}
    assert all(s != s.strip() for s in raw_labels if len(s.strip()) < matfile.LABEL_WIDTH)  # padded
    objs = np.array([seg.annotations["obj"] for seg in block.segments])
    assert (objs >= 85).any() and np.isin(objs, [11, 12, 13, 14, 16]).any()
    assert any(seg.annotations["correct"] == 0 for seg in block.segments)


def test_synth_writes_a_session_neo_reads_with_methods_structure(tmp_path):
    spec = synth.SESSIONS["MRec40"]
    result = CliRunner().invoke(main, ["synth", "--session", "MRec40", "--units", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "MRec40.neo.mat"
    check_structure(path, 3, spec.n_trials)


def test_unknown_session_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--session", "MRec99", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "MRec99" in result.output and "ZRec50" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_default_session_end_to_end_fast_reader_equals_neo(tmp_path):
    """The embedded default at full size: synth -> prepare, and the fast reader against neo.io."""
    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / f"{synth.DEFAULT_SESSION}.neo.mat"
    spec = synth.SESSIONS[synth.DEFAULT_SESSION]
    result = runner.invoke(main, ["prepare", str(path), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert f"units {spec.n_units}" in result.output and "classes" in result.output
    fast = load_recording(path)
    block = NeoMatlabIO(str(path)).read_block()
    assert len(block.segments) == spec.n_trials
    for k, seg in enumerate(block.segments):
        times = np.concatenate([st.magnitude for st in seg.spiketrains])
        lo, hi = fast.train_offsets[k * spec.n_units], fast.train_offsets[(k + 1) * spec.n_units]
        np.testing.assert_array_equal(times, fast.spike_times_s[lo:hi])
        assert seg.annotations["obj"] == fast.object_ids[k]
        assert [str(s).strip() for s in seg.events[0].labels] == fast.event_labels[k]
