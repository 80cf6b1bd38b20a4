"""Split whole trials into train / validation / test, stratified by object.

Windows overlap by 11 of 12 bins, so splitting windows would put near-copies of one window in
train and test; splitting trials cannot leak. Each kept object has >= 3 trials, so each object
gets at least one trial in every split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TRAIN_VAL_SHARE = 0.8


def validation_share(train_val_share: float) -> float:
    """The paper's rule (Table 5; docs/method.md): 20 % of train+val for validation, raised to
    30 % at a 30 % share and to 40 % at a 20 % share, so that small shares still leave a
    validation trial per class."""
    if train_val_share <= 0.2 + 1e-9:
        return 0.4
    if train_val_share <= 0.3 + 1e-9:
        return 0.3
    return 0.2


@dataclass(frozen=True)
class Split:
    """Positions (into the kept-trial arrays) of each split's trials, sorted."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    seed: int
    train_val_share: float
    validation_share: float

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def split_trials(labels: np.ndarray, train_val_share: float = DEFAULT_TRAIN_VAL_SHARE,
                 val_share: float | None = None, seed: int = 0) -> Split:
    """Stratified split of trials by their class label.

    Args:
        labels: class of each kept trial.
        train_val_share: share of each class's trials for train + validation (the rest is test).
        val_share: share of train + validation used for validation; the paper's rule when None.
        seed: the shuffle seed.
    Raises:
        ValueError: a share outside (0, 1), or a class with fewer than 3 trials.
    """
    if not 0 < train_val_share < 1:
        raise ValueError(f"train_val_share must be in (0, 1), got {train_val_share}")
    val_share = validation_share(train_val_share) if val_share is None else val_share
    if not 0 < val_share < 1:
        raise ValueError(f"val_share must be in (0, 1), got {val_share}")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if (counts < 3).any():
        raise ValueError(f"class {classes[counts < 3][0]} has {counts.min()} trials; each split needs one")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for cls, n in zip(classes, counts):  # one pass per class (~40), vectorised within
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_trval = int(np.clip(round(train_val_share * n), 2, n - 1))
        n_val = int(np.clip(round(val_share * n_trval), 1, n_trval - 1))
        parts["test"].append(members[n_trval:])
        parts["validation"].append(members[:n_val])
        parts["train"].append(members[n_val:n_trval])
    arrays = {k: np.sort(np.concatenate(v)).astype(np.int32) for k, v in parts.items()}
    return Split(**arrays, seed=seed, train_val_share=train_val_share, validation_share=val_share)
