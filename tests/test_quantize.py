"""Quantisation, the float-vs-int8 gate, the Edge TPU check and the compile step, on tiny trained models.

Everything real: Keras training, the TFLite converter, the TFLite interpreter and the flatbuffer
schema. Only `edgetpu_compiler` cannot run here; its absence and its failure are tested, and its
success path is driven by a stand-in script that prints the compiler's documented output.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from host.quantize import edgetpu_check
from host.cli import main
from host.quantize.compile import parse_log, parse_report, summarise
from host.modelfolder import sha256_of
from device.contract import CALIBRATION, INT8_MODEL, MANIFEST, TEST_SET
from host.data.windows import calibration_indices
from host.data.windows import WindowSet
from tests.conftest import int8_tflite

@pytest.fixture(scope="module")
def trained(quantised):
    """The session's grasp-phase detector, trained and quantised once (conftest)."""
    data, detector, _, output = quantised
    return data, detector, output


def copy_of(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def test_quantize_writes_a_complete_int8_model(trained):
    from ai_edge_litert.interpreter import Interpreter

    data, folder, output = trained
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, digest in manifest["artifacts"].items():
        assert sha256_of(folder / name) == digest
    assert {"model_float.tflite", INT8_MODEL, TEST_SET} <= set(manifest["artifacts"])
    it = Interpreter(model_path=str(folder / INT8_MODEL))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert list(inp["shape"]) == [1, 12, 20] and inp["dtype"] == np.int8 and out["dtype"] == np.int8
    io = manifest["tflite"]["int8"]
    assert io["input"]["scale"] == pytest.approx(inp["quantization"][0]) and io["output"]["shape"] == [1, 2]
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert not ops & {"DEQUANTIZE", "UNPACK"} and "FULLY_CONNECTED" in ops
    assert manifest["labels"] == [{"index": 0, "name": "rest"}, {"index": 1, "name": "grasp"}]
    assert manifest["edgetpu_check"]["mapped_share"] == 1.0 and manifest["edgetpu_check"]["first_unmapped"] is None
    assert manifest["tflite"]["export_max_abs_diff"] < 1e-4
    assert "int8 TFLite" in output and "(100%)" in output


def test_test_set_rebuilds_the_test_windows_with_the_host_outputs(trained):
    from host.data.prepare import prepare

    data, folder, _ = trained
    manifest = json.loads((folder / "manifest.json").read_text())
    split = json.loads((folder / "split.json").read_text())
    prepared = prepare(data, train_val_share=split["train_val_share"], val_share=split["validation_share"])
    test = prepared.grasp_phase["test"]
    with np.load(folder / TEST_SET) as npz:
        stored = WindowSet(npz["counts"], npz["end_row"], npz["label"], npz["window_trial"], "grasp-phase",
                           ("rest", "grasp"))
        assert npz["trial_index"].tolist() == split["trial_index"]["test"] == sorted(split["trial_index"]["test"])
        assert npz["int8_output"].dtype == np.int8 and npz["keras_probs"].shape == (len(test), 2)
        assert np.array_equal(npz["label"], test.label)
        hold = npz["hold_bin"]
    assert np.array_equal(stored.batch(slice(None)), test.batch(slice(None)))
    assert manifest["test_set"]["windows"] == len(test) and len(hold) == manifest["test_set"]["trials"]


def test_the_gate_passes_a_good_int8_model(trained):
    _, folder, _ = trained
    result = CliRunner().invoke(main, ["check-quant", str(folder)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "Keras float" in result.output and "float TFLite" in result.output


def test_the_gate_fails_a_wrongly_calibrated_int8_model(trained, tmp_path):
    _, folder, _ = trained
    broken = copy_of(folder, tmp_path)
    with np.load(folder / TEST_SET) as npz:  # calibrate on near-silent windows: every range far too narrow
        counts = npz["counts"]
    rep = np.stack([counts[i:i + 12] for i in range(0, 600, 6)]).astype(np.float32) * 0.02
    np.save(tmp_path / "rep.npy", rep)
    result = CliRunner().invoke(main, ["quantize", str(broken), "--representative", str(tmp_path / "rep.npy")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["check-quant", str(broken)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "int8 regression" in result.output


def test_a_tampered_int8_file_is_refused_by_the_gate(trained, tmp_path):
    _, folder, _ = trained
    tampered = copy_of(folder, tmp_path)
    with open(tampered / INT8_MODEL, "r+b") as fh:
        fh.seek(-100, os.SEEK_END)
        fh.write(b"\x00" * 8)
    result = CliRunner().invoke(main, ["check-quant", str(tampered)])
    assert result.exit_code == 2 and "sha256 differs" in result.output


def test_bad_input_is_one_line_and_leaves_the_folder_as_it_was(trained, tmp_path):
    _, folder, _ = trained
    work = copy_of(folder, tmp_path)
    before = {p.name: sha256_of(p) for p in work.iterdir()}
    np.save(tmp_path / "wrong.npy", np.zeros((5, 12, 7), np.float32))
    runner = CliRunner()
    result = runner.invoke(main, ["quantize", str(work), "--representative", str(tmp_path / "wrong.npy")])
    assert result.exit_code == 2 and "expected (n, 12, 20)" in result.output
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    result = runner.invoke(main, ["quantize", str(work), "--representative", str(tmp_path / "junk.npy")])
    assert result.exit_code == 2 and "not a readable .npy" in result.output
    assert {p.name: sha256_of(p) for p in work.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{work.name}.")]  # no staged leftovers
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["quantize", str(empty)])
    assert result.exit_code == 2 and "not a model folder" in result.output
    result = runner.invoke(main, ["check-quant", str(empty)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_quantize_needs_only_the_model_folder(trained, tmp_path):
    """The folder is self-contained: with the recording's recorded path pointing nowhere, quantize
    still works and gives the very same int8 model (same calibration windows, same bytes)."""
    _, folder, _ = trained
    moved = copy_of(folder, tmp_path)
    manifest = json.loads((moved / MANIFEST).read_text())
    manifest["data"]["path"] = str(tmp_path / "gone" / "recording.neo.mat")
    (moved / MANIFEST).write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["quantize", str(moved), "--representative-size", "300"])
    assert result.exit_code == 0, result.output
    assert (moved / INT8_MODEL).read_bytes() == (folder / INT8_MODEL).read_bytes()
    with np.load(moved / TEST_SET) as a, np.load(folder / TEST_SET) as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_a_changed_calibration_file_is_refused(trained, tmp_path):
    _, folder, _ = trained
    work = copy_of(folder, tmp_path)
    with np.load(work / CALIBRATION) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["windows"][0, 0, 0] ^= 1
    np.savez_compressed(work / CALIBRATION, **arrays)
    result = CliRunner().invoke(main, ["quantize", str(work)])
    assert result.exit_code == 2 and "calibration.npz: changed since it was written" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_representative_windows_are_shared_equally_across_labels():
    labels = np.r_[np.zeros(900, np.uint8), np.ones(90, np.uint8), np.full(10, 2, np.uint8)]
    counts = np.random.default_rng(0).poisson(1.0, (1011, 3)).astype(np.uint8)
    counts[500, 1] = 40  # the busiest bin: its window must be in
    ws = WindowSet(counts, np.arange(11, 1011), labels, np.zeros(1000, np.int32), "object", ("a", "b", "c"))
    idx = calibration_indices(ws, 300, seed=1)
    per_label = np.bincount(labels[idx], minlength=3)
    assert per_label[2] == 10 and per_label[1] == 90 and 200 <= per_label[0] <= 201
    assert any(ws.end_row[i] - 11 <= 500 <= ws.end_row[i] for i in idx)
    assert np.array_equal(idx, calibration_indices(ws, 300, seed=1))


# --- Edge TPU compatibility ---------------------------------------------------------------------

def _int8_tflite(build, path: Path, n: int = 9) -> Path:
    import keras

    inp = keras.Input((12, n), batch_size=1)
    path.write_bytes(int8_tflite(keras.Model(inp, build(inp)), rate=1.0, samples=20))
    return path


def test_the_checker_flags_an_op_the_edge_tpu_lacks(tmp_path):
    import keras

    def build(x):  # reshape -> ABS (not on the list) -> dense: the cut comes at ABS
        h = keras.layers.Dense(8, activation="relu")(keras.layers.Reshape((108,))(x))
        return keras.layers.Dense(3, activation="softmax")(keras.ops.abs(h - 0.5))

    path = _int8_tflite(build, tmp_path / "abs.tflite")
    report = edgetpu_check.check_model(path)
    first = report.first_unmapped
    assert first is not None and first.op == "ABS" and "not on the Edge TPU's operation list" in first.problems[0]
    assert 0 < report.mapped_share < 1 and report.mapped == first.index
    result = CliRunner().invoke(main, ["edgetpu-check", str(path), "--per-op"])
    assert result.exit_code == 1
    assert "first op that stops the mapping" in result.output and "ABS" in result.output
    assert "runs on the CPU" in result.output


def test_the_checker_flags_float_tensors_and_a_batch_other_than_one(tmp_path):
    import keras
    import tensorflow as tf

    inp = keras.Input((12, 9), batch_size=4)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Reshape((108,))(inp)))
    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    report = edgetpu_check.check_model(path)
    assert any("batch size 4" in p for p in report.model_problems)
    assert report.mapped == 0 and any("FLOAT32" in p for op in report.ops for p in op.problems)


def test_the_checker_refuses_a_file_that_is_not_tflite(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"PK\x03\x04 definitely a zip")
    result = CliRunner().invoke(main, ["edgetpu-check", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"grasptpu: error: {path}: not a TFLite model (no TFL3 identifier); give a .tflite file"


# --- edgetpu_compiler ---------------------------------------------------------------------------

# The compiler's summary (stdout) and operation log, in the format Coral documents on
# coral.ai/docs/edgetpu/compiler ("Edge TPU Compiler" page: the compile report and the
# `<model>_edgetpu.log` "Operator / Count / Status" table it writes beside the model).
REPORT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 812 ms.

Input model: model_int8.tflite
Input size: 190.52KiB
Output model: model_int8_edgetpu.tflite
Output size: 402.13KiB
On-chip memory used for caching model parameters: 281.25KiB
On-chip memory remaining for caching model parameters: 7.60MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 356
Operation log: model_int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 354
Number of operations that will run on CPU: 2
See the operation log file for individual operation details.
Compilation child process completed within timeout period.
Compilation succeeded!
"""
LOG = """Edge TPU Compiler version 16.0.384591198
Input: model_int8.tflite
Output: model_int8_edgetpu.tflite

Operator                       Count      Status

FULLY_CONNECTED                47         Mapped to Edge TPU
LOGISTIC                       70         Mapped to Edge TPU
SOFTMAX                        1          More than one subgraph is not supported
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
MUL                            235        Mapped to Edge TPU
"""


def test_the_compiler_report_and_log_parse():
    report = parse_report(REPORT)
    assert report["compiler_version"] == "16.0.384591198"
    assert report["on_chip_used_bytes"] == int(281.25 * 1024) and report["off_chip_used_bytes"] == 0
    assert report["on_chip_remaining_bytes"] == int(7.60 * 2**20) and report["edgetpu_subgraphs"] == 1
    assert report["ops_on_edgetpu"] == 354 and report["ops_on_cpu"] == 2 and report["total_ops"] == 356
    rows = parse_log(LOG)
    assert [r["count"] for r in rows] == [47, 70, 1, 1, 235]
    summary = summarise({}, rows)
    assert summary["ops_on_edgetpu"] == 352 and summary["ops_on_cpu"] == 2
    assert [r["op"] for r in summary["not_mapped"]] == ["SOFTMAX", "QUANTIZE"]


def _path_with(tmp_path: Path, script: str | None) -> str:
    """A PATH holding only python's folder and, if given, a stand-in `edgetpu_compiler` script."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if script is not None:
        exe = bindir / "edgetpu_compiler"
        exe.write_text(script)
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return os.pathsep.join([str(bindir), "/usr/bin", "/bin"])


def test_compile_without_the_compiler_says_so_and_changes_nothing(trained, tmp_path, monkeypatch):
    _, folder, _ = trained
    work = copy_of(folder, tmp_path)
    before = {p.name: sha256_of(p) for p in work.iterdir()}
    monkeypatch.setenv("PATH", _path_with(tmp_path, None))
    result = CliRunner().invoke(main, ["compile", str(work)])
    assert result.exit_code == 3
    assert "edgetpu_compiler is not on PATH" in result.output and "coral-edgetpu-stable" in result.output
    assert {p.name: sha256_of(p) for p in work.iterdir()} == before


def test_a_failing_compiler_is_one_line_and_changes_nothing(trained, tmp_path, monkeypatch):
    _, folder, _ = trained
    work = copy_of(folder, tmp_path)
    before = {p.name: sha256_of(p) for p in work.iterdir()}
    monkeypatch.setenv("PATH", _path_with(tmp_path, "#!/bin/sh\necho 'Edge TPU Compiler version 16.0'\n"
                                                    "echo 'ERROR: unsupported op version' >&2\nexit 1\n"))
    result = CliRunner().invoke(main, ["compile", str(work)])
    assert result.exit_code == 2 and "failed" in result.output and "exit 1" in result.output
    assert {p.name: sha256_of(p) for p in work.iterdir()} == before


def test_compile_plumbing_with_a_stand_in_compiler(trained, tmp_path, monkeypatch):
    """Not a compilation: a script that copies the model and prints the documented report, to
    check that the files land, the manifest records what the report says, and hashes stay true."""
    _, folder, _ = trained
    work = copy_of(folder, tmp_path)
    (tmp_path / "report.txt").write_text(REPORT)
    (tmp_path / "log.txt").write_text(LOG)
    script = f"""#!/bin/sh
# args: --show_operations --out_dir DIR MODEL
out="$3"; model="$4"; stem=$(basename "$model" .tflite)
cp "$model" "$out/${{stem}}_edgetpu.tflite"
cp {tmp_path / 'log.txt'} "$out/${{stem}}_edgetpu.log"
cat {tmp_path / 'report.txt'}
"""
    monkeypatch.setenv("PATH", _path_with(tmp_path, script))
    result = CliRunner().invoke(main, ["compile", str(work)])
    assert result.exit_code == 0, result.output
    assert "352 of 356 ops on the Edge TPU" not in result.output  # the report's own counts win
    assert "354 of 356 ops on the Edge TPU" in result.output
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["edgetpu"]["compiled"] and manifest["edgetpu"]["compiler_version"] == "16.0.384591198"
    for name, digest in manifest["artifacts"].items():
        assert sha256_of(work / name) == digest
    assert {"model_int8_edgetpu.tflite", "model_int8_edgetpu.log"} <= set(manifest["artifacts"])
