"""The int8 gate of a regressor, on hand-made outputs: R2 drop and the RMS bound in the target's unit."""

from __future__ import annotations

import numpy as np
import pytest

from host.quantize.gate import compare_regression, gate


def outputs(target: np.ndarray, int8_offset: np.ndarray) -> dict:
    keras = target[:, None] + 0.5  # a float model 0.5 mm off everywhere
    return {"keras": keras, "float": keras.copy(), "int8": keras + int8_offset[:, None]}


def test_an_int8_model_equal_to_float_passes():
    target = np.linspace(10, 90, 400)
    r = compare_regression(outputs(target, np.zeros(400)), target, "mm")
    assert r["int8_r2_drop"] == pytest.approx(0.0) and r["int8"]["rms_error"] == 0.0
    assert r["keras"]["rmse"] == pytest.approx(0.5) and gate(r) == []


def test_a_small_int8_error_passes_and_a_large_one_fails_on_both_bounds():
    target = np.linspace(10, 90, 400)
    steps = np.resize([0.3, -0.3], 400)  # a third of a mm either way: resolution, not a regression
    small = compare_regression(outputs(target, steps), target, "mm")
    assert small["int8"]["rms_error"] == pytest.approx(0.3) and gate(small) == []
    large = compare_regression(outputs(target, 8 * steps), target, "mm")
    problems = gate(large)
    r2_drop = large["keras"]["r2"] - large["int8"]["r2"]
    assert r2_drop > 0.01 and large["int8_r2_drop"] == pytest.approx(r2_drop)
    assert len(problems) == 2 and "R2 is" in problems[0] and "2.400 mm RMS (allowed 1 mm)" in problems[1]


def test_the_bounds_are_the_callers():
    target = np.linspace(10, 90, 400)
    r = compare_regression(outputs(target, np.resize([2.0, -2.0], 400)), target, "mm")
    assert gate(r) and gate(r, max_r2_drop=1.0, max_rms_error=2.5) == []


def test_a_nan_output_fails_the_gate():
    target = np.linspace(10, 90, 400)
    offset = np.zeros(400)
    offset[3] = np.nan
    assert gate(compare_regression(outputs(target, offset), target, "mm"))
