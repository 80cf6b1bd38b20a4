"""On-board test suite: run from a release folder on the board, `python -m pytest firmware_tests`.

Finds the deployed models under ../models (or $GRASPTPU_MODELS). Imports only `device` and numpy:
this runs on the board's Python (3.7 on Mendel Linux). Edge TPU tests skip, with the reason, where
there is no Edge TPU or no compiled model; they never pretend.
"""

from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.environ.get("GRASPTPU_MODELS") or os.path.join(os.path.dirname(HERE), "models")


def model_dirs() -> list:
    if not os.path.isdir(MODELS):
        return []
    return sorted(os.path.join(MODELS, n) for n in os.listdir(MODELS)
                  if os.path.isfile(os.path.join(MODELS, n, "manifest.json")))


@pytest.fixture(scope="session")
def deployed_by_task() -> dict:
    """Task -> folder of the deployed models (the last one per task, in name order)."""
    from device.contract import load_manifest

    return {load_manifest(d)["task"]: d for d in model_dirs()}


def pytest_generate_tests(metafunc):
    if "model_dir" in metafunc.fixturenames:
        dirs = model_dirs()
        metafunc.parametrize("model_dir", dirs or [pytest.param(None, marks=pytest.mark.skip(
            reason="no deployed model under {}".format(MODELS)))], ids=[os.path.basename(d) for d in dirs] or None)


def pytest_report_header(config):
    from device import runtime

    try:
        chosen = runtime.select(compiled_model=True).describe()
        return "grasptpu board: runtime {} ({}); models in {}".format(chosen["runtime"], chosen["detail"], MODELS)
    except Exception as exc:  # the header must never hide the tests' own failure
        return "grasptpu board: no runtime ({})".format(exc)
