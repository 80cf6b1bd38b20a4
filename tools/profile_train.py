"""Where one training epoch's time goes: the input feed alone, a training epoch, and the validation
pass, for each layer `grasptpu train --lstm` offers (host.train.model.TRAINING_LSTMS: our fused
layer with a bfloat16 or float32 projection, Keras' LSTM unrolled over the window, the grouped
mode) and Keras' default while-loop ("keras-loop", the reference way), optionally under XLA.

Each variant builds the session's default model (its preset, seeded), runs one warm-up epoch
(tracing), then times `--repeat` more epochs and validation passes on the same feeds `grasptpu
train` uses, and its validation (each bin projected once for the fused layers, host/train/validate.py;
Keras' evaluate for Keras' layers) (medians). Prints windows per second and the ratio to the first variant listed (by default Keras'
unrolled layer), measured in the same run.
Usage: python tools/profile_train.py data/ZRec50.neo.mat --task grasp-phase [--variants keras,fused,fused-bf16]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from host.train.model import LSTM_KINDS  # noqa: E402  (after the path insert)

VARIANTS = (*LSTM_KINDS, *(f"{kind}-xla" for kind in LSTM_KINDS))


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _variant(hypermodel, hp, name: str):
    """The session's model with the variant's LSTM layer, compiled with or without XLA."""
    import keras

    from host.train.model import build_model, build_training_state

    keras.utils.set_random_seed(hypermodel.config.seed)
    train = hypermodel.sets["train"]
    model = build_model(hp, train.counts.shape[1], hypermodel.n_classes, train.window_bins, hypermodel.mean,
                        hypermodel.var, hypermodel.target_scale, lstm=name.removesuffix("-xla"))
    if name.endswith("xla"):
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=True,
                      steps_per_execution=model.steps_per_execution)
        build_training_state(model, hypermodel.target_scale is not None)  # the recompile's metrics
    return model


def _validation(model, counts, windows, feed):
    """The validation pass training runs for this model: each bin projected once
    (host/train/validate.py), or Keras' evaluate for Keras' layers."""
    from host.train.validate import bin_validation

    fast = bin_validation(model, counts, windows)
    if fast is None:
        return lambda: model.evaluate(feed, verbose=0)
    fast.set_model(model)
    return fast.scores


@click.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", type=click.Choice(["object", "grasp-phase"]), default="grasp-phase", show_default=True)
@click.option("--variants", default="keras,fused,fused-bf16", show_default=True,
              help=f"Comma-separated, of {', '.join(VARIANTS)}.")
@click.option("--rest-sample", type=click.IntRange(min=1), default=None, help="As grasptpu train (default: its own).")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Epochs and validation passes timed per variant (after the warm-up); the median is printed "
                   "(one epoch's time drifts by 10-30 % between processes on this machine, less within one).")
@click.option("--turnover-epochs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Epochs (with validation) to time the wait at each epoch's start, tf.data's autotuner on "
                   "and off, with the first variant; 0 skips it.")
@click.option("--tf-threads", default="", metavar="INTRA,INTER",
              help="TensorFlow's intra-op and inter-op threads, e.g. 2,2 for its default on 2 cores. Default: "
                   "grasptpu's (1 per op, every core for ops side by side; host.train.fit.use_threads).")
def main(recording: Path, task: str, variants: str, rest_sample: int | None, repeat: int, turnover_epochs: int,
         tf_threads: str) -> None:
    """Time the feed, a training epoch and a validation pass per variant."""
    import numpy as np
    import tensorflow as tf

    from host.train.fit import use_threads

    try:
        intra, inter = (int(x) for x in tf_threads.split(",")) if tf_threads else (1, None)
    except ValueError:
        raise click.BadParameter("expected INTRA,INTER, e.g. 2,2", param_hint="--tf-threads") from None
    threads = use_threads(inter, intra)  # before the hypermodel's own call, which then keeps these

    from host.data.prepare import prepare
    from host.errors import GrasptpuError
    from host.train.config import TrainConfig, preset_for
    from host.train.fit import DecoderHyperModel, make_feed
    from host.train.model import fixed_hp, preset

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; known: {', '.join(VARIANTS)}", param_hint="--variants")
    name, _ = preset_for(recording.name, "auto", task)
    try:
        config = TrainConfig(task=task, hyperparameters=preset(name), rest_sample=rest_sample)
    except GrasptpuError as exc:
        raise click.UsageError(str(exc)) from None
    hypermodel = DecoderHyperModel(prepare(recording), config)
    train, val = hypermodel.sets["train"], hypermodel.sets["validation"]
    counts = tf.constant(np.asarray(train.counts))
    feed = make_feed(counts, train, config.batch_size, True, config.seed, hypermodel.loss_weights(),
                     config.epoch_sample, hypermodel.thinning())
    val_feed = make_feed(counts, val, 1024, False, config.seed)
    per_epoch = sum(1 for _ in feed.unbatch())
    print(f"profile: {recording.name}, {task}, preset {name}; training split {len(train)} windows "
          f"({per_epoch} per epoch, rest_sample {config.rest_sample}), validation split {len(val)}; "
          f"batch {config.batch_size}; {os.cpu_count()} CPU cores; TensorFlow threads intra-op {threads[0]}, "
          f"inter-op {threads[1]}")
    print(f"  feed alone (gather + cast, no model): {_time(lambda: sum(1 for _ in feed)):.2f} s per epoch")
    base = None
    for v in chosen:
        model = _variant(hypermodel, fixed_hp(config.hyperparameters), v)
        warm = _time(lambda: model.fit(feed, epochs=1, verbose=0))
        epoch = float(np.median([_time(lambda: model.fit(feed, epochs=1, verbose=0)) for _ in range(repeat)]))
        validate = _validation(model, counts, val, val_feed)
        validate()  # tracing
        evaluation = float(np.median([_time(validate) for _ in range(repeat)]))
        base = base or (v, epoch + evaluation)
        print(f"  {v:<13} warm-up epoch {warm:6.1f} s | epoch {epoch:6.2f} s ({per_epoch / epoch:6.0f} windows/s) "
              f"+ validation {evaluation:5.2f} s ({len(val) / evaluation:6.0f} windows/s) | "
              f"{base[1] / (epoch + evaluation):4.2f}x {base[0]}")
    if turnover_epochs:
        hp = fixed_hp(config.hyperparameters)
        for autotune in (True, False):
            feeds = (make_feed(counts, train, config.batch_size, True, config.seed, hypermodel.loss_weights(),
                               config.epoch_sample, hypermodel.thinning(), autotune=autotune),
                     make_feed(counts, val, 1024, False, config.seed, autotune=autotune))
            _turnover(_variant(hypermodel, hp, chosen[0]), feeds, turnover_epochs, autotune, chosen[0])


def _turnover(model, feeds: tuple, epochs: int, autotune: bool, variant: str) -> None:
    """Fit `epochs` epochs with Keras' validation on the tf.data feed (the autotuner's wait is the
    feeds'); print the mean epoch and the wait between an epoch's start and its first step (the
    first epoch, tracing, left out)."""
    import keras

    walls, waits = [], []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                waits.append(time.perf_counter() - self.t0)

        def on_epoch_end(self, epoch, logs=None):
            walls.append(time.perf_counter() - self.t0)

    model.fit(feeds[0], validation_data=feeds[1], epochs=epochs, verbose=0, callbacks=[Clock()])
    walls, waits = walls[1:] or walls, waits[1:] or waits
    print(f"  epoch turnover, {variant}, tf.data autotuner {'on ' if autotune else 'off'}: {len(walls)} epochs with "
          f"validation, mean {sum(walls) / len(walls):5.2f} s; wait before the first step mean "
          f"{sum(waits) / len(waits):4.2f} s, max {max(waits):4.2f} s")


if __name__ == "__main__":
    main()
