"""Continuous decoding: the figures a regression decoder is judged by, and the field's two standard
continuous decoders of motor cortex as baselines on the same split (docs/method.md, "Continuous
decoders").

- Wiener filter: a linear map from the last 12 bins of every unit to the target, here fitted as
  ridge regression on the same standardised windows the BiLSTM sees (the ridge penalty chosen on
  the validation split).
- Kalman filter: the linear-Gaussian state-space decoder (Wu et al. 2003): the state is the target
  and its velocity, x_t = A x_{t-1} + w, the counts are z_t = H x_t + q, all four matrices fitted
  by least squares on training trials. Decoding uses the steady-state gain K (the Riccati
  recursion converges within a few bins), so each trial's estimate is the linear recursion
  x_t = M x_{t-1} + K z_t, with M = (I - K H) A: run as first-order IIR filters (scipy's lfilter)
  in M's eigenbasis, so no Python loop runs over bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.bench import regression_scores

RIDGE_GRID = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5)


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """R2, Pearson r and RMSE (in the target's unit) as the board computes them
    (`device.bench.regression_scores`), and the number of values scored."""
    return {**regression_scores(y, pred), "n": int(len(y))}


# --------------------------------------------------------------------------- Wiener filter


CHUNK = 4096  # windows per block: the Gram matrix is summed block by block, never all windows at once


def _blocks(windows):
    """Flattened float64 blocks of `windows`: an array ``(n, bins, units)`` or anything with `len`
    and `batch` (a WindowSet, the contract's TestSet), so memory holds one block, not every window."""
    for lo in range(0, len(windows), CHUNK):
        block = windows.batch(slice(lo, lo + CHUNK)) if hasattr(windows, "batch") else windows[lo:lo + CHUNK]
        yield block.reshape(len(block), -1).astype(np.float64)


@dataclass
class Wiener:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    ridge: float

    def predict(self, windows) -> np.ndarray:
        """Windows (an array ``(n, bins, units)`` or a WindowSet) -> target estimates ``(n,)``."""
        parts = [((x - self.mean) / self.scale) @ self.weights + self.bias for x in _blocks(windows)]
        return np.concatenate(parts) if parts else np.empty(0)


def fit_wiener(train_x, train_y: np.ndarray, val_x, val_y: np.ndarray,
               grid: tuple[float, ...] = RIDGE_GRID) -> Wiener:
    """Ridge regression on flattened standardised windows; the penalty with the best validation R2.
    The Gram matrix is summed block by block; one eigendecomposition serves every penalty."""
    y = np.asarray(train_y, np.float64)
    bias = float(y.mean())
    n, total, squares, gram, xty = 0, 0.0, 0.0, 0.0, 0.0
    for lo, x in zip(range(0, len(y), CHUNK), _blocks(train_x)):
        n += len(x)
        total, squares = total + x.sum(axis=0), squares + (x * x).sum(axis=0)
        gram, xty = gram + x.T @ x, xty + x.T @ (y[lo:lo + len(x)] - bias)
    mean = total / n
    scale = np.sqrt(np.maximum(squares / n - mean * mean, 0.0)) + 1e-3
    gram = (gram - n * np.outer(mean, mean)) / np.outer(scale, scale)  # the standardised windows' Gram
    xty = (xty - mean * (y - bias).sum()) / scale
    vals, vecs = np.linalg.eigh(gram)
    proj = vecs.T @ xty
    best = None
    for ridge in grid:
        model = Wiener(mean, scale, vecs @ (proj / (vals + ridge)), bias, ridge)
        score = regression_metrics(val_y, model.predict(val_x))["r2"]
        if best is None or score > best[0]:
            best = (score, model)
    return best[1]


# --------------------------------------------------------------------------- Kalman filter


@dataclass
class Kalman:
    a: np.ndarray        # (2, 2) state transition
    h: np.ndarray        # (units, 2) observation model (with the count means removed)
    gain: np.ndarray     # (2, units) steady-state Kalman gain
    z_mean: np.ndarray   # (units,)
    x_mean: np.ndarray   # (2,) state mean (target, velocity)

    def predict(self, counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Each trial's target estimate per bin (trials stacked as in `counts`), from its first bin on."""
        from scipy.signal import lfilter

        m = (np.eye(2) - self.gain @ self.h) @ self.a
        u = (counts.astype(np.float64) - self.z_mean) @ self.gain.T  # K (z_t - mean), every bin at once
        d, v = np.linalg.eig(m)
        w = np.linalg.solve(v, u.T.astype(complex))  # the inputs in M's eigenbasis, (2, rows)
        out = np.empty_like(w)
        for k in range(len(offsets) - 1):  # per trial, each from the mean state (a loop over trials, not bins)
            lo, hi = offsets[k], offsets[k + 1]
            for i in range(2):
                out[i, lo:hi] = lfilter([1.0], [1.0, -d[i]], w[i, lo:hi])
        return (v @ out).real[0] + self.x_mean[0]


def _states(target: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(rows, 2): the target and its per-bin change (0 at each trial's first bin)."""
    velocity = np.diff(target, prepend=target[:1]).astype(np.float64)
    velocity[offsets[:-1]] = 0.0
    return np.stack([target.astype(np.float64), velocity], axis=1)


def fit_kalman(counts: np.ndarray, target: np.ndarray, offsets: np.ndarray, iterations: int = 200) -> Kalman:
    """Least-squares A, W (state dynamics within trials), H, Q (counts given the state), then the
    steady-state gain by iterating the Riccati recursion."""
    x = _states(target, offsets)
    x_mean = x.mean(axis=0)
    xc = x - x_mean
    z = counts.astype(np.float64)
    z_mean = z.mean(axis=0)
    zc = z - z_mean
    first = np.zeros(len(x), bool)
    first[offsets[:-1]] = True
    prev, cur = xc[:-1][~first[1:]], xc[1:][~first[1:]]  # pairs inside one trial
    a = np.linalg.lstsq(prev, cur, rcond=None)[0].T
    w = np.cov((cur - prev @ a.T).T) + 1e-9 * np.eye(2)
    h = np.linalg.lstsq(xc, zc, rcond=None)[0].T
    q = np.cov((zc - xc @ h.T).T) + 1e-6 * np.eye(z.shape[1])
    q_inv = np.linalg.inv(q)
    p = np.cov(xc.T)
    for _ in range(iterations):  # Riccati recursion to the steady-state covariance
        p_prior = a @ p @ a.T + w
        p = np.linalg.inv(np.linalg.inv(p_prior) + h.T @ q_inv @ h)
    p_prior = a @ p @ a.T + w
    gain = p_prior @ h.T @ np.linalg.inv(h @ p_prior @ h.T + q)
    return Kalman(a, h, gain, z_mean, x_mean)
