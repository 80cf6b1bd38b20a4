"""A researcher's own recording: a layout file says what its trials mean (issue: bring your own
recording). The same foreign session (classes named by text in a `grip` annotation, events named
after the experiment's codes, trials kept by an `outcome` text) is read from Neo .mat, .nix and
NWB, prepared and trained to well above chance; a bad layout is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from host.cli import main
from host.data import matfile, objects, synth
from host.data.layout import PAPER, load_layout
from host.data.load import load_recording, select_trials
from host.data.nwbwrite import save_nwb
from host.data.recording import Recording
from host.errors import DataError, GrasptpuError

from tests.conftest import neo_block

LAYOUT = """\
[trials]
class = "grip"
roi = ["GRASP-ON", "REW-ON"]
keep = { outcome = "success" }
min_trials = 4

[units]
min_rate_hz = 0.5
"""
RENAME = {"Hold": "GRASP-ON", "Rew": "REW-ON"}


def foreign(n_trials: int = 300, n_units: int = 24, seed: int = 3) -> Recording:
    """A synthetic session relabelled as another lab would record it: the class is the object's
    shape as text (six classes; mixed and special objects have none), events upper-case codes."""
    rec = synth.generate(n_units=n_units, n_trials=n_trials, difficulty=0.5, seed=seed)
    obj = rec.trial_annotations["obj"]
    rec.trial_annotations = {
        "grip": np.array([objects.shape_of(int(o)) or "" for o in obj], dtype=str),
        "outcome": np.where(rec.trial_annotations["correct"] == 1, "success", "fail"),
        "block_no": np.arange(n_trials, dtype=np.float64) // 50,
    }
    rec.event_labels = [[RENAME.get(label, label.upper()) for label in trial] for trial in rec.event_labels]
    return rec


def write(rec: Recording, folder: Path, fmt: str) -> Path:
    path = folder / f"foreign.{fmt}"
    if fmt == "mat":
        matfile.save_recording(rec, path)
    elif fmt == "nix":
        from neo.io import NixIO

        with NixIO(str(path), mode="ow") as io:
            io.write_block(neo_block(rec, padded_labels=False))
    else:
        save_nwb(rec, path)
    return path


@pytest.fixture(scope="module")
def layout_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("layout") / "grips.toml"
    path.write_text(LAYOUT)
    return path


@pytest.mark.parametrize("fmt", ["mat", "nix", "nwb"])
def test_each_format_reads_the_same_trials_through_the_layout(tmp_path, layout_file, fmt):
    rec = foreign(n_trials=80, n_units=6)
    back = load_recording(write(rec, tmp_path, fmt))
    assert set(back.trial_annotations) >= {"grip", "outcome", "block_no"}
    np.testing.assert_array_equal(back.trial_annotations["grip"], rec.trial_annotations["grip"])
    np.testing.assert_array_equal(back.spike_times_s, rec.spike_times_s)
    layout = load_layout(layout_file)
    want, got = select_trials(rec, "", layout), select_trials(back, "", layout)
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_array_equal(got.object_id, want.object_id)
    np.testing.assert_allclose(got.hold_s, want.hold_s)
    assert got.class_names == want.class_names and set(got.class_names.values()) <= set(objects.SHAPES.values())
    assert got.drops == want.drops and "outcome != 'success'" in got.drops and "no 'grip' value" in got.drops


def test_the_paper_layout_is_the_default_and_a_foreign_file_names_what_it_has(tmp_path):
    path = write(foreign(n_trials=40, n_units=4), tmp_path, "mat")
    with pytest.raises(DataError) as info:
        select_trials(load_recording(path), path, PAPER)
    message = str(info.value)
    assert "\n" not in message and "annotation 'obj'" in message and "annotation 'correct'" in message
    assert "event 'Hold'" in message and "the file has annotations: block_no, grip, outcome" in message
    assert "GRASP-ON (" in message  # event labels with the number of trials that have them


@pytest.mark.parametrize("text,says", [
    ("", "[trials] (and [units], if given) must be tables"),
    ("[trials]\nroi = ['A', 'B']\n", "needs `class`"),
    ("[trials]\nclass = 'g'\nroi = ['A']\n", "roi = ['A'] is not two different event labels"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'A']\n", "is not two different event labels"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\nkeep = 3\n", "keep must be a table"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\nmin_trials = 2\n", "min_trials = 2"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\ncatalogue = 'x'\n", "catalogue = 'x'"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\ncatalogue = 'dpz-objects'\norder = ['a']\n", "either `catalogue` or `order`"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\norder = ['a', 'a']\n", "order lists a class twice"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\nmerge = { a = 1.5 }\n", "merge 1.5 is not a class"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\ncolour = 'x'\n", "unknown keys ['colour']"),
    ("[trials]\nclass = 'g'\nroi = ['A', 'B']\n[units]\nmin_rate_hz = -1\n", "min_rate_hz = -1"),
    ("[trial]\nclass = 'g'\n", "unknown tables ['trial']"),
    ("[trials\n", "not valid TOML"),
])
def test_a_bad_layout_is_one_line_naming_the_key(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GrasptpuError) as info:
        load_layout(path)
    assert says in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)


def test_merge_order_and_drop_act_on_text_classes():
    rec = foreign(n_trials=200, n_units=4)
    layout = load_layout_text("""[trials]\nclass = "grip"\nroi = ["GRASP-ON", "REW-ON"]\n"""
                              """merge = { cube = "sphere" }\norder = ["ring", "sphere", "cylinder"]\ndrop = ["ring"]\n""")
    trials = select_trials(rec, "", layout)
    assert trials.class_names == {1: "sphere", 2: "cylinder"}
    assert trials.merged.get("cube", 0) > 0 and trials.drops["class in the layout's drop list"] > 0
    assert trials.drops["class not in the layout's order"] > 0  # horizontal bar, vertical plate


def load_layout_text(text: str):
    from host.data.layout import from_dict
    import tomllib

    return from_dict(tomllib.loads(text), "test", "test")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mat", "nix", "nwb"])
def test_prepare_and_train_a_foreign_recording_well_above_chance(tmp_path, layout_file, fmt):
    path = write(foreign(), tmp_path, fmt)
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", str(path), "--layout", str(layout_file)])
    assert result.exit_code == 0, result.output
    assert "layout grips: class from 'grip', region of interest GRASP-ON .. REW-ON" in result.output
    result = runner.invoke(main, ["train", str(path), "--task", "object", "--layout", str(layout_file),
                                  "--models-dir", str(tmp_path / "models"), "--name", "foreign-object",
                                  "--epochs", "6", "--hp", "units=16",
                                  "--hp", "dropout=0.2", "--hp", "learning_rate=0.01", "--hp", "bilstm_layers=1",
                                  "--hp", "kernel_regularizer=none", "--hp", "recurrent_regularizer=none"])
    assert result.exit_code == 0, result.output
    assert "preset one-layer (the default" in result.output
    folder = tmp_path / "models" / "foreign-object"
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())["test"]
    assert manifest["data"]["layout"]["class_key"] == "grip" and manifest["data"]["layout"]["name"] == "grips"
    assert set(manifest["data"]["label_names"]) <= set(objects.SHAPES.values())
    assert manifest["data"]["classes"] == list(range(len(manifest["data"]["label_names"])))
    assert metrics["shape_accuracy"] is None and metrics["size_accuracy"] is None  # no catalogue named
    assert metrics["accuracy"] > 2.5 * metrics["chance"], metrics["accuracy"]


def test_inspect_lists_what_a_layout_may_name_and_suggests_one_that_works(tmp_path):
    path = write(foreign(n_trials=120, n_units=5), tmp_path, "nwb")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "120 trials, 5 units" in out and "'GRASP-ON'" in out and "'grip'" in out and "text, 6 values" in out
    assert "'block_no'" in out and "number, 3 values: 0 (50), 1 (50), 2 (20)" in out
    suggestion = out[out.index("[trials]"):]
    layout_path = tmp_path / "suggested.toml"
    layout_path.write_text(suggestion)
    layout = load_layout(layout_path)
    assert (layout.class_key, layout.roi, layout.keep) == ("grip", ("GRASP-ON", "REW-ON"), {"outcome": "success"})
    assert len(select_trials(load_recording(path), path, layout).class_names) == 6


def test_inspect_says_when_a_file_has_the_papers_layout(tmp_path, write_session):
    path = write_session(4, 40, seed=1, difficulty=1.0, folder=tmp_path, name="s.neo.mat")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0 and "has the paper's layout" in result.output, result.output


def one_segment(rec: Recording) -> Recording:
    """`rec` as a lab that records one continuous segment would store it: every unit's spikes in
    one train, the trials marked by their events, the grip as an event at each trial's start."""
    counts = rec.spike_counts()
    trains = [np.concatenate([rec.train(k, u) for k in range(rec.n_trials)]) for u in range(rec.n_units)]
    grips = rec.trial_annotations["grip"]
    labels = [label for k in range(rec.n_trials) for label in rec.event_labels[k] + ([grips[k]] if grips[k] else [])]
    times = np.concatenate([np.r_[rec.event_times_s[k], [rec.t_start_s[k]] if grips[k] else []] for k in range(rec.n_trials)])
    order = np.argsort(times, kind="stable")
    assert counts.sum() == sum(len(t) for t in trains)
    return Recording.from_trials(
        path=Path("one"), name=rec.name, n_units=rec.n_units, unit_counts=[rec.n_units],
        train_counts=[np.array([len(t) for t in trains])], t_start_s=[np.array([rec.t_start_s[0] - 1.0])],
        t_stop_s=[np.array([rec.t_stop_s[-1] + 1.0])], event_labels=[[labels[i] for i in order]],
        event_times_s=[times[order]], spike_times_s=np.concatenate(trains),
        trial_annotations={"site": ["M1"]})


def test_trials_cut_from_one_continuous_segment_are_the_trials(tmp_path):
    rec = foreign(n_trials=90, n_units=5)
    path = tmp_path / "continuous.mat"
    matfile.save_recording(one_segment(rec), path)
    assert load_recording(path).n_trials == 1
    shapes = ", ".join(f'"{s}"' for s in objects.SHAPES.values())
    cut = load_layout_text(f'[trials]\nclass = "event_class"\nroi = ["GRASP-ON", "REW-ON"]\n'
                           f'[segments]\nstart = "START"\nstop = "END"\nclass_events = [{shapes}]\n')
    per_trial = load_layout_text('[trials]\nclass = "grip"\nroi = ["GRASP-ON", "REW-ON"]\n')
    from host.data.prepare import prepare

    a = prepare(path, layout=cut, use_cache=False).binned
    b = prepare(write(rec, tmp_path, "mat"), layout=per_trial, use_cache=False).binned
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.trial_offsets, b.trial_offsets)
    np.testing.assert_array_equal(a.hold_bin, b.hold_bin)
    assert a.class_names == b.class_names
    assert {k.replace("event_class", "grip"): v for k, v in a.drops.items()} == b.drops
    assert a.layout["segments"] == {"start": "START", "stop": "END", "class_events": list(objects.SHAPES.values())}


def test_a_segments_table_naming_no_event_is_one_line(tmp_path):
    path = tmp_path / "continuous.mat"
    matfile.save_recording(one_segment(foreign(n_trials=20, n_units=3)), path)
    layout = load_layout_text('[trials]\nclass = "event_class"\nroi = ["A", "B"]\n[segments]\nstart = "TRIAL"\n')
    from host.data.prepare import prepare

    with pytest.raises(DataError, match="no 'TRIAL' event to start a trial at"):
        prepare(path, layout=layout, use_cache=False)


def test_inspect_suggests_cutting_one_segment_then_shows_the_cut_trials(tmp_path):
    path = tmp_path / "continuous.mat"
    matfile.save_recording(one_segment(foreign(n_trials=30, n_units=3)), path)
    out = CliRunner().invoke(main, ["inspect", str(path)]).output
    assert "1 trials, 3 units" in out and "[segments]" in out and 'start = "START"' in out and "(30 onsets)" in out
    layout = tmp_path / "cut.toml"
    layout.write_text('[segments]\nstart = "START"\nstop = "END"\n[trials]\nclass = "site"\nroi = ["GRASP-ON", "REW-ON"]\n')
    out = CliRunner().invoke(main, ["inspect", str(path), "--layout", str(layout)]).output
    assert "30 trials, 3 units" in out and "'site'" in out and "M1 (30)" in out, out


def test_numeric_classes_in_a_layouts_order_are_coded_by_place_and_pass_the_contract():
    from device.contract import check_manifest

    rec = synth.generate(n_units=4, n_trials=200, seed=2)
    ids, counts = np.unique(rec.object_ids[rec.correct == 1], return_counts=True)
    picked = [int(i) for i in ids[np.argsort(-counts)][:3]][::-1]
    layout = load_layout_text(f'[trials]\nclass = "obj"\nroi = ["Hold", "Rew"]\nkeep = {{ correct = 1 }}\n'
                              f'order = {picked}\n')
    trials = select_trials(rec, "", layout)
    assert trials.class_names == {i: str(c) for i, c in enumerate(picked)}
    assert set(trials.object_id.tolist()) == {0, 1, 2}
    manifest = {"name": "m", "task": "object", "artifacts": {},
                "data": {"window_bins": 12, "n_units": 4, "bin_ms": 40, "session": "s",
                         "label_names": [str(c) for c in picked], "classes": [0, 1, 2]}}
    check_manifest(manifest, "m")
