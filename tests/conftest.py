"""Shared builders: small hand-made recordings, written through plain neo or our writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.data.recording import Recording

PHASES = ("Start", "Fix", "Cue", "Mem", "Go", "Mov", "Hold", "Rew", "End")


def make_recording(n_trials: int = 12, n_units: int = 5, objects: list[int] | None = None,
                   seed: int = 0, rate_hz: float = 20.0, name: str = "Tiny") -> Recording:
    """Random Poisson trains, absolute trial times, phase events with Hold..Rew inside each trial."""
    rng = np.random.default_rng(seed)
    objects = objects or [21, 22, 23] * (n_trials // 3) + [21] * (n_trials % 3)
    t_start = np.cumsum(np.r_[3.0, rng.uniform(4.0, 6.0, n_trials - 1) + 0.5])
    duration = rng.uniform(3.0, 4.0, n_trials)
    t_stop = t_start + duration
    labels, times, trains = [], [], []
    for k in range(n_trials):
        onsets = np.sort(rng.uniform(0.1, duration[k] - 0.1, len(PHASES) - 1))
        labels.append(list(PHASES))
        times.append(t_start[k] + np.r_[0.0, onsets])
        for _ in range(n_units):
            n = rng.poisson(rate_hz * duration[k])
            trains.append(np.sort(rng.uniform(t_start[k], t_stop[k], n)))
    counts = np.array([len(t) for t in trains])
    return Recording(name=name, n_units=n_units, t_start_s=t_start, t_stop_s=t_stop,
                     trial_annotations={"obj": np.array(objects, np.float64), "correct": np.ones(n_trials)},
                     event_labels=labels, event_times_s=times,
                     spike_times_s=np.concatenate(trains) if trains else np.empty(0),
                     train_offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64))


def neo_block(rec: Recording, time_unit: str = "s", padded_labels: bool = True):
    """The same session built with neo's own API, as a lab's export script would."""
    import neo
    import quantities as pq

    scale = {"s": 1.0, "ms": 1000.0}[time_unit]
    block = neo.Block(name=rec.name)
    for k in range(rec.n_trials):
        values = {key: col[k] for key, col in rec.trial_annotations.items()}
        seg = neo.Segment(name=f"trial {k}", **{key: (int(v) if float(v).is_integer() else float(v))
                                                 if col.dtype.kind == "f" else str(v)
                                                 for (key, v), col in zip(values.items(), rec.trial_annotations.values())
                                                 if not (col.dtype.kind == "f" and np.isnan(v)) and v != ""})
        for u in range(rec.n_units):
            seg.spiketrains.append(neo.SpikeTrain(rec.train(k, u) * scale, units=time_unit,
                                                  t_start=rec.t_start_s[k] * scale * pq.Quantity(1, time_unit),
                                                  t_stop=rec.t_stop_s[k] * scale * pq.Quantity(1, time_unit)))
        labels = np.array(rec.event_labels[k])
        if padded_labels and len(labels):
            labels = np.array([s.ljust(8) for s in labels])
        if len(labels):
            seg.events.append(neo.Event(np.asarray(rec.event_times_s[k]) * scale * pq.Quantity(1, time_unit),
                                        labels=labels))
        block.segments.append(seg)
    return block


def write_with_neo(rec: Recording, path: Path, **kw) -> Path:
    from neo.io import NeoMatlabIO

    NeoMatlabIO(str(path)).write_block(neo_block(rec, **kw))
    return path


@pytest.fixture(scope="session")
def write_session(tmp_path_factory):
    """A writer of small synthetic sessions, the paper's layout: `write(n_units, n_trials, seed,
    difficulty=0.5, folder=None, name="ZRec50.neo.mat")` draws one (host.data.synth, deterministic
    in its arguments) into `folder` (default: a fresh temporary folder) and returns its path. The
    name is a paper session's, so training picks that session's preset as it would on real data."""
    from host.data import matfile, synth

    def write(n_units: int, n_trials: int, seed: int, difficulty: float = 0.5, folder: Path | None = None,
              name: str = "ZRec50.neo.mat") -> Path:
        path = (folder or tmp_path_factory.mktemp("data")) / name
        matfile.save_recording(synth.generate(n_units=n_units, n_trials=n_trials, difficulty=difficulty,
                                              seed=seed), path)
        return path
    return write


@pytest.fixture
def tiny() -> Recording:
    return make_recording()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GRASPTPU_CACHE", str(tmp_path_factory.mktemp("cache")))


def int8_tflite(model, rate: float, samples: int) -> bytes:
    """`model` converted to full int8 TFLite (int8 in/out, BUILTINS_INT8), calibrated on `samples`
    seeded Poisson(`rate`) windows of the model's input shape: the converter as quantize uses it."""
    import tensorflow as tf

    shape = (1, *model.input_shape[1:])
    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.poisson(rate, shape).astype(np.float32)] for _ in range(samples))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


TINY_HP = {"bilstm_layers": 1, "units": 16, "dropout": 0.0, "kernel_regularizer": "none",
           "recurrent_regularizer": "none", "learning_rate": 1e-2}


@pytest.fixture(scope="session")
def quantised(tmp_path_factory, write_session):
    """A tiny synthetic session with both decoders trained (a few epochs) and quantised, once per run.

    Returns (recording, grasp-phase folder, object folder). Tests that change a folder copy it first.
    """
    from click.testing import CliRunner

    from host.cli import main
    from host.train.config import TrainConfig
    from host.train.run import run_training

    root = tmp_path_factory.mktemp("quantised")
    data = write_session(20, 150, seed=5, folder=root)
    folders = []
    for task, epochs in (("grasp-phase", 5), ("object", 8)):
        config = TrainConfig(task=task, hyperparameters=TINY_HP, epochs=epochs, seed=0, verbose=0,
                             class_weights=task == "grasp-phase")
        folders.append(run_training(data, config, root / "models").folder)
    result = CliRunner().invoke(main, ["quantize", *map(str, folders), "--representative-size", "300"])
    assert result.exit_code == 0, result.output
    return data, folders[0], folders[1], result.output


@pytest.fixture(scope="session")
def aperture_model(quantised):
    """The aperture regressor of the `quantised` session (same recording, seed and split), trained
    a few epochs and quantised, once per run."""
    from click.testing import CliRunner

    from host.cli import main
    from host.train.config import TrainConfig
    from host.train.run import run_training

    data, detector, _, _ = quantised
    config = TrainConfig(task="aperture", hyperparameters=TINY_HP, epochs=3, seed=0, verbose=0)
    folder = run_training(data, config, detector.parent).folder
    result = CliRunner().invoke(main, ["quantize", str(folder), "--representative-size", "300"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="session")
def board_envs(tmp_path_factory):
    """Where the simulated boards' Python environments live (the Coral-faithful Python 3.7 one and
    the host-Python fallback), each built once per run when first needed.

    $GRASPTPU_BOARD_ENVS reuses a folder of them (fast local runs)."""
    import os

    return Path(os.environ.get("GRASPTPU_BOARD_ENVS") or tmp_path_factory.mktemp("board-envs"))


@pytest.fixture(scope="session")
def coral_python(board_envs):
    """The Coral-faithful board's Python (3.7, numpy<1.20, tflite-runtime 2.7.0), exactly as the
    simulated board builds it; skipped where the machine has no Python 3.7."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import sim_board

    python37 = sim_board.find_python37()
    if python37 is None:
        pytest.skip("no Python 3.7 on this machine for a Coral-faithful runtime")
    return sim_board.ensure_python_env(board_envs, sim_board.CORAL_KIND, str(python37), log=lambda _: None)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, board_envs):
    """One running simulated board, b1 (real sshd on 127.0.0.1; Coral-faithful where this machine
    has a Python 3.7), and its inventory file, per test module that asks: what the hostile-input
    probes need. tests/test_deploy.py overrides it with a fleet of three."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import sim_board

    boards_dir = tmp_path_factory.mktemp("fleet")
    try:
        sim_board.start_board(boards_dir, "b1", sim_board.free_port(), board_envs, log=lambda _: None)
        yield boards_dir, sim_board.inventory_file(boards_dir)
    finally:
        for name in sim_board.list_boards(boards_dir):
            sim_board.stop_board(boards_dir, name, log=lambda _: None)
