"""Op versions against what Coral's software accepts: the check, and an old runtime as the witness.

Coral's tflite_runtime 2.5 and edgetpu_compiler 16 refuse an op version newer than TFLite 2.5
registers. The check reads each op's version from the flatbuffer; a real trained model, with one
op's version raised in its bytes, shows that the check refuses it and that the Coral-faithful
board's runtime (tflite-runtime 2.7.0 on Python 3.7) cannot load it, while the unmodified model
loads there.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from host.quantize import edgetpu_check
from host.cli import main
from device.contract import INT8_MODEL

VERSION_SLOT = 8  # OperatorCode's third field (`version`): vtable offset 4 + 2 * 2


def with_op_version(buf: bytes, op_name: str, version: int) -> bytes:
    """A copy of a TFLite flatbuffer with every OperatorCode of `op_name` set to `version`."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(buf)
    model = schema.Model.GetRootAs(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    patched = 0
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())] == op_name:
            offset = code._tab.Offset(VERSION_SLOT)
            assert offset, f"{op_name}'s version is not stored (the default 1): cannot patch it in place"
            struct.pack_into("<i", data, code._tab.Pos + offset, version)
            patched += 1
    assert patched, f"no {op_name} in the model"
    return bytes(data)


def test_the_trained_models_use_only_versions_coral_accepts(quantised):
    _, detector, classifier, _ = quantised
    for folder in (detector, classifier):
        report = edgetpu_check.check_model(folder / INT8_MODEL)
        assert report.first_unmapped is None
        versions = report.summary()["op_versions"]
        assert versions["FULLY_CONNECTED"]["versions"] and versions["FULLY_CONNECTED"]["coral_max"]
        for name, entry in versions.items():
            assert max(entry["versions"]) <= entry["coral_max"], (name, entry)
    result = CliRunner().invoke(main, ["edgetpu-check", str(detector)])
    assert result.exit_code == 0, result.output
    fc = edgetpu_check.CORAL_MAX_OP_VERSION["FULLY_CONNECTED"]
    assert any(line.split()[:1] == ["FULLY_CONNECTED"] and line.split()[2] == str(fc)
               for line in result.output.splitlines()), result.output


def test_a_version_newer_than_coral_knows_fails_the_check(quantised, tmp_path):
    _, detector, _, _ = quantised
    too_new = edgetpu_check.CORAL_MAX_OP_VERSION["FULLY_CONNECTED"] + 1
    path = tmp_path / "too_new.tflite"
    path.write_bytes(with_op_version((detector / INT8_MODEL).read_bytes(), "FULLY_CONNECTED", too_new))
    report = edgetpu_check.check_model(path)
    flagged = [op for op in report.ops if op.problems]
    assert flagged and {(op.op, op.version) for op in flagged} == {("FULLY_CONNECTED", too_new)}
    assert f"FULLY_CONNECTED version {too_new} is newer than Coral's runtime" in flagged[0].problems[0]
    # not a cut in the graph: the whole model is refused, so nothing counts as mapped
    assert report.mapped == 0 and any("will not load this model at all" in p for p in report.model_problems)
    result = CliRunner().invoke(main, ["edgetpu-check", str(path)])
    assert result.exit_code == 1 and f"FULLY_CONNECTED version {too_new} is newer" in result.output
    assert "mapped: 0 of" in result.output


def test_an_op_unknown_to_tflite_2_5_fails_the_check():
    op = edgetpu_check.OpCheck(0, "STABLEHLO_ADD", 1)
    assert op.max_version is None
    assert "unknown to TFLite 2.5" in edgetpu_check._version_problems(op)[0]


def load_on(python: Path, model: Path) -> subprocess.CompletedProcess:
    code = ("import sys, tflite_runtime.interpreter as t\n"
            "it = t.Interpreter(model_path=sys.argv[1])\n"
            "it.allocate_tensors()\n"
            "print('loaded', len(it._get_ops_details()))\n")
    return subprocess.run([str(python), "-c", code, str(model)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_coral_runtime_loads_the_model_and_refuses_a_newer_op_version(quantised, coral_python, tmp_path):
    _, detector, _, _ = quantised
    ok = load_on(coral_python, detector / INT8_MODEL)
    assert ok.returncode == 0 and ok.stdout.startswith("loaded"), ok.stderr
    too_new = edgetpu_check.CORAL_MAX_OP_VERSION["FULLY_CONNECTED"] + 1
    path = tmp_path / "too_new.tflite"
    path.write_bytes(with_op_version((detector / INT8_MODEL).read_bytes(), "FULLY_CONNECTED", too_new))
    refused = load_on(coral_python, path)
    assert refused.returncode != 0
    assert f"Didn't find op for builtin opcode 'FULLY_CONNECTED' version '{too_new}'" in refused.stderr, refused.stderr
