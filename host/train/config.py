"""What decides a training run besides the data: one dataclass, light to import.

The training commands' options are generated from the fields declared with `_option`
(`host.cli`), so each option's default, help text and bounds are written here only; the command
line can list them without importing TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from host.errors import GrasptpuError
from host.train.model import TRAINING_LSTMS, default_lstm


# The hyperparameter naming the LSTM layer a model trains (TrainConfig.lstm). In a search it is a
# fixed value of the space, set by the chief's tuner: KerasTuner hands every trial the chief's value,
# so workers whose CPUs default to another layer still train the same one, and each trial records it.
LAYER_HP = "lstm"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM task's or a container's share),
    not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _option(default, help: str, **extra):
    """A TrainConfig field that is also a command-line option (help text and bounds declared here only)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything that decides a training run besides the data (all recorded in the manifest).

    Fields declared with `_option` are the training commands' options (`host.cli` builds them
    from here), so each is spelled once.
    """

    task: str
    hyperparameters: dict
    epochs: int = _option(100, "Maximum epochs (early stopping usually ends sooner).", min=1)
    batch_size: int = _option(256, "Windows per training batch.", min=1)
    stop_patience: int | None = _option(None, "Epochs without a better validation score before stopping. Default: 10 "
                                              "for the classifiers (accuracy), 5 for the aperture regressor (loss).",
                                        min=1)
    stop_min_delta: float = 1e-3  # a gain under 0.1 point of validation accuracy is noise, not progress
    epoch_sample: int | None = _option(None, "Train each epoch on a fresh random 1/K of the training windows (neighbours "
                                             "share 11 of 12 bins, so a share holds nearly all they carry). "
                                             "Default: 3 for the aperture regressor, 1 (all windows) for the classifiers.",
                                       min=1)
    rest_sample: int | None = _option(None, "Grasp-phase detector: train each epoch on every grasp window, every rest "
                                            "window within a window's length of a grasp phase, and a fresh random 1/K "
                                            "of the other (far) rest windows, weighted K times so an epoch's loss "
                                            "estimates the whole set's. Default: 4 for the detector (1: every window "
                                            "every epoch).", min=1)
    lr_patience: int | None = _option(None, "Epochs without lower validation loss before halving the learning rate. "
                                            "Default: 5 for the classifiers, 3 for the aperture regressor.", min=1)
    class_weights: bool = _option(False, "Weight classes by inverse frequency (rest:grasp is ~10:1).")
    calibration_windows: int = _option(1000, "Training windows stored with the model to calibrate its int8 ranges "
                                             "(stratified by label, plus the busiest window).", min=1)
    lstm: str | None = _option(None, "The LSTM layer trained (all export alike; docs/method.md, 'Training speed'). "
                                     "fused-bf16: grasptpu's layer, Keras' LSTM arithmetic and input dropout (one "
                                     "mask per window), every bin's input projection in one matmul, in bfloat16 "
                                     "during training steps (validation, test and export are float32); fused: the "
                                     "same in float32; keras: Keras' own Bidirectional(LSTM), unrolled (the paper's "
                                     "scripts' layer); grouped: one mask per group of 32 windows, faster but "
                                     "measured less accurate. Default: fused-bf16 where the CPU multiplies bfloat16 "
                                     "natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo), else fused.",
                        choices=TRAINING_LSTMS)
    seed: int = 0
    verbose: int | None = None   # Keras verbosity; None = progress bar on a terminal, a line per epoch otherwise

    def __post_init__(self) -> None:
        for name, value in {**DEFAULTS, **TASK_DEFAULTS.get(self.task, {})}.items():
            if getattr(self, name) is None:  # resolved here, so the manifest records the value used
                setattr(self, name, value)
        if self.lstm is None:
            self.lstm = default_lstm()
        if self.lstm not in TRAINING_LSTMS:
            raise GrasptpuError(f"--lstm {self.lstm!r}: choose one of {', '.join(TRAINING_LSTMS)}")
        if self.rest_sample > 1 and self.task != "grasp-phase":
            raise GrasptpuError(f"--rest-sample is defined for the grasp-phase detector only (not the {self.task} "
                                "task): leave it out")


DEFAULTS = {"epoch_sample": 1, "rest_sample": 1, "stop_patience": 10, "lr_patience": 5}
# The aperture regressor learns every window (~3x the classifiers' windows); a random third per
# epoch reached the same test R2 in a third of the time (ZRec50: 0.916 in 36 s vs 0.914 in 55 s),
# and its validation loss levels off within a few epochs, so it waits less before stopping
# (docs/method.md, "Training the aperture regressor"). The detector thins its far rest windows to
# a quarter per epoch: 1.5-3.2x faster on the six sessions, test accuracy within 0.2 points
# (docs/method.md, "Training speed").
TASK_DEFAULTS = {"aperture": {"epoch_sample": 3, "stop_patience": 5, "lr_patience": 3},
                 "grasp-phase": {"rest_sample": 4}}


PAPER_SESSION_PRESETS = {"M": "two-layer", "Z": "one-layer"}  # the paper's choice per monkey (MRec.., ZRec..)


def preset_for(recording_name: str, asked: str, task: str = "object") -> tuple[str, str]:
    """(preset, why): the one asked for, else the regression preset for the aperture task, else the
    paper's choice for a paper session (named MRec.. or ZRec..), else the default, so any recording
    trains and says which preset it used."""
    from host.train.model import DEFAULT_PRESET, REGRESSION_PRESET

    if asked != "auto":
        return asked, "asked for"
    if task == "aperture":
        return REGRESSION_PRESET, ("the aperture regressor's default: the paper's heavy dropout and L1/L2 "
                                   "regularisation cost R2 (docs/method.md)")
    name = recording_name.split(".")[0]
    if name[:4] in ("MRec", "ZRec"):
        return PAPER_SESSION_PRESETS[name[0]], f"the paper's choice for session {name}"
    return DEFAULT_PRESET, "the default (pass --preset to choose)"
