"""Validation with each bin projected once (host/train/validate.py) scores as Keras' evaluate does."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from host.data.prepare import prepare
from host.train.config import TrainConfig
from host.train.fit import DecoderHyperModel, make_feed, train
from host.train.model import fixed_hp
from host.train.validate import BinValidation, bin_validation

HP = {"bilstm_layers": 2, "units": 8, "dropout": 0.5, "kernel_regularizer": "l2",
      "recurrent_regularizer": "l1_l2", "learning_rate": 1e-2}


@pytest.fixture(scope="module")
def prepared(write_session):
    return prepare(write_session(12, 60, seed=5))


def _keras_scores(model, hypermodel) -> dict:
    """What Keras' own validation reports for the same windows."""
    windows = hypermodel.sets["validation"]
    feed = make_feed(tf.constant(np.asarray(windows.counts)), windows, 1024, False, 0)
    return {f"val_{k}": v for k, v in model.evaluate(feed, verbose=0, return_dict=True).items()}


@pytest.mark.parametrize("task,layers,lstm", [("object", 2, "fused-bf16"), ("grasp-phase", 1, "fused"),
                                              ("aperture", 2, "grouped")])
def test_scores_equal_keras_evaluate(prepared, task, layers, lstm):
    """Loss (with the L1/L2 terms), accuracy or mean absolute error: Keras' figures up to rounding,
    on a model trained a little (so the weights and regularisation are not the initial ones)."""
    config = TrainConfig(task=task, hyperparameters={**HP, "bilstm_layers": layers}, epochs=1, verbose=0, lstm=lstm)
    hypermodel = DecoderHyperModel(prepared, config)
    model = hypermodel.build(fixed_hp(config.hyperparameters))
    hypermodel.fit(fixed_hp(config.hyperparameters), model)
    windows = hypermodel.sets["validation"]
    assert bin_validation(model, tf.constant(np.asarray(windows.counts)), windows) is not None
    ours = BinValidation(tf.constant(np.asarray(windows.counts)), windows, chunk=37)  # several chunks, the last partial
    ours.set_model(model)
    got, expected = ours.scores(), _keras_scores(model, hypermodel)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    assert got == ours.scores()  # the traced functions are reused, not retraced into other numbers


def test_training_records_the_bin_validation_in_its_history(prepared):
    """The epoch's logs carry the scores before early stopping, the schedule and the history read them."""
    config = TrainConfig(task="object", hyperparameters=HP, epochs=3, verbose=0, lstm="fused")
    result = train(prepared, config)
    assert {"val_loss", "val_accuracy", "loss", "accuracy", "learning_rate"} <= set(result.history)
    assert len(result.history["val_accuracy"]) == result.epochs_run == 3
    hypermodel = DecoderHyperModel(prepared, config)
    last = _keras_scores(result.model, hypermodel)  # the restored best weights score as recorded
    best = result.best_epoch - 1
    assert result.history["val_accuracy"][best] == pytest.approx(last["val_accuracy"], abs=1e-6)
    assert result.history["val_loss"][best] == pytest.approx(last["val_loss"], rel=1e-5)


def test_keras_layer_validates_the_keras_way(prepared):
    config = TrainConfig(task="object", hyperparameters=HP, epochs=1, verbose=0, lstm="keras")
    hypermodel = DecoderHyperModel(prepared, config)
    model = hypermodel.build(fixed_hp(config.hyperparameters))
    windows = hypermodel.sets["validation"]
    assert bin_validation(model, tf.constant(np.asarray(windows.counts)), windows) is None


def test_each_pass_projects_only_the_rows_its_windows_read(prepared):
    """The rows are the validation windows' bins without repeats; every window finds its 12 rows from
    its start on; a pass projects at most 12 rows per window it scores (memory bounded by the chunk)."""
    windows = DecoderHyperModel(prepared, TrainConfig(task="grasp-phase", hyperparameters=HP, verbose=0)).sets["validation"]
    check = BinValidation(tf.constant(np.asarray(windows.counts)), windows, chunk=50)
    rows, bins = check.rows, windows.window_bins
    assert len(np.unique(rows)) == len(rows) < len(windows) * bins / 5
    read = rows[check.first[:, None] + np.arange(bins)[None, :]]
    np.testing.assert_array_equal(np.diff(read, axis=1), 1)
    np.testing.assert_array_equal(read[:, -1], np.sort(windows.end_row))
    passes = list(check.chunks())
    assert sum(w.stop - w.start for w, _ in passes) == len(windows) and len(passes) > 3
    assert all(r.stop - r.start <= (w.stop - w.start) * bins for w, r in passes)
