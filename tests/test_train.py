"""Training, tuning and the sweep on a tiny synthetic session (real Keras, a few epochs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.modelfolder import sha256_of
from host.train.model import LSTM_KINDS, PRESETS, SEARCH_SPACE, build_model, built_layer, default_lstm, fixed_hp
from host.data.prepare import assert_disjoint
from host.train.config import TrainConfig
from host.train.fit import Thinning, class_weight_vector, far_rest, make_feed
from host.render import trained
from host.train.run import run_training
from host.train.tune import BEST_FILE as BEST

SMALL_HP = {"bilstm_layers": 1, "units": 16, "dropout": 0.2, "kernel_regularizer": "none",
            "recurrent_regularizer": "none", "learning_rate": 1e-2}


@pytest.fixture(scope="module")
def session(write_session):
    """An easy tiny session: 24 units, 240 trials, half the default difficulty."""
    return write_session(24, 240, seed=3)


def test_presets_build_methods_architecture():
    m = build_model(fixed_hp(PRESETS["two-layer"]), n_units=10, n_classes=7)
    bilstm = [layer for layer in m.layers if layer.name.startswith("bilstm_")]
    assert len(bilstm) == 2 and all(layer.units == 40 for layer in bilstm)  # the default layer, fused(-bf16)
    precision = "bfloat16" if default_lstm() == "fused-bf16" else "float32"
    assert bilstm[0].dropout == 0.8 and bilstm[0].train_precision == precision and bilstm[0].mask_groups == 0
    assert m.output_shape == (None, 7) and m.input_shape == (None, 12, 10)
    z = build_model(fixed_hp(PRESETS["one-layer"]), n_units=10, n_classes=7)
    assert len([layer for layer in z.layers if layer.name.startswith("bilstm_")]) == 1


@pytest.mark.parametrize("kind", LSTM_KINDS)
def test_the_layer_read_off_a_built_model_is_the_kind_it_was_built_as(kind):
    model = build_model(fixed_hp(PRESETS["one-layer"]), n_units=10, n_classes=3, lstm=kind)
    assert built_layer(model) == kind  # a tuning worker reports the kind from the model itself


def test_tuner_space_is_methods():
    assert SEARCH_SPACE["bilstm_layers"] == [1, 2, 3, 4] and SEARCH_SPACE["units"] == [16, 32, 40, 64]
    assert SEARCH_SPACE["dropout"] == [0.0, 0.2, 0.4, 0.6, 0.7, 0.8]
    assert SEARCH_SPACE["kernel_regularizer"] == ["none", "l1", "l2", "l1_l2"]


@pytest.mark.parametrize("task,lstm", [("object", "fused-bf16"), ("object", "grouped"), ("grasp-phase", "keras")])
def test_training_beats_chance_and_writes_a_complete_model_folder(session, tmp_path, task, lstm, capsys):
    config = TrainConfig(task=task, hyperparameters=SMALL_HP, epochs=6, seed=0, verbose=0,
                         class_weights=task == "grasp-phase", lstm=lstm)
    record = run_training(session, config, tmp_path / "models")
    folder = record.folder
    metrics = json.loads((folder / "metrics.json").read_text())["test"]
    manifest = json.loads((folder / "manifest.json").read_text())
    if task == "object":
        # ~30 classes: chance ~3 %; always answering the largest class scores its share
        majority = max(sum(row) for row in metrics["confusion"]) / metrics["windows"]
        assert metrics["accuracy"] > max(0.15, 2 * majority), (metrics["accuracy"], majority)
        assert metrics["relaxed_accuracy"] > metrics["accuracy"]
        # naive Bayes on the same test trials (one sample per trial) beats chance too, by the same rule
        nb = record.baseline["test_split"]
        nb_majority = max(sum(row) for row in nb["confusion"]) / nb["windows"]
        assert "naive Bayes" in trained(record) and nb["accuracy"] > max(0.15, 2 * nb_majority), (nb["accuracy"],
                                                                                                nb_majority)
    else:
        assert metrics["balanced_accuracy"] > 0.8 and metrics["f1"] > 0.5, metrics
    for name, digest in manifest["artifacts"].items():
        assert sha256_of(folder / name) == digest
    assert {"model.keras", "history.json", "split.json", "config.json", "report.png", "metrics.json",
            "test_set.npz", "calibration.npz"} <= set(manifest["artifacts"])
    with np.load(folder / "calibration.npz") as npz:  # stratified training windows, uint8, for quantize
        assert npz["windows"].dtype == np.uint8 and npz["windows"].shape[1:] == (12, manifest["data"]["n_units"])
        assert len(npz["windows"]) == manifest["calibration"]["windows"] == len(npz["label"])
    split = json.loads((folder / "split.json").read_text())["trial_index"]
    assert not set(split["test"]) & (set(split["train"]) | set(split["validation"]))
    assert manifest["data"]["sha256"] and manifest["versions"]["keras"] and "git_commit" in manifest
    history = json.loads((folder / "history.json").read_text())
    assert len(history["val_accuracy"]) == manifest["training"]["epochs_run"] <= 6
    from host.modelfolder import load_keras

    model = load_keras(folder, manifest)
    assert model.output_shape[-1] == len(manifest["data"]["classes"])
    layer = {"keras": "Bidirectional"}.get(lstm, "FusedBiLSTM")  # the layer asked for, recorded
    assert type(model.get_layer("bilstm_0")).__name__ == layer and manifest["config"]["lstm"] == lstm
    if lstm != "keras":
        bi = model.get_layer("bilstm_0")
        assert (bi.mask_groups, bi.train_precision) == ((8, "float32") if lstm == "grouped" else (0, "bfloat16"))



def test_a_failed_run_leaves_no_model_folder(session, tmp_path, monkeypatch):
    import host.train.run

    def boom(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(host.train.run, "evaluate", boom)
    config = TrainConfig(task="object", hyperparameters=SMALL_HP, epochs=1, verbose=0)
    with pytest.raises(RuntimeError):
        run_training(session, config, tmp_path / "models")
    assert not any((tmp_path / "models").iterdir()) if (tmp_path / "models").exists() else True


def test_test_windows_never_reach_training(session):
    from host.data.prepare import prepare

    p = prepare(session)
    assert_disjoint(p.object)
    leaky = dict(p.object)
    leaky["validation"] = p.object["test"]
    with pytest.raises(AssertionError, match="test trials leaked into the validation"):
        assert_disjoint(leaky)


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 90 + [1] * 10)
    w = class_weight_vector(labels, 2)
    assert w[labels].sum() == pytest.approx(100) and w[0] * 90 == pytest.approx(w[1] * 10)


def test_far_rest_windows_are_those_beyond_a_window_from_any_grasp_window():
    from host.data.windows import WindowSet

    end_row = np.arange(11, 111)
    label = ((end_row >= 50) & (end_row < 60)).astype(np.uint8)
    windows = WindowSet(np.zeros((111, 3), np.uint8), end_row, label, np.zeros(100, np.int32), "grasp-phase",
                        ("rest", "grasp"))
    far = far_rest(windows)
    assert np.array_equal(end_row[far], np.r_[11:38, 72:111])  # 38..49 and 60..71 are within 12 bins


def _numbered_windows(n: int = 200):
    """Windows whose last bin spells their end row (two count columns: row // 256, row % 256)."""
    from host.data.windows import WindowSet

    rows = np.arange(n + 11)
    counts = np.stack([rows // 256, rows % 256], axis=1).astype(np.uint8)
    end_row = np.arange(11, n + 11)
    label = ((end_row >= 50) & (end_row < 60)).astype(np.uint8)
    return WindowSet(counts, end_row, label, np.zeros(n, np.int32), "grasp-phase", ("rest", "grasp"))


def _end_rows(feed) -> list:
    return [int(r) for x, *_ in feed for r in x.numpy()[:, -1, 0].astype(int) * 256 + x.numpy()[:, -1, 1]]


def test_each_epoch_is_a_fresh_seeded_order_or_share_of_the_windows():
    """Every window exactly once per epoch (or a fresh 1/K with epoch sampling, no repeats), another
    order or share next epoch, the same sequence for the same seed; thinning keeps every window
    outside the far rest exactly once."""
    import tensorflow as tf

    windows = _numbered_windows()
    counts = tf.constant(windows.counts)
    feed = make_feed(counts, windows, 16, True, 3)
    first, second = _end_rows(feed), _end_rows(feed)
    assert sorted(first) == sorted(second) == list(windows.end_row) and first != second
    assert _end_rows(make_feed(counts, windows, 16, True, 3)) == first  # seeded
    sampled = make_feed(counts, windows, 16, True, 3, sample=3)
    epochs = [_end_rows(sampled) for _ in range(3)]
    assert all(len(e) == len(set(e)) == 67 for e in epochs) and epochs[0] != epochs[1]
    assert int(sampled.cardinality()) == -(-67 // 16)
    assert [len(x) for x, *_ in sampled] == [16, 16, 16, 16, 3]  # full batches, the rest last
    thin = Thinning(far_rest(windows), 4)
    kept = set(windows.end_row[~thin.mask])
    for rows in (_end_rows(make_feed(counts, windows, 16, True, 3, thin.weights(), thin=thin)) for _ in range(2)):
        assert len(rows) == len(set(rows)) == thin.epoch_size and kept <= set(rows)
    assert _end_rows(make_feed(counts, windows, 16, False, 3)) == list(windows.end_row)  # validation: in order


def test_the_first_thread_choice_in_a_process_stands():
    """A tune worker's --threads, then the hypermodel's default call: the worker's choice stays."""
    code = ("from host.train.fit import use_threads; import tensorflow as tf; a = use_threads(3); b = use_threads(); "
            "print(a, b, tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["(1,", "3)", "(1,", "3)", "1", "3"]


@pytest.mark.parametrize("task", ["object", "aperture"])
def test_the_training_step_is_traced_once(session, task):
    """The optimiser's and the metrics' variables exist before fit: a first trace that created them
    would make TensorFlow trace the (unrolled, slow to trace) step a second time."""
    from host.data.prepare import prepare
    from host.train.fit import DecoderHyperModel

    config = TrainConfig(task=task, hyperparameters=SMALL_HP, epochs=2, verbose=0)
    hypermodel = DecoderHyperModel(prepare(session), config)
    model = hypermodel.build(fixed_hp(SMALL_HP))
    traces, step = [], model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    history = hypermodel.fit(fixed_hp(SMALL_HP), model).history
    assert len(traces) == 1 and len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


def test_graph_rewrites_are_off_for_training_and_the_first_choice_stands():
    """Training turns grappler off; the reference way's earlier call (TensorFlow's default) stays."""
    code = ("from host.train.fit import graph_rewrites; import tensorflow as tf; a = graph_rewrites(); "
            "b = graph_rewrites(True); print(a, b, tf.config.optimizer.get_experimental_options())")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.startswith("False False ") and "'disable_meta_optimizer': True" in out
    code = code.replace("a = graph_rewrites(); b = graph_rewrites(True)", "a = graph_rewrites(True); b = graph_rewrites()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.startswith("True True ") and "'disable_meta_optimizer': False" in out


def test_thinning_keeps_grasp_and_near_rest_and_draws_a_fresh_share_of_far_rest_each_epoch(session):
    """The detector's epochs: every grasp and near-rest window once, ceil(far / K) far rest windows,
    another draw next epoch, the same draws for the same seed; far rest weighted K times, mean 1."""
    import tensorflow as tf

    from host.data.prepare import prepare

    train = prepare(session).windows("grasp-phase")["train"]
    thin = Thinning(far_rest(train), 4)
    n_far = int(thin.mask.sum())
    near_rest = int(((train.label == 0) & ~thin.mask).sum())
    assert n_far > 0 and near_rest > 0

    def epoch(ds):
        x, y, w = zip(*[(x.numpy().reshape(len(x), -1), y.numpy(), w.numpy()) for x, y, w in ds])
        return [tuple(r) for r in np.concatenate(x)], np.concatenate(y), np.concatenate(w)

    feed = make_feed(tf.constant(train.counts), train, 64, True, 7, thin.weights(), thin=thin)
    assert int(feed.cardinality()) == -(-thin.epoch_size // 64)  # Keras knows an epoch's steps
    first, second = epoch(feed), epoch(feed)
    far = [sorted(r for r, wi in zip(rows, w) if wi == w.max()) for rows, _, w in (first, second)]
    assert far[0] != far[1]  # another share of the far rest windows, not only another order
    for _, labels, w in (first, second):
        far_weight = w.max()
        assert len(labels) == thin.epoch_size and (w == far_weight).sum() == thin.drawn == -(-n_far // 4)
        assert (labels == 1).sum() == (train.label == 1).sum()
        assert ((labels == 0) & (w < far_weight)).sum() == near_rest
        assert w.mean() == pytest.approx(1, abs=1e-3) and far_weight / w.min() == pytest.approx(n_far / thin.drawn)
    assert first[0] != second[0]  # a fresh draw and order each epoch
    again = make_feed(tf.constant(train.counts), train, 64, True, 7, thin.weights(), thin=thin)
    assert epoch(again)[0] == first[0]  # seeded


def test_the_detector_trains_on_the_thinned_epoch_with_its_weights(session):
    """DecoderHyperModel wires the thinning into fit: one epoch takes ceil(epoch_size / batch) steps;
    class weights multiply the thinning weights."""
    from host.data.prepare import prepare
    from host.train.fit import DecoderHyperModel

    prepared = prepare(session)
    config = TrainConfig(task="grasp-phase", hyperparameters=SMALL_HP, rest_sample=4, batch_size=64, epochs=1,
                         verbose=0)
    hypermodel = DecoderHyperModel(prepared, config)
    thin, labels = hypermodel.thinning(), hypermodel.sets["train"].label
    assert thin.epoch_size < len(labels) / 2 and np.array_equal(hypermodel.loss_weights(), thin.weights())
    hp = fixed_hp(SMALL_HP)
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model)
    assert int(model.optimizer.iterations) == -(-thin.epoch_size // 64)  # the steps the epoch applied
    weighted = DecoderHyperModel(prepared, TrainConfig(task="grasp-phase", hyperparameters=SMALL_HP, rest_sample=4,
                                                       class_weights=True))
    assert np.allclose(weighted.loss_weights(), class_weight_vector(labels, 2)[labels] * thin.weights())
    every = TrainConfig(task="grasp-phase", hyperparameters=SMALL_HP, rest_sample=1)
    assert DecoderHyperModel(prepared, every).loss_weights() is None and TrainConfig(
        task="grasp-phase", hyperparameters=SMALL_HP).rest_sample == 4  # the detector's default


def test_rest_sampling_is_refused_for_tasks_without_rest_windows(session, tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    result = CliRunner().invoke(main, ["train", str(session), "--task", "object", "--rest-sample", "4",
                                       "--models-dir", str(tmp_path)])
    assert result.exit_code != 0 and "grasp-phase detector only" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_tune_then_train_with_the_best_hyperparameters(session, tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["tune", str(session), "--task", "object", "--max-trials", "2", "--epochs", "1",
                                  "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    best_file = tmp_path / "ZRec50-object-tuning" / "best_hyperparameters.json"
    best = json.loads(best_file.read_text())
    assert set(best["hyperparameters"]) == set(SEARCH_SPACE) and best["objective"].startswith("val_accuracy")
    assert best["lstm"] == default_lstm()  # the layer every trial trained, not a hyperparameter to train with
    rows = (tmp_path / "ZRec50-object-tuning" / "results.tsv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial\tval_accuracy")
    layer = rows[0].split("\t").index("lstm")
    assert {row.split("\t")[layer] for row in rows[1:]} == {default_lstm()}
    result = runner.invoke(main, ["train", str(session), "--task", "object", "--hp-file", str(best_file),
                                  "--epochs", "1", "--models-dir", str(tmp_path), "--name", "tuned"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["hyperparameters"] == best["hyperparameters"]


def test_a_best_file_naming_more_than_the_searched_hyperparameters_is_refused(session, tmp_path):
    """A stray value (the layer, say) would override --lstm unrecorded: one line, exit 2, no model."""
    from click.testing import CliRunner

    from host.cli import main

    best = tmp_path / "best.json"
    best.write_text(json.dumps({"hyperparameters": {**SMALL_HP, "lstm": "keras"}}))
    result = CliRunner().invoke(main, ["train", str(session), "--task", "object", "--hp-file", str(best),
                                       "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "lstm not among the searched hyperparameters" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not list(tmp_path.glob("ZRec50-*"))


def test_a_trials_layer_is_the_searchs_not_the_workers(session):
    """In a search the layer is a fixed value of the space, set by the chief: a worker whose own
    default (its TrainConfig.lstm) differs builds the trial's layer, the one recorded for the trial."""
    from host.data.prepare import prepare
    from host.train.fit import LAYER_HP, DecoderHyperModel

    worker = DecoderHyperModel(prepare(session), TrainConfig(task="object", hyperparameters={}, epochs=1, lstm="fused"))
    trial = fixed_hp(SMALL_HP)
    trial.Fixed(LAYER_HP, "keras")  # what the chief's space holds
    assert type(worker.build(trial).get_layer("bilstm_0")).__name__ == "Bidirectional"
    own = fixed_hp(SMALL_HP)  # a training run: no trial value, the config's layer
    assert type(worker.build(own).get_layer("bilstm_0")).__name__ == "FusedBiLSTM" and own.get(LAYER_HP) == "fused"


def test_sweep_follows_the_validation_rule(session, tmp_path):
    from host.train.sweep import run_sweep

    config = TrainConfig(task="object", hyperparameters=SMALL_HP, epochs=1, verbose=0)
    folder = run_sweep(session, config, tmp_path, None, shares=(0.8, 0.3))
    rows = json.loads((folder / "sweep.json").read_text())["rows"]
    assert [r["validation_share"] for r in rows] == [0.2, 0.3]
    assert rows[1]["test_trials"] > rows[0]["test_trials"]
    assert (folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sweep_scores_the_aperture_regressor_by_r2(session, tmp_path):
    from host.train.sweep import run_sweep

    config = TrainConfig(task="aperture", hyperparameters=SMALL_HP, epochs=1, verbose=0)
    folder = run_sweep(session, config, tmp_path, None, shares=(0.8, 0.4))
    assert folder.name == "ZRec50-aperture-sweep"
    rows = json.loads((folder / "sweep.json").read_text())["rows"]
    assert [r["train_val_share"] for r in rows] == [0.8, 0.4] and rows[1]["test_trials"] > rows[0]["test_trials"]
    assert all(r["units"] == "mm" and np.isfinite(r["r2"]) and r["rmse"] > 0 and "accuracy" not in r for r in rows)
    assert (folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tune_the_aperture_regressor_by_validation_loss(session, tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    result = CliRunner().invoke(main, ["tune", str(session), "--task", "aperture", "--max-trials", "2",
                                       "--epochs", "1", "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "best (validation loss" in result.output
    folder = tmp_path / "ZRec50-aperture-tuning"
    best = json.loads((folder / BEST).read_text())
    assert best["objective"].startswith("val_loss (minimum") and best["task"] == "aperture"
    rows = [line.split("\t") for line in (folder / "results.tsv").read_text().strip().splitlines()]
    assert rows[0][:2] == ["trial", "val_loss"] and len(rows) == 3
    assert float(rows[1][1]) <= float(rows[2][1])  # lowest loss first
    assert best["best_val_loss"] == pytest.approx(float(rows[1][1]), rel=1e-3)


def test_cli_refuses_unknown_animal_and_bad_overrides(session, tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    runner = CliRunner()
    other = tmp_path / "session.neo.mat"
    other.write_bytes(session.read_bytes())
    result = runner.invoke(main, ["train", str(other), "--task", "object", "--models-dir", str(tmp_path),
                                  "--preset", "M"])
    assert result.exit_code == 2 and "one-layer" in result.output  # presets are named by what they are
    result = runner.invoke(main, ["train", str(session), "--task", "object", "--hp", "units=lots",
                                  "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "units takes int values" in result.output
    result = runner.invoke(main, ["train", str(session), "--task", "object", "--hp", "depth=3",
                                  "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "NAME one of bilstm_layers" in result.output
    result = runner.invoke(main, ["train", str(session), "--task", "object", "--hp-file", str(session),
                                  "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "not a tuning result" in result.output
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing half-written


@pytest.mark.slow
def test_the_aperture_decoder_beats_wiener_and_kalman_and_passes_the_int8_gate_unless_miscalibrated(tmp_path, write_session):
    from click.testing import CliRunner

    from host.cli import main

    path = write_session(60, 200, seed=6, difficulty=0.7, folder=tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(path), "--task", "aperture", "--models-dir", str(tmp_path / "m"),
                                  "--name", "ap"])
    assert result.exit_code == 0, result.output
    assert "preset one-layer-light" in result.output
    assert "Wiener filter" in result.output and "Kalman filter" in result.output and "RMSE by phase" in result.output
    folder = tmp_path / "m" / "ap"
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert manifest["task"] == "aperture" and manifest["data"]["target"] == {"name": "aperture", "units": "mm"}
    assert manifest["config"]["epoch_sample"] == 3
    low, high = manifest["calibration"]["training_target_range"]
    assert 0 < low < high
    test = metrics["test"]
    assert set(test["per_phase"]) == {"rest", "reach", "hold", "release"}
    assert test["r2"] > metrics["baseline"]["wiener"]["r2"] > metrics["baseline"]["kalman"]["r2"] > 0.1
    assert (folder / "report.png").stat().st_size > 10_000
    with np.load(folder / "test_set.npz") as npz:
        assert npz["target"].shape == npz["label"].shape and npz["target"].dtype == np.float32
    result = runner.invoke(main, ["quantize", str(folder)])
    assert result.exit_code == 0, result.output
    assert "all" in result.output and "(100%)" in result.output  # Edge TPU check: every op maps
    result = runner.invoke(main, ["check-quant", str(folder)])
    assert result.exit_code == 0 and "PASS: R2 drop <= 0.01, RMS difference <= 1 mm" in result.output, result.output
    q = json.loads((folder / "manifest.json").read_text())["quantization"]
    assert q["int8_r2_drop"] <= 0.01 and q["int8"]["rms_error"] < 1.0
    with np.load(folder / "test_set.npz") as npz:
        assert npz["int8_output"].shape == (len(npz["label"]), 1) and "target" in npz.files
    # a broken calibration: near-silent windows set the ranges, so busy windows saturate
    quiet = np.random.default_rng(0).poisson(0.05, (50, 12, 60)).astype(np.float32)
    np.save(tmp_path / "quiet.npy", quiet)
    assert runner.invoke(main, ["quantize", str(folder), "--representative", str(tmp_path / "quiet.npy")]).exit_code == 0
    result = runner.invoke(main, ["check-quant", str(folder)])
    assert result.exit_code == 1 and "FAIL: int8 R2 is" in result.output and "mm RMS" in result.output, result.output


def test_the_default_layer_projects_in_bfloat16_only_where_the_cpu_multiplies_it_natively(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\n")
    assert default_lstm(str(cpuinfo)) == "fused"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert default_lstm(str(cpuinfo)) == "fused-bf16"
    cpuinfo.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert default_lstm(str(cpuinfo)) == "fused-bf16"
    assert default_lstm(str(tmp_path / "absent")) == "fused"  # no /proc (macOS, Windows): float32
    assert TrainConfig(task="object", hyperparameters=SMALL_HP).lstm == default_lstm()  # resolved, so recorded


def test_an_unknown_lstm_layer_is_one_line():
    from host.errors import GrasptpuError

    with pytest.raises(GrasptpuError, match="--lstm 'cudnn': choose one of fused-bf16, fused, keras, grouped"):
        TrainConfig(task="object", hyperparameters=SMALL_HP, lstm="cudnn")


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_negative_seed_is_refused_before_anything_is_read(session, tmp_path, command):
    """numpy's generators take no negative seed: said of the option, not a traceback from the split."""
    from click.testing import CliRunner

    from host.cli import main

    result = CliRunner().invoke(main, [command, str(session), "--seed", "-1", "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())
