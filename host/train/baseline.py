"""The prior-art decoder: naive Bayes on each trial's spike counts over the whole hold phase.

Schaffelhofer (2015) decoded the grasped object from these sessions with a naive Bayes classifier
on per-trial spike counts of the hold phase, scored leave-one-out (62 % on 50 objects). It is the
baseline the BiLSTM must beat, so it is evaluated two ways: leave-one-out, as in 2015, and on our
trial split (fit on train + validation, score test), which is the BiLSTM's own test set.

Spike counts are modelled as Poisson: count[trial, unit] ~ Poisson(rate[class, unit] * hold_bins).
Hold phases differ in length between trials, so the rate is per bin and the expected count scales
with the trial's hold duration. Under that model the class sums of counts and of durations are
sufficient statistics, which is what makes leave-one-out a closed form: the held-out trial's fit
is the class sums minus that trial's own counts and duration, for all trials at once.
"""

from __future__ import annotations

import numpy as np

from host.train import metrics
from host.data.binning import BinnedSession
from host.data.split import Split

# Gamma(PSEUDO_SPIKES, PSEUDO_BINS) prior on every class's rate, i.e. the rate estimate is
# (class spikes + 0.5) / (class hold bins + 1). Without it a unit silent in one class's training
# trials gets rate 0 there, and a single spike at test time rules that class out (log 0). Half a
# spike is negligible next to the tens of spikes a responsive unit fires over a class's hold
# bins; the pseudo-bin only keeps the rate finite for a class without training trials.
PSEUDO_SPIKES = 0.5
PSEUDO_BINS = 1.0
DESCRIPTION = (f"Poisson naive Bayes on hold-phase spike counts (rate x hold bins; "
               f"Gamma({PSEUDO_SPIKES:g} spikes, {PSEUDO_BINS:g} bin) rate prior; class prior = training frequency)")


def hold_features(binned: BinnedSession) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts over each kept trial's hold phase, the features of the 2015 decoder.

    The hold phase is bins [hold_bin, reward_bin), clipped to the trial's whole bins (an event in
    the trailing partial bin falls at bin n_bins, which binning did not keep).

    Returns:
        counts: float64 ``(n_trials, n_units)``, spikes per trial and unit summed over the hold bins.
        durations: int64 ``(n_trials,)``, hold bins summed per trial (the Poisson exposure).
    """
    n_bins = binned.n_bins
    first = np.clip(binned.hold_bin.astype(np.int64), 0, n_bins)
    stop = np.clip(binned.reward_bin.astype(np.int64), first, n_bins)
    durations = stop - first
    rows = _concatenated_ranges(binned.trial_offsets[:-1] + first, durations)
    counts = np.zeros((binned.n_trials, binned.n_units), np.float64)
    held = durations > 0
    if held.any():
        # reduceat sums rows[starts[i]:starts[i+1]]; trials with no hold bin add no rows, so the
        # starts of the others are strictly increasing and each segment is exactly one trial.
        starts = (np.cumsum(durations) - durations)[held]
        counts[held] = np.add.reduceat(binned.counts[rows], starts, axis=0, dtype=np.float64)
    return counts, durations


def _concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` without the loop."""
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64)


class PoissonNaiveBayes:
    """Naive Bayes with Poisson counts whose mean is a per-class rate times the hold duration.

    Attributes (after `fit`):
        rate: ``(n_classes, n_units)`` spikes per bin, smoothed by the Gamma prior above.
        log_prior: ``(n_classes,)`` log training frequency; -inf for a class absent in training,
            which can then never be predicted (it had no data to be learnt from).
        spike_sums, bin_sums, trial_counts: per-class sufficient statistics of the fit.
    """

    def __init__(self, pseudo_spikes: float = PSEUDO_SPIKES, pseudo_bins: float = PSEUDO_BINS) -> None:
        if not (pseudo_spikes > 0 and pseudo_bins > 0):
            raise ValueError(f"pseudo_spikes and pseudo_bins must be > 0, got {pseudo_spikes}, {pseudo_bins}")
        self.pseudo_spikes = float(pseudo_spikes)
        self.pseudo_bins = float(pseudo_bins)

    def fit(self, counts: np.ndarray, durations: np.ndarray, labels: np.ndarray,
            n_classes: int) -> "PoissonNaiveBayes":
        """Estimate per-class rates and priors from training trials (sums only: no iteration)."""
        counts, durations = _check_features(counts, durations)
        labels = _check_labels(labels, len(counts), n_classes)
        one_hot = np.eye(n_classes)[labels]  # (n, n_classes): class sums as one matrix product
        self.spike_sums = one_hot.T @ counts
        self.bin_sums = np.bincount(labels, weights=durations, minlength=n_classes)
        self.trial_counts = np.bincount(labels, minlength=n_classes)
        self.rate = self._rate(self.spike_sums, self.bin_sums[:, None])
        with np.errstate(divide="ignore"):
            self.log_prior = np.log(self.trial_counts / len(labels))
        return self

    def _rate(self, spike_sums: np.ndarray, bin_sums: np.ndarray) -> np.ndarray:
        return (spike_sums + self.pseudo_spikes) / (bin_sums + self.pseudo_bins)

    def log_posterior(self, counts: np.ndarray, durations: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` log posterior up to a per-trial constant (log x! and x log d drop)."""
        if not hasattr(self, "rate"):
            raise RuntimeError("PoissonNaiveBayes.log_posterior called before fit")
        counts, durations = _check_features(counts, durations, n_units=self.rate.shape[1])
        return (counts @ np.log(self.rate).T - durations[:, None] * self.rate.sum(axis=1)
                + self.log_prior)

    def predict(self, counts: np.ndarray, durations: np.ndarray) -> np.ndarray:
        """Most probable class index per trial."""
        return np.argmax(self.log_posterior(counts, durations), axis=1)


def _check_features(counts: np.ndarray, durations: np.ndarray,
                    n_units: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate at the boundary, naming the argument and both shapes, as scikit-learn does."""
    counts = np.asarray(counts, np.float64)
    durations = np.asarray(durations, np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts must be 2-D (n_trials, n_units), got shape {counts.shape}")
    if n_units is not None and counts.shape[1] != n_units:
        raise ValueError(f"counts has {counts.shape[1]} units, the model was fitted on {n_units}: "
                         f"expected shape (n_trials, {n_units}), got {counts.shape}")
    if durations.shape != (len(counts),):
        raise ValueError(f"durations must have shape ({len(counts)},) to match counts, got {durations.shape}")
    if (counts < 0).any() or (durations < 0).any():
        raise ValueError("counts and durations must be non-negative")
    return counts, durations


def _check_labels(labels: np.ndarray, n_trials: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_trials,):
        raise ValueError(f"labels must have shape ({n_trials},) to match counts, got {labels.shape}")
    if n_trials and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def leave_one_out_log_posterior(model: PoissonNaiveBayes, counts: np.ndarray, durations: np.ndarray,
                                labels: np.ndarray) -> np.ndarray:
    """Log posterior of every trial under the model fitted on all the other trials, in closed form.

    `model` is fitted on all trials. Leaving trial i out changes only its own class: that class's
    rate loses the trial's counts and duration and its prior loses one trial; every other class's
    rate is unchanged and all priors share the denominator n - 1. Exactly equal to refitting n
    times, at the cost of one extra ``(n, n_units)`` array.
    """
    counts, durations = _check_features(counts, durations, n_units=model.rate.shape[1])
    labels = _check_labels(labels, len(counts), len(model.rate))
    n = len(labels)
    with np.errstate(divide="ignore"):
        log_prior = np.log(model.trial_counts / (n - 1))
        own_log_prior = np.log((model.trial_counts[labels] - 1) / (n - 1))
    scores = counts @ np.log(model.rate).T - durations[:, None] * model.rate.sum(axis=1) + log_prior
    own_rate = model._rate(model.spike_sums[labels] - counts, (model.bin_sums[labels] - durations)[:, None])
    own = (counts * np.log(own_rate)).sum(axis=1) - durations * own_rate.sum(axis=1) + own_log_prior
    scores[np.arange(n), labels] = own
    return scores


def leave_one_out(binned: BinnedSession) -> dict:
    """Leave-one-out over the kept trials, the 2015 protocol, as `metrics.object_metrics`."""
    counts, durations = hold_features(binned)
    labels = binned.class_index.astype(np.int64)
    n_classes = len(binned.classes)
    model = PoissonNaiveBayes().fit(counts, durations, labels, n_classes)
    pred = np.argmax(leave_one_out_log_posterior(model, counts, durations, labels), axis=1)
    return _report(metrics.confusion(labels, pred, n_classes), binned, "leave-one-out")


def split_evaluation(binned: BinnedSession, split: Split) -> dict:
    """Fit on train + validation trials, score the test trials: the BiLSTM's own test set.

    Validation trials are training data here: naive Bayes has nothing to tune on them, and the
    BiLSTM also learns from them (early stopping), so both decoders see the same trials.
    """
    counts, durations = hold_features(binned)
    labels = binned.class_index.astype(np.int64)
    n_classes = len(binned.classes)
    fit_on = np.concatenate([split.train, split.validation])
    model = PoissonNaiveBayes().fit(counts[fit_on], durations[fit_on], labels[fit_on], n_classes)
    pred = model.predict(counts[split.test], durations[split.test])
    return _report(metrics.confusion(labels[split.test], pred, n_classes), binned, "test split")


def _report(cm: np.ndarray, binned: BinnedSession, evaluation: str) -> dict:
    report = metrics.object_metrics(cm, binned.classes, metrics.has_catalogue(binned.layout))
    report["trials"] = report["windows"]  # one sample per trial here, not per window
    report.update(method=DESCRIPTION, evaluation=evaluation)
    return report
