"""Regression metrics and the two standard continuous decoders on hand-made cases (host/train/continuous.py)."""

from __future__ import annotations

import numpy as np
import pytest

from host.train.continuous import fit_kalman, fit_wiener, regression_metrics


def test_metrics_on_hand_made_cases():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert regression_metrics(y, y) == {"r2": 1.0, "pearson_r": pytest.approx(1.0), "rmse": 0.0, "n": 4}
    m = regression_metrics(y, np.full(4, 2.5))
    assert m["r2"] == 0.0 and np.isnan(m["pearson_r"]) and m["rmse"] == pytest.approx(np.sqrt(1.25))
    m = regression_metrics(y, y + 1)
    assert m["r2"] == pytest.approx(1 - 4 / 5) and m["pearson_r"] == pytest.approx(1.0) and m["rmse"] == 1.0
    assert regression_metrics(y, -y)["pearson_r"] == pytest.approx(-1.0)


def test_wiener_recovers_a_linear_map_and_picks_its_ridge_on_validation():
    rng = np.random.default_rng(0)
    w = rng.normal(size=12 * 5)
    x = rng.poisson(3.0, (3000, 12, 5)).astype(np.uint8)
    y = (x.reshape(3000, -1) - 3.0) @ w + 20 + rng.normal(0, 0.5, 3000)
    model = fit_wiener(x[:2000], y[:2000], x[2000:2500], y[2000:2500])
    assert regression_metrics(y[2500:], model.predict(x[2500:]))["r2"] > 0.99


def simulate(rng, trials=40, bins=80, units=30):
    a = np.array([[1.0, 1.0], [0.0, 0.9]])
    h = rng.normal(0, 1.0, (units, 2))
    xs, zs, offsets = [], [], [0]
    for _ in range(trials):
        x = np.zeros((bins, 2))
        x[0] = [rng.normal(0, 2), 0]
        for t in range(1, bins):
            x[t] = a @ x[t - 1] + [0, rng.normal(0, 0.3)]
        xs.append(x)
        zs.append(x @ h.T + 5 + rng.normal(0, 1.0, (bins, units)))
        offsets.append(offsets[-1] + bins)
    return np.concatenate(xs), np.concatenate(zs), np.array(offsets)


def test_kalman_decodes_a_linear_dynamical_system_and_equals_its_recursion():
    rng = np.random.default_rng(1)
    x, z, offsets = simulate(rng)
    model = fit_kalman(z[: offsets[30]], x[: offsets[30], 0], offsets[:31])
    test_z, test_offsets = z[offsets[30]:], offsets[30:] - offsets[30]
    pred = model.predict(test_z, test_offsets)
    assert regression_metrics(x[offsets[30]:, 0], pred)["r2"] > 0.9
    # the plain per-bin recursion x_t = M x_{t-1} + K (z_t - mean), each trial from the mean state
    m = (np.eye(2) - model.gain @ model.h) @ model.a
    ref = np.empty(len(test_z))
    for k in range(len(test_offsets) - 1):
        state = np.zeros(2)
        for t in range(test_offsets[k], test_offsets[k + 1]):
            state = m @ state + model.gain @ (test_z[t] - model.z_mean)
            ref[t] = state[0] + model.x_mean[0]
    np.testing.assert_allclose(pred, ref, rtol=1e-9, atol=1e-9)


def test_both_baselines_decode_the_synthetic_aperture(tmp_path, write_session):
    from host.data.prepare import prepare

    p = prepare(write_session(150, 160, seed=5, difficulty=1.0, folder=tmp_path, name="s.neo.mat"), use_cache=False)
    b, parts = p.binned, p.split.as_dict()

    def rows(trials):
        return np.concatenate([np.arange(b.trial_offsets[k] + 11, b.trial_offsets[k + 1]) for k in trials])

    windows = np.lib.stride_tricks.sliding_window_view(b.counts, (12, b.n_units))[:, 0]
    tr, va, te = (rows(parts[s]) for s in ("train", "validation", "test"))
    wiener = fit_wiener(windows[tr - 11], b.target[tr], windows[va - 11], b.target[va])
    r2_wiener = regression_metrics(b.target[te], wiener.predict(windows[te - 11]))["r2"]

    def stacked(trials):
        idx = np.concatenate([np.arange(b.trial_offsets[k], b.trial_offsets[k + 1]) for k in trials])
        return idx, np.r_[0, np.cumsum(b.n_bins[trials])]

    train_idx, train_off = stacked(parts["train"])
    test_idx, test_off = stacked(parts["test"])
    kalman = fit_kalman(b.counts[train_idx], b.target[train_idx], train_off)
    r2_kalman = regression_metrics(b.target[test_idx], kalman.predict(b.counts[test_idx], test_off))["r2"]
    print(f"\nsynthetic aperture, test split: Wiener R2 {r2_wiener:.3f}, Kalman R2 {r2_kalman:.3f}")
    assert r2_wiener > 0.5 and r2_kalman > 0.3, (r2_wiener, r2_kalman)
