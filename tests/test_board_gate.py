"""What a board is judged by (host/board_bench.judge), what it reports it runs, and the inventory's
threshold field: on hand-made result dicts, so each rule is shown failing and passing."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.boards.bench import judge
from host.render import software_line
from host.boards.inventory import Board, load_inventory
from host.errors import GrasptpuError


def result(accuracy: float = 0.90, host_accuracy: float = 0.90, agreement: float = 1.0, bit_exact: float = 1.0,
           p99_ms: float = 1.0) -> dict:
    return {"models": {"m": {"accuracy": {"accuracy": accuracy, "host_int8_argmax_agreement": agreement,
                                          "host_int8_bit_exact": bit_exact},
                             "latency": {"p99_ms": p99_ms}, "host": {"int8": {"accuracy": host_accuracy}}}}}


def test_bit_exactness_is_never_required():
    assert judge(result(bit_exact=0.5), max_p99_ms=2.0) == []


def test_argmax_agreement_below_the_floor_fails():
    problems = judge(result(agreement=0.985), max_p99_ms=2.0, min_agreement=0.99)
    assert len(problems) == 1 and "argmax agrees with the host's int8 model on 98.50%" in problems[0]


def test_an_accuracy_drop_and_the_boards_own_latency_threshold():
    assert "points below the host's int8" in judge(result(accuracy=0.89), max_p99_ms=2.0, max_drop=0.5)[0]
    assert judge(result(p99_ms=12.0), max_p99_ms=40.0) == []
    assert "p99 latency 12.000 ms over 2 ms" in judge(result(p99_ms=12.0), max_p99_ms=2.0)[0]


def test_an_aperture_decoder_is_judged_by_r2_against_the_host_int8():
    def regressor(r2: float, host_r2: float = 0.90, p99_ms: float = 1.0) -> dict:
        return {"models": {"ap": {"task": "aperture", "accuracy": {"r2": r2, "host_int8_bit_exact": 0.8},
                                  "latency": {"p99_ms": p99_ms}, "host": {"int8": {"r2": host_r2}}}}}

    assert judge(regressor(0.897), max_p99_ms=2.0) == []  # within 0.005; bit-exactness not required
    problems = judge(regressor(0.89), max_p99_ms=2.0)
    assert len(problems) == 1 and "R2 0.8900 on the board, 0.9000 on the host's int8 model" in problems[0]
    assert judge(regressor(float("nan")), max_p99_ms=2.0)  # NaN is a failure, not a pass
    assert "p99 latency 3.000 ms over 2 ms" in judge(regressor(0.9, p99_ms=3.0), max_p99_ms=2.0)[0]


ABOUT = {"python": "3.7.3", "numpy": "1.16.2", "machine": "aarch64", "runtime": "tflite_runtime",
         "runtime_version": "2.5.0.post1", "detail": "CPU (tflite_runtime 2.5.0.post1)"}


def test_the_software_line_says_when_the_inventory_differs():
    board = Board("mini", "mini.local", python_version="3.7.3", numpy_version="1.16.2",
                  runtime="tflite_runtime 2.5.0.post1")
    line = software_line(board, ABOUT)
    assert "runs Python 3.7.3, numpy 1.16.2, tflite_runtime 2.5.0.post1" in line and "differ" not in line
    stale = Board("mini", "mini.local", python_version="3.5.3", runtime="tflite_runtime 2.5.0.post1")
    assert "(they differ in Python: update the inventory)" in software_line(stale, ABOUT)
    assert software_line(Board("x", "h"), ABOUT).endswith("inventory records nothing")


@pytest.mark.parametrize("value", ["-1", "0", "true", '"fast"'])
def test_a_bad_latency_threshold_in_the_inventory_is_one_line(tmp_path: Path, value: str):
    path = tmp_path / "boards.toml"
    path.write_text(f'[boards.mini]\nhost = "mini.local"\nmax_p99_ms = {value}\n')
    with pytest.raises(GrasptpuError, match="max_p99_ms = .* is not a positive number of milliseconds"):
        load_inventory(path)
