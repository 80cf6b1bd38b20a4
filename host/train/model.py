"""The BiLSTM decoder: one builder of hyperparameters, for fixed configs and the tuner alike.

Architecture (the paper, §4.2 and Table 2; docs/method.md, "Model"): per-unit input
standardisation (statistics of the training windows, frozen; our addition, not the paper's),
then 1-4 bidirectional LSTM layers (the last returns only its final state), then a Dense softmax.
Dropout is LSTM input dropout; kernel and recurrent regularisation are none / L1 / L2 / L1+L2
with factor 0.01.

Why grasptpu's own layer for training (host/train/bilstm.py, `lstm="fused-bf16"`): the tuner
needs many fits and the CPU's time goes into the first layer's input projection. The layer is
Keras' LSTM arithmetic and input dropout, unrolled over the 12 bins (the same recurrence without
TensorFlow's while-loop: 2.0x on MRec41's two-layer detector), with every bin's projection in one
matmul, done in bfloat16 during training steps where the CPU multiplies bfloat16 natively
(`default_lstm`; else `lstm="fused"`, the same in float32); its figures against Keras' own unrolled layer
(`lstm="keras"`) are in docs/method.md, "Training speed". `lstm="grouped"` shares input dropout masks within groups of windows (faster, less
accurate), `lstm="keras-loop"` is Keras' default while-loop, the reference way.

It is *not* what goes to the board. Measured here (tensorflow 2.21, keras 3.15): full-int8
conversion of `Bidirectional(LSTM)` crashes inside the calibrator, and `LSTM(unroll=True)`
converts but emits UNPACK, which the Edge TPU does not support, so the compiler would cut the
graph there. The quantisation stage therefore copies these trained
weights into an export graph of Edge-TPU-listed ops (FULLY_CONNECTED, ADD, MUL, LOGISTIC, TANH,
CONCATENATION, RESHAPE, SPLIT / STRIDED_SLICE, SOFTMAX) and proves it computes the same outputs.
"""

from __future__ import annotations

import numpy as np

SEARCH_SPACE = {
    "bilstm_layers": [1, 2, 3, 4],
    "units": [16, 32, 40, 64],
    "dropout": [0.0, 0.2, 0.4, 0.6, 0.7, 0.8],
    "kernel_regularizer": ["none", "l1", "l2", "l1_l2"],
    "recurrent_regularizer": ["none", "l1", "l2", "l1_l2"],
    "learning_rate": [1e-2, 1e-3, 1e-4],
}
REGULARISATION = 0.01  # the paper's Table 2: L1 = L2 = 0.01
# The paper's two selected configurations (Table 2, docs/method.md), named by what they are: the
# two-layer one was selected for monkey M's sessions, the one-layer one for monkey Z's; the paper
# re-uses them for the grasp detector.
PRESETS = {
    "two-layer": {"bilstm_layers": 2, "units": 40, "dropout": 0.8, "kernel_regularizer": "l2",
          "recurrent_regularizer": "l2", "learning_rate": 1e-3},
    "one-layer": {"bilstm_layers": 1, "units": 40, "dropout": 0.7, "kernel_regularizer": "l2",
          "recurrent_regularizer": "l1_l2", "learning_rate": 1e-3},
    # ours, not the paper's: the one-layer network with light dropout, no L1/L2 and a 10x learning
    # rate; the default of the aperture regressor (docs/method.md, "Training the aperture regressor")
    "one-layer-light": {"bilstm_layers": 1, "units": 40, "dropout": 0.2, "kernel_regularizer": "none",
          "recurrent_regularizer": "none", "learning_rate": 1e-2},
}


def _regularizer(name: str):
    import keras

    return {
        "none": None,
        "l1": keras.regularizers.L1(REGULARISATION),
        "l2": keras.regularizers.L2(REGULARISATION),
        "l1_l2": keras.regularizers.L1L2(REGULARISATION, REGULARISATION),
    }[name]


def build_model(hp, n_units: int, n_classes: int, window_bins: int = 12,
                input_mean: np.ndarray | None = None, input_var: np.ndarray | None = None,
                target_scale: tuple[float, float] | None = None, lstm: str | None = None,
                steps_per_execution: int | None = None):
    """A compiled BiLSTM classifier (or, with `target_scale`, regressor) for ``(window_bins, n_units)``
    count windows.

    Args:
        hp: a `keras_tuner.HyperParameters`; names already fixed in it keep their value, others
            are drawn from `SEARCH_SPACE` (what the tuner explores).
        n_units: units (input features per bin).
        n_classes: output classes (2 for the grasp-phase detector).
        input_mean, input_var: per-unit statistics of the training windows; identity if None.
        target_scale: (mean, sd) of the training targets: a regressor whose one linear output is
            rescaled by them (so the network learns a unit-range value), trained on squared error.
        lstm: one of LSTM_KINDS: our fused layer "fused-bf16" or "fused", or its "grouped" mode
            (host/train/bilstm.py); Keras' `Bidirectional(LSTM)` "keras" (unrolled over the window)
            or "keras-loop" (its default while-loop, the reference way); None: `default_lstm()`.
        steps_per_execution: training steps per call into TensorFlow; None: STEPS_PER_EXECUTION
            (the reference way passes Keras' default, 1).
    Returns:
        A compiled `keras.Model` (Adam; sparse categorical cross-entropy and accuracy, or squared
        error and absolute error).
    """
    import keras

    lstm = lstm or default_lstm()
    layers = hp.Choice("bilstm_layers", SEARCH_SPACE["bilstm_layers"])
    units = hp.Choice("units", SEARCH_SPACE["units"])
    dropout = hp.Choice("dropout", SEARCH_SPACE["dropout"])
    kernel_reg = hp.Choice("kernel_regularizer", SEARCH_SPACE["kernel_regularizer"])
    recurrent_reg = hp.Choice("recurrent_regularizer", SEARCH_SPACE["recurrent_regularizer"])
    learning_rate = hp.Choice("learning_rate", SEARCH_SPACE["learning_rate"])
    mean = np.zeros(n_units) if input_mean is None else np.asarray(input_mean, np.float32)
    var = np.ones(n_units) if input_var is None else np.asarray(input_var, np.float32)

    inputs = keras.Input((window_bins, n_units), name="window")
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=np.maximum(var, 1e-6), name="standardise")(inputs)
    for i in range(layers):
        last = i == layers - 1
        x = _bilstm(lstm, f"bilstm_{i}", units, not last, dropout, kernel_reg, recurrent_reg)(x)
    if target_scale is None:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="softmax")(x)
        loss, scores = "sparse_categorical_crossentropy", ["accuracy"]
    else:  # regression: a linear output in unit range, rescaled to the target's unit (mean, sd of training)
        unit = keras.layers.Dense(1, name="linear")(x)
        outputs = keras.layers.Rescaling(float(target_scale[1]), offset=float(target_scale[0]), name="target")(unit)
        loss, scores = "mse", ["mae"]
    model = keras.Model(inputs, outputs, name="bilstm_decoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=scores,
                  steps_per_execution=steps_per_execution or STEPS_PER_EXECUTION)
    build_training_state(model, target_scale is not None)
    return model


# Training steps per call into TensorFlow (Keras runs them in one graph loop): each call from
# Python costs about as much as a tenth of a step here. MRec41: the detector's epoch 3.41 s with 32
# per call against 4.11 s with 1; the object classifier's 0.76-0.79 s with 33 or 1 000 against
# 0.83-0.89 s with 1 (docs/method.md, "Training speed"). Same steps, same order, same numbers;
# Keras' progress bar moves per call.
STEPS_PER_EXECUTION = 32


def build_training_state(model, regression: bool) -> None:
    """Create the optimiser's and the compiled metrics' variables now (again after a recompile).
    Keras' TensorFlow trainer creates them inside the first trace of the training step, and
    TensorFlow traces a function twice when its first trace creates variables: MRec41's two-layer
    object classifier traced its step in 1.95 s and again in 1.11 s, now once in 1.44 s, in every
    training run and tuning trial."""
    model.optimizer.build(model.trainable_variables)
    y = np.zeros((1,), np.float32 if regression else np.int32)
    model.compute_metrics(None, y, np.zeros((1, model.output_shape[-1]), np.float32), sample_weight=None)
    model.reset_metrics()


# What `grasptpu train --lstm` offers (host.train.config), the default first: our fused layer
# (host/train/bilstm.py) with a bfloat16 or float32 projection, Keras' own unrolled layer, the
# grouped-mask mode. LSTM_KINDS adds Keras' while-loop, the reference way, for the benchmarks.
TRAINING_LSTMS = ("fused-bf16", "fused", "keras", "grouped")
FUSED_LSTMS = ("fused-bf16", "fused", "grouped")  # the kinds built from our layer; the others are Keras'
LSTM_KINDS = (*TRAINING_LSTMS, "keras-loop")
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matmul: without them TensorFlow converts
# bfloat16 in software and the bfloat16 projection would be slower, not faster.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def default_lstm(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The layer `grasptpu train` uses unless told: "fused-bf16" where the CPU multiplies bfloat16
    natively (BF16_CPU_FLAGS), else "fused" (the same layer in float32)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        flags = set()
    return "fused-bf16" if flags & set(BF16_CPU_FLAGS) else "fused"


def _bilstm(kind: str, name: str, units: int, sequences: bool, dropout: float, kernel_reg: str, recurrent_reg: str):
    """One bidirectional LSTM layer of `kind` (LSTM_KINDS), named `name` (the export finds it so)."""
    import keras

    regs = {"kernel_regularizer": _regularizer(kernel_reg), "recurrent_regularizer": _regularizer(recurrent_reg)}
    if kind not in LSTM_KINDS:
        raise ValueError(f"no LSTM kind {kind!r}; known: {LSTM_KINDS}")
    if kind in FUSED_LSTMS:
        from host.train.bilstm import MASK_GROUPS, FusedBiLSTM

        return FusedBiLSTM(units, return_sequences=sequences, dropout=dropout, name=name,
                           mask_groups=MASK_GROUPS if kind == "grouped" else 0,
                           train_precision="bfloat16" if kind == "fused-bf16" else "float32", **regs)
    lstm = keras.layers.LSTM(units, return_sequences=sequences, dropout=dropout, unroll=kind == "keras",
                             name=f"lstm_{name.split('_')[-1]}", **regs)
    return keras.layers.Bidirectional(lstm, name=name)


def built_layer(model) -> str:
    """Which of TRAINING_LSTMS `model`'s first BiLSTM layer is, read off the built layer itself (a
    tuning worker says it per trial): the inverse of `_bilstm`, kept beside it so the two change
    together."""
    from host.train.bilstm import FusedBiLSTM

    layer = model.get_layer("bilstm_0")
    if not isinstance(layer, FusedBiLSTM):
        return "keras" if getattr(layer.forward_layer, "unroll", False) else "keras-loop"
    if layer.mask_groups:
        return "grouped"
    return "fused-bf16" if layer.train_precision == "bfloat16" else "fused"


def fixed_hp(values: dict):
    """HyperParameters with every value fixed: `build_model` then builds exactly that model."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


DEFAULT_PRESET = "one-layer"  # the smaller of the two: fewer weights, faster on the board
REGRESSION_PRESET = "one-layer-light"


def preset(name: str) -> dict:
    """One of the paper's selected configurations (PRESETS)."""
    if name not in PRESETS:
        raise ValueError(f"no preset {name!r}; known: {sorted(PRESETS)}")
    return dict(PRESETS[name])
