"""The benchmark scripts' own arithmetic and refusals (their runs are benchmarks, not tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench_reference  # noqa: E402  (tools/ is not a package)
import bench_train  # noqa: E402
import bench_tune  # noqa: E402


def _row(session: str, seed: int, way: str, accuracy: float, f1: float | None) -> dict:
    return {"session": session, "seed": seed, "way": way, "task": "grasp-phase" if f1 is not None else "object",
            "accuracy": accuracy, "f1": f1}


def test_the_paired_summary_is_ours_minus_the_reference_per_pair():
    rows = [_row("A", 0, "ours", 0.80, 0.90), _row("A", 0, "reference", 0.78, 0.91),
            _row("A", 1, "ours", 0.70, 0.95), _row("A", 1, "reference", 0.71, 0.93),
            _row("B", 0, "ours", 0.60, 0.97), _row("B", 0, "reference", 0.60, 0.97),
            _row("B", 1, "ours", 0.99, 0.99)]  # no reference run: not a pair
    acc, f1 = bench_reference.paired_summary(rows, "grasp-phase")
    # accuracy differences +2, -1, 0 points: mean +0.33, standard error 0.88
    assert "ours 70.00, reference 69.67 (means of 3 runs)" in acc and "+0.33 +- 0.88 points" in acc
    assert "pairs -1.00 to +2.00" in acc
    assert "f1:" in f1 and "+0.33 +- 0.88" in f1  # -1, +2, 0 points
    assert bench_reference.paired_summary(rows, "object") == []


@pytest.mark.parametrize("seeds", [",", "0,0", "x"])
def test_bad_seeds_are_refused_in_one_line(tmp_path, seeds):
    recording = tmp_path / "ZRec50.neo.mat"
    recording.write_bytes(b"")
    result = CliRunner().invoke(bench_reference.main, [str(recording), "--seeds", seeds])
    assert result.exit_code == 2 and "give distinct integers" in result.output


def test_one_session_twice_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    for folder in (tmp_path, tmp_path / "a"):
        (folder / "ZRec50.neo.mat").write_bytes(b"")
    result = CliRunner().invoke(bench_reference.main, [str(tmp_path / "ZRec50.neo.mat"),
                                                       str(tmp_path / "a" / "ZRec50.neo.mat")])
    assert result.exit_code == 2 and "share a file name" in result.output


def _run(seconds: float, epochs: int = 70, best: int = 60, accuracy: float = 0.76) -> dict:
    training = {"seconds": seconds, "epochs_run": epochs, "best_epoch": best, "train_windows": 8343,
                "epoch_windows": 8343, "windows_per_second": epochs * 8343 / seconds}
    return {"training": training, "wall_seconds": seconds + 20,
            "metrics": {"test": {"accuracy": accuracy, "r2_hold": float("nan")}}}


def test_repeated_runs_report_the_median_time_its_range_and_whether_they_were_one_run():
    timed = bench_train.summarise([_run(53.5), _run(61.0), _run(55.0)])
    assert (timed["seconds"], timed["min_seconds"], timed["max_seconds"]) == (55.0, 53.5, 61.0)
    assert timed["wall_seconds"] == 75.0 and timed["epochs"] == 70
    assert timed["same_run"]  # an undefined score (NaN) in every run is the same outcome
    assert timed["windows_per_second"] == pytest.approx(70 * 8343 / 55.0)
    for other in (_run(55.0, epochs=61, best=51), _run(55.0, best=59), _run(55.0, accuracy=0.77)):
        differs = bench_train.summarise([_run(55.0), other])
        assert not differs["same_run"] and differs["best"] == other["training"]["best_epoch"]  # the last run's
    assert bench_train.summarise([_run(42.0)])["seconds"] == 42.0


def test_worker_ratios_are_taken_within_each_round():
    rows = [{"round": 1, "workers": None, "trials_per_hour": 600}, {"round": 1, "workers": 1, "trials_per_hour": 400},
            {"round": 1, "workers": 2, "trials_per_hour": 760}, {"round": 2, "workers": 2, "trials_per_hour": 500},
            {"round": 2, "workers": 1, "trials_per_hour": 250}, {"round": 3, "workers": 2, "trials_per_hour": 900}]
    assert bench_tune.ratios(rows, 2) == pytest.approx([1.9, 2.0])  # round 3 has no 1-worker run: no ratio
    assert bench_tune.ratios(rows, 4) == []
