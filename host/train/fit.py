"""Fit a BiLSTM decoder: one set-up shared by `grasptpu train` and `grasptpu tune`.

`DecoderHyperModel` is a KerasTuner `HyperModel`: `build(hp)` makes the model (`build_model`,
with the training windows' statistics frozen in) and `fit(hp, model, ...)` feeds the windows and
adds early stopping and the learning-rate schedule. A fixed configuration (`train`) passes
hyperparameters that are all fixed; the tuner passes the ones it draws. So a tuned score and a
trained model come from the very same code path.

Windows reach Keras through a tf.data pipeline that gathers each batch from the binned counts
in-graph (see `make_feed`), so memory holds the counts once plus one index per window.
Validation uses the validation split only; the test split is touched by evaluation alone.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from dataclasses import asdict, dataclass

import keras_tuner as kt
import numpy as np

from host.data.prepare import Prepared, assert_disjoint
from host.data.windows import WindowSet
from host.errors import GrasptpuError
from host.train.config import LAYER_HP, TrainConfig, usable_cores


@dataclass
class TrainResult:
    model: object
    history: dict
    seconds: float
    epochs_run: int
    best_epoch: int
    train_windows: int
    epoch_windows: int  # windows one epoch trains on (fewer than train_windows when sampled or thinned)

    @property
    def windows_per_second(self) -> float:
        return self.epoch_windows * self.epochs_run / max(self.seconds, 1e-9)


def keras_verbosity(verbose: int | None = None) -> int:
    """Keras' `verbose`: as given, else a progress bar on a terminal and one line per epoch in logs."""
    return verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)


_THREADS: list = []  # the (intra, inter) this process chose; the first choice stands


def _first_choice_stands(chosen: list, choose):
    """What the first call in this process chose (`choose()`, kept in `chosen`): TensorFlow takes
    its threads and graph options only before it runs, so a later call cannot change them and gets
    the first choice back (use_threads, graph_rewrites)."""
    if not chosen:
        chosen.append(choose())
    return chosen[0]


def use_threads(cores: int | None = None, per_op: int = 1) -> tuple[int, int]:
    """TensorFlow's threads for training, (intra-op, inter-op): each op on `per_op` thread, up to
    `cores` ops at once (default: every usable core); 0 leaves either to TensorFlow. The BiLSTM's
    ops are small (batch 256 x 40 units), so splitting one op over the cores cost more than it gave,
    while independent ops (the two directions, the gates) run side by side: one epoch of MRec41's
    detector 5.1 s against 5.7 s with TensorFlow's default (each op on 2 threads), ZRec50's 2.4
    against 2.6 s, measured on 2 cores (tools/profile_train.py --tf-threads; measure again on a
    machine with many more). The first call in a process stands (a tune worker's --threads, then
    the hypermodel's default call); it must come before TensorFlow runs an op, else TensorFlow
    keeps what it started with, and the pair returned is what it reports (0: its own choice)."""
    import tensorflow as tf

    def choose() -> tuple[int, int]:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(per_op)
            tf.config.threading.set_inter_op_parallelism_threads(usable_cores() if cores is None else cores)
        except RuntimeError:  # TensorFlow already runs: it keeps its threads
            pass
        return (tf.config.threading.get_intra_op_parallelism_threads(),
                tf.config.threading.get_inter_op_parallelism_threads())
    return _first_choice_stands(_THREADS, choose)


_REWRITES: list = []  # whether TensorFlow's graph optimiser runs in this process; the first choice stands


def graph_rewrites(enabled: bool = False) -> bool:
    """Whether TensorFlow's graph optimiser (grappler) rewrites this process's graphs: off for
    training, because it rewrites every new graph, the unrolled training step (thousands of ops)
    once and each epoch's tf.data iterators again, and nothing it rewrote here ran faster. MRec41's
    object classifier, 3 paired runs of 10 epochs: first training step 4.5-5.6 s with it, 3.8-4.1 s
    without; later epochs alike (0.88, 0.96, 1.05 against 0.89, 0.97, 0.92 s: this machine's drift);
    MRec41's detector 4.7 against 4.4 s per epoch. The reference way (tools/bench_reference.py)
    keeps TensorFlow's default. Returns the choice that stands (set before any graph is built)."""
    import tensorflow as tf

    def choose() -> bool:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
        return bool(enabled)
    return _first_choice_stands(_REWRITES, choose)


def class_weight_vector(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights, mean 1 over the windows (classes absent from training get 0)."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return np.divide(len(labels), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)


def epoch_windows(n: int, sample: int) -> int:
    """Windows drawn per epoch when each epoch takes a fresh random 1/`sample` of `n`."""
    return -(-n // max(sample, 1))


def make_feed(counts, windows: WindowSet, batch_size: int, shuffle: bool, seed: int,
              weights: np.ndarray | None = None, sample: int = 1, thin: Thinning | None = None,
              autotune: bool = False):
    """A tf.data pipeline over a WindowSet: batches gathered in-graph from `counts`, the session's
    counts as one tensor that every feed of the session shares (one copy, however many feeds).
    `weights` are per-window loss weights (None: all 1). With `shuffle` and `sample` > 1, each
    epoch draws a fresh random 1/`sample` of the windows (the shuffle is redrawn every epoch and
    cut short), so over epochs every window is seen. With `thin` (the detector's far rest windows),
    each epoch keeps every other window and a fresh random share of the thinned ones.

    Only the compact counts (uint8) and one int64 row index per window live in memory; each
    batch's windows are gathered and cast to float32 inside TensorFlow, in parallel with the
    training step. Measured here on a BiLSTM(40) over 369 units, batch 256: 29 ms/step, against
    36 ms for a materialised float32 array and ~45 ms for a Python `PyDataset`.
    `autotune` turns tf.data's autotuner on, for tools/profile_train.py to show what it costs.
    """
    import tensorflow as tf

    offsets = tf.range(-(windows.window_bins - 1), 1, dtype=tf.int64)
    labels = windows.label.astype(np.int32) if windows.target is None else windows.target.astype(np.float32)
    if weights is not None and len(weights) != len(labels):
        raise ValueError(f"weights must hold one loss weight per window: got {len(weights)}, expected {len(labels)}")
    columns = [tf.constant(windows.end_row.astype(np.int64)), tf.constant(labels),
               *(() if weights is None else (tf.constant(np.asarray(weights, np.float32)),))]
    if shuffle:
        thin = thin if thin is not None and thin.keep > 1 else None
        take = epoch_windows(thin.epoch_size if thin else len(labels), sample)
        order = _epoch_order(len(labels), take, thin)
        # one fresh seed pair per pass over the feed (= per epoch), drawn from `seed`: reproducible runs
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)
        ds = seeds.flat_map(lambda pair: tf.data.Dataset.from_tensor_slices(order(pair)))
        ds = ds.apply(tf.data.experimental.assert_cardinality(take))  # Keras then knows an epoch's steps
    else:
        ds = tf.data.Dataset.range(len(labels))

    def gather(index):
        end_rows, *rest = (tf.gather(c, index) for c in columns)
        return (tf.cast(tf.gather(counts, end_rows[:, None] + offsets[None, :]), tf.float32), *rest)

    # tf.data's autotuner made the step after an epoch wait 3-4 s (1 core busy) in about half the
    # epochs of MRec41's detector: deleting the spent iterator waits for the autotuner's thread
    # (tools/profile_train.py, "epoch turnover")
    options = tf.data.Options()
    options.autotune.enabled = autotune
    ds = ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
    return ds.with_options(options)


def _epoch_order(n: int, take: int, thin: Thinning | None):
    """The graph function giving one epoch's `take` window indices from a seed pair: a permutation of
    all `n` windows cut short, or (thinning) every window outside the mask plus a fresh 1/`keep` of
    those inside, shuffled together. One vectorised shuffle per epoch, not tf.data's element-wise
    shuffle buffers: the MRec41 detector's feed alone went from 0.64 to 0.12 s of an epoch
    (tools/profile_train.py), time the training step no longer shares its two cores with."""
    import tensorflow as tf

    shuffle = tf.random.experimental.stateless_shuffle
    if thin is None:
        return lambda pair: shuffle(tf.range(n, dtype=tf.int64), seed=pair)[:take]
    inside, outside = (tf.constant(np.flatnonzero(m).astype(np.int64)) for m in (thin.mask, ~thin.mask))

    def order(pair):
        drawn = shuffle(inside, seed=pair)[:thin.drawn]
        return shuffle(tf.concat([drawn, outside], 0), seed=pair + 1)[:take]

    return order


@dataclass(frozen=True)
class Thinning:
    """Each epoch trains on every window outside `mask` and a fresh random 1/`keep` of those in it.

    The detector's rest windows outnumber its grasp windows ~10:1 and neighbours share 11 of 12
    bins, but the rest windows next to a grasp phase are the hard ones: so only the far rest
    windows (`far_rest`) are thinned, and `weights` makes the thinned epoch's loss an unbiased
    estimate of the loss over all windows.
    """

    mask: np.ndarray
    keep: int

    @property
    def drawn(self) -> int:
        return -(-int(np.count_nonzero(self.mask)) // self.keep)

    @property
    def epoch_size(self) -> int:
        return len(self.mask) - int(np.count_nonzero(self.mask)) + self.drawn

    def weights(self) -> np.ndarray:
        """Per-window loss weights: a thinned window stands for `n_masked / drawn` windows; all are
        scaled so their mean over an epoch's windows is 1 (Keras averages weighted losses over the
        batch, so the regularisation keeps its share of the loss)."""
        w = np.ones(len(self.mask))
        w[self.mask] = np.count_nonzero(self.mask) / max(self.drawn, 1)
        return w * self.epoch_size / max(len(self.mask), 1)


def far_rest(windows: WindowSet) -> np.ndarray:
    """Rest windows (label 0) whose last bin is more than a window's length from every grasp window's:
    the easy negatives. The ones nearer overlap a grasp phase's edge, where a detector errs."""
    grasp = np.sort(windows.end_row[windows.label == 1])
    if len(grasp) == 0:
        return windows.label == 0
    pos = np.searchsorted(grasp, windows.end_row)
    nearest = np.minimum(np.abs(windows.end_row - grasp[np.maximum(pos - 1, 0)]),
                         np.abs(grasp[np.minimum(pos, len(grasp) - 1)] - windows.end_row))
    return (windows.label == 0) & (nearest > windows.window_bins)


def input_statistics(windows: WindowSet, max_windows: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit mean and variance of the training windows' counts (a seeded sample if many)."""
    n = len(windows)
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, max_windows), replace=False))
    x = windows.batch(idx).reshape(-1, windows.counts.shape[1]).astype(np.float64)
    return x.mean(axis=0), x.var(axis=0)


def trial_seed(seed: int, values: dict) -> int:
    """The seed of one search trial's weights and dropout: from the search's seed and the trial's own
    hyperparameter values, not from the models this process built before it, so a trial trains the
    same on any worker and in any order (docs/tuning.md, "Which trials, in which order")."""
    return (seed + zlib.crc32(json.dumps(values, sort_keys=True).encode())) % 2**32


class DecoderHyperModel(kt.HyperModel):
    """The decoder for one task of one prepared session: `build` and `fit`, for train and tune alike.

    Creating it seeds Keras (weights, dropout) and checks that no test trial feeds training or
    validation; the test windows are never touched here. With `seed_per_trial` (a search's) each
    build seeds Keras again, from `trial_seed`.
    """

    def __init__(self, prepared: Prepared, config: TrainConfig, seed_per_trial: bool = False) -> None:
        import keras

        super().__init__(name=f"bilstm-{config.task}")
        use_threads()
        graph_rewrites()
        self.config = config
        self.sets = prepared.windows(config.task)
        assert_disjoint(self.sets)
        if len(self.sets["train"]) == 0 or len(self.sets["validation"]) == 0:
            raise GrasptpuError(f"no {config.task} windows to train or validate on: the trials are shorter than a "
                                f"window ({self.sets['train'].window_bins} bins) or the split left none")
        keras.utils.set_random_seed(config.seed)
        self.n_classes = len(self.sets["train"].label_names)
        self.mean, self.var = input_statistics(self.sets["train"], seed=config.seed)
        target = self.sets["train"].target
        self.target_scale = None if target is None else (float(target.mean()), float(target.std() or 1.0))
        self.early_stopping = None
        self.announce = None  # called with built_layer() of each model built (a tuning worker's log)
        self.seed_per_trial = seed_per_trial
        k = config.rest_sample
        self._thinning = Thinning(far_rest(self.sets["train"]), k) if k > 1 else None

    def build(self, hp):
        from host.train.model import build_model, built_layer

        train = self.sets["train"]
        lstm = hp.Fixed(LAYER_HP, self.config.lstm)  # a trial's value (the chief's) if it has one
        if self.seed_per_trial:
            import keras

            keras.utils.set_random_seed(trial_seed(self.config.seed, hp.values))
        model = build_model(hp, train.counts.shape[1], self.n_classes, train.window_bins, self.mean, self.var,
                            self.target_scale, lstm=lstm)
        if self.announce:
            self.announce(built_layer(model))
        return model

    def thinning(self) -> Thinning | None:
        """The detector's far rest windows, thinned per epoch (`rest_sample`); None for other tasks."""
        return self._thinning

    def loss_weights(self) -> np.ndarray | None:
        """Per-window loss weights: inverse class frequency if asked, times the thinned windows'
        up-weighting; None when all are 1 (the regressor, and the classifiers by default)."""
        labels, thin = self.sets["train"].label, self.thinning()
        if self.target_scale is not None or not (self.config.class_weights or thin):
            return None
        weights = np.ones(len(labels))
        if self.config.class_weights:
            weights *= class_weight_vector(labels, self.n_classes)[labels]
        return weights * thin.weights() if thin else weights

    def schedule(self) -> list:
        """Early stopping (kept as `early_stopping`, for its best epoch) and the learning-rate
        halving on a plateau: a classifier stops on validation accuracy (gains under stop_min_delta
        are noise), a regressor on validation loss, relative to the target's variance in the same
        proportion. One fit's worth: make new ones for every fit."""
        import keras

        c = self.config
        monitor, mode, delta = (("val_loss", "min", c.stop_min_delta * self.target_scale[1] ** 2)
                                if self.target_scale is not None else ("val_accuracy", "max", c.stop_min_delta))
        self.early_stopping = keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=c.stop_patience, min_delta=delta, restore_best_weights=True)
        return [self.early_stopping,
                keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=c.lr_patience)]

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        """Train `model` on the training windows, validated on the validation windows, with
        `schedule()`: early stopping (best weights restored) and the learning-rate halving.
        Extra `callbacks` (the tuner's) are added to these; positional data arguments are ignored."""
        import tensorflow as tf

        from host.train.validate import bin_validation

        c, train = self.config, self.sets["train"]
        counts = tf.constant(np.asarray(train.counts))  # the session's counts, shared by the feed and validation
        train_feed = make_feed(counts, train, c.batch_size, True, c.seed, self.loss_weights(), c.epoch_sample,
                               self.thinning())
        validation = bin_validation(model, counts, self.sets["validation"])  # None: Keras' layer
        val_feed = None if validation else make_feed(counts, self.sets["validation"], 1024, False, c.seed)
        return model.fit(train_feed, validation_data=val_feed, epochs=kwargs.pop("epochs", c.epochs),
                         callbacks=[*([validation] if validation else []), *self.schedule(), *callbacks],
                         verbose=keras_verbosity(kwargs.pop("verbose", c.verbose)),
                         shuffle=False)  # the tf.data feed shuffles, seeded


def train(prepared: Prepared, config: TrainConfig) -> TrainResult:
    """Fit a model with the config's fixed hyperparameters."""
    from host.train.model import fixed_hp

    hypermodel = DecoderHyperModel(prepared, config)
    hp = fixed_hp(config.hyperparameters)
    model = hypermodel.build(hp)
    t0 = time.perf_counter()
    hist = hypermodel.fit(hp, model)
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    best = int(hypermodel.early_stopping.best_epoch) + 1  # the epoch whose weights were restored
    n, thin = len(hypermodel.sets["train"]), hypermodel.thinning()
    return TrainResult(model, history, seconds, len(history["val_loss"]), best, n,
                       epoch_windows(thin.epoch_size if thin else n, config.epoch_sample))


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
