"""`python -m device.stream DETECTOR_DIR CLASSIFIER_DIR [APERTURE_DIR]`: the decoder a prosthesis controller would run.

Test trials are replayed one 40 ms bin at a time (`--realtime` paces them on the wall clock; by
default as fast as possible, timing each bin's work). Each bin goes into a 12-bin ring buffer;
once full, the grasp-phase detector runs on the window, and a small debounce (`--debounce`
consecutive bins) switches the state rest -> grasp and back. While in grasp, the object
classifier runs on the same window and its class is the decision. Per bin: the decision latency
(bin arrival to decision) and whether it missed the bin period. Per trial: time from the Hold
onset to the first correct object decision, and false grasps (a switch to grasp whose bin lies
outside [Hold, Rew)). The paper only simulated this offline; here it runs on the board's runtime.

With an aperture regressor, it runs on every bin's window too (once the ring is full) and its
output, in the target's unit (mm), is reported per bin, raw and through an optional smoother a
hand controller would want: a one-pole exponential low-pass (`--smooth-ms TAU`, its time
constant), whose lag for slow movements is (1 - a) / a bins with a = 1 - exp(-bin / TAU): the
report states it in ms. Both are scored (R2, RMSE) against the test targets of the same bins.

All folders must come from the same session and split (their test trials are checked equal).
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time

import numpy as np

from device import runtime as rt
from device.contract import COMPILED_MODEL, DeviceError, TestSet, check_counts, load_manifest, verify
from device.bench import regression_scores, saturated
from device.decoder import Decoder
from device.output import emit


class RingBuffer:
    """The last `bins` rows, readable as one contiguous window without copying.

    Each row is written twice, at i and i + bins, so rows [i + 1, i + 1 + bins) are always the
    window in time order: one row copy per bin, no roll.
    """

    def __init__(self, bins: int, units: int) -> None:
        self.bins = bins
        self.buf = np.zeros((2 * bins, units), np.uint8)
        self.pos = -1
        self.filled = 0

    def push(self, row: np.ndarray) -> None:
        """Append one bin's counts (checked: a bad count is an error, never wrapped into uint8)."""
        row = check_counts(row, "bin")
        if row.shape != self.buf.shape[1:]:
            raise DeviceError("bin has shape {}; the stream takes {} units per bin".format(row.shape, self.buf.shape[1]))
        self.pos = (self.pos + 1) % self.bins
        self.buf[self.pos] = row
        self.buf[self.pos + self.bins] = row
        self.filled = min(self.filled + 1, self.bins)

    def clear(self) -> None:
        """Forget every row: the next window needs `bins` new ones."""
        self.pos, self.filled = -1, 0

    @property
    def full(self) -> bool:
        return self.filled == self.bins

    def window(self) -> np.ndarray:
        start = self.pos + 1
        return self.buf[start:start + self.bins]


# Measured (aperture stream vs the test targets, R2 raw / 40 ms / 80 ms): ZRec50's decoder 0.913 / 0.914 / 0.900;
# a weaker one (60 units) 0.673 / 0.691 / 0.706. 40 ms smooths the bin-to-bin jitter a hand would feel at a
# 23 ms lag and costs neither; more smoothing helps only a noisy decoder and lags a good one.
SMOOTH_MS = 40.0


class Smoother:
    """One-pole exponential low-pass of a stream of values: y += a * (x - y), a = 1 - exp(-bin / tau);
    tau 0 passes the values through. `lag_ms` is its delay for slow movements ((1 - a) / a bins)."""

    def __init__(self, tau_ms: float, bin_ms: float) -> None:
        self.alpha = 1.0 if tau_ms <= 0 else 1.0 - math.exp(-bin_ms / tau_ms)
        self.tau_ms, self.lag_ms = tau_ms, bin_ms * (1.0 - self.alpha) / self.alpha
        self.value = None

    def reset(self) -> None:
        self.value = None

    def __call__(self, x: float) -> float:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value

    def describe(self) -> dict:
        kind = "none" if self.alpha == 1.0 else "one-pole exponential low-pass"
        return {"kind": kind, "tau_ms": self.tau_ms, "alpha": self.alpha, "lag_ms": self.lag_ms}


class BinDecoder:
    """The per-bin decision logic, shared by the offline replay (`replay_trial`) and the live
    decoder (device.live), so both decide identically on the same bins.

    Each `step(row)` pushes one bin; once the ring holds a whole window the detector runs, the
    debounce switches the state, the classifier runs while in grasp and the aperture regressor
    (if any) on every window. `reset()` forgets every bin: a window must never span a gap in the
    input or a trial boundary. Times of each decoder's part of the last bin are kept for reporting.
    """

    def __init__(self, detector: Decoder, classifier: Decoder, debounce: int, aperture=None, smoother=None) -> None:
        self.detector, self.classifier, self.aperture, self.smoother = detector, classifier, aperture, smoother
        self.debounce = debounce
        self.ring = RingBuffer(detector.window_shape[0], detector.window_shape[1])
        self.reset()

    def reset(self) -> None:
        self.ring.clear()
        self.grasp, self.streak = 0, 0
        if self.smoother is not None:
            self.smoother.reset()

    def step(self, row: np.ndarray) -> tuple:
        """(state, object class index or -1, class scores (int8) or None, aperture, smoothed, seconds per
        decoder (detector, classifier, aperture; NaN for a decoder that did not run)) after one bin."""
        clock, nan = time.perf_counter, float("nan")
        self.ring.push(row)
        decision, scores, value, smoothed, times = -1, None, nan, nan, [nan, nan, nan]
        if self.ring.full:
            t0 = clock()
            says = int(self.detector.invoke(self.detector.quantise(self.ring.window())).argmax())
            self.streak = self.streak + 1 if says != self.grasp else 0
            if self.streak >= self.debounce:
                self.grasp, self.streak = says, 0
            t1 = clock()
            times[0] = t1 - t0
            if self.grasp:
                scores = self.classifier.invoke(self.classifier.quantise(self.ring.window()))
                decision = int(scores.argmax())
                times[1] = clock() - t1
            if self.aperture is not None:
                a0 = clock()
                value = self.aperture.value(self.ring.window())
                smoothed = self.smoother(value)
                times[2] = clock() - a0
        return self.grasp, decision, scores, value, smoothed, times


def replay_trial(rows: np.ndarray, bins: BinDecoder, bin_s: float, realtime: bool) -> dict:
    """Run one trial bin by bin from a fresh state; per-bin states, decisions, aperture outputs and latencies."""
    n = len(rows)
    bins.reset()
    state = np.zeros(n, np.int8)          # 0 rest, 1 grasp (after debounce)
    decision = np.full(n, -1, np.int64)   # object class index while in grasp, else -1
    latency = np.zeros(n, np.float64)
    out = {"state": state, "decision": decision, "latency_s": latency}
    if bins.aperture is not None:  # NaN until the ring holds a whole window
        out.update(aperture=np.full(n, np.nan), aperture_smoothed=np.full(n, np.nan),
                   aperture_latency_s=np.full(n, np.nan))
    clock = time.perf_counter
    t0 = clock()
    for t in range(n):  # one bin at a time, as the recording would arrive
        arrival = t0 + t * bin_s
        if realtime:
            wait = arrival - clock()
            if wait > 0:
                time.sleep(wait)
        start = clock()
        state[t], decision[t], _, value, smoothed, times = bins.step(rows[t])
        if bins.aperture is not None:
            out["aperture"][t], out["aperture_smoothed"][t], out["aperture_latency_s"][t] = value, smoothed, times[2]
        latency[t] = clock() - (arrival if realtime else start)
    return out


def trial_figures(run: dict, hold: int, reward: int, true_class: int, bin_s: float) -> dict:
    """Hold onset -> first correct object decision, and false grasps (switches to grasp outside the hold)."""
    state, decision = run["state"], run["decision"]
    switches = np.flatnonzero(np.diff(np.r_[0, state]) == 1)
    false_grasps = int(((switches < hold) | (switches >= reward)).sum())
    correct = np.flatnonzero((decision == true_class) & (np.arange(len(decision)) >= hold))
    first = int(correct[0]) if len(correct) else None
    in_hold = decision[hold:reward]
    return {"false_grasps": false_grasps,
            "first_correct_s": None if first is None else (first - hold + 1) * bin_s,
            "correct_in_hold": bool(first is not None and first < reward),
            "hold_bins_detected": float((state[hold:reward] == 1).mean()) if reward > hold else 0.0,
            "hold_decisions_correct": float((in_hold == true_class).mean()) if len(in_hold) else 0.0}


def class_of_objects(manifest: dict) -> dict:
    return {int(entry["object_id"]): int(entry["index"]) for entry in manifest["labels"]}


def load_decoders(folders: list, allow_edgetpu: bool, threads: int) -> tuple:
    """([(Decoder, manifest, runtime)], [TestSet]), one of each per (folder, task), checked to be of
    that task, from one session and one split (the same test trials) with the same bins and units."""
    decoders = []
    for folder, task in folders:
        manifest = load_manifest(folder)
        if manifest["task"] != task:
            raise DeviceError("{}: {} {} model, expected the {} model here".format(
                folder, "an" if manifest["task"][0] in "aeiou" else "a", manifest["task"], task))
        verify(folder, manifest)
        runtime = rt.select(COMPILED_MODEL in manifest["artifacts"], allow_edgetpu)
        decoders.append((Decoder(folder, manifest, runtime, threads), manifest, runtime))
    first_m = decoders[0][1]
    tests = [TestSet.load(folder, m) for (folder, _), (_, m, _) in zip(folders, decoders)]
    for (_, m, _), test in zip(decoders[1:], tests[1:]):
        for key in ("session", "bin_ms", "window_bins", "n_units"):
            if first_m["data"].get(key) != m["data"].get(key):
                raise DeviceError("the models differ in {} ({} vs {}); train all on one recording with the same "
                                  "settings".format(key, first_m["data"].get(key), m["data"].get(key)))
        if not np.array_equal(tests[0].arrays["trial_index"], test.arrays["trial_index"]):
            raise DeviceError("the models come from different sessions or splits; train all on one recording")
    return decoders, tests


def target_per_bin(test: TestSet) -> np.ndarray:
    """An aperture test set's target at each row of the test trials (NaN where no window ends)."""
    per_row = np.full(len(test.counts), np.nan)
    per_row[test.end_row] = test.arrays["target"]
    return per_row


def run(detector_dir: str, classifier_dir: str, debounce: int = 2, realtime: bool = False,
        max_trials: int = 0, allow_edgetpu: bool = True, threads: int = 1, aperture_dir: str = None,
        smooth_ms: float = SMOOTH_MS, per_bin: bool = False) -> dict:
    """Replay every test trial (or the first `max_trials`) and summarise; `per_bin` adds each
    trial's per-bin state and decision (what device.live is compared with)."""
    folders = [(detector_dir, "grasp-phase"), (classifier_dir, "object")] + (
        [(aperture_dir, "aperture")] if aperture_dir else [])
    decoders, tests = load_decoders(folders, allow_edgetpu, threads)
    test = tests[0]
    (det, det_m, runtime), (cls, cls_m, cls_runtime) = decoders[:2]
    ape, ape_m, ape_runtime = decoders[2] if aperture_dir else (None, None, None)
    bin_s = det_m["data"]["bin_ms"] / 1000.0
    smoother = Smoother(smooth_ms, det_m["data"]["bin_ms"]) if ape else None
    classes = class_of_objects(cls_m)
    n_trials = test.n_trials if max_trials <= 0 else min(max_trials, test.n_trials)
    for decoder in [d for d, _, _ in decoders]:  # warm up: the first invoke sets up kernels (~100 ms), never on the clock
        blank = np.zeros((1,) + decoder.window_shape, np.int8)
        for _ in range(5):
            decoder.invoke(blank)
    bins = BinDecoder(det, cls, debounce, ape, smoother)
    per_trial, latencies, runs = [], [], []
    for k in range(n_trials):
        obj = int(test.arrays["object_id"][k])
        if obj not in classes:
            raise DeviceError("test trial object {} is not in the classifier's label map".format(obj))
        gc.disable()  # a real-time loop: no collector pauses inside a trial (re-enabled between trials)
        try:
            result = replay_trial(test.trial_rows(k), bins, bin_s, realtime)
        finally:
            gc.enable()
        latencies.append(result["latency_s"])
        per_trial.append(trial_figures(result, int(test.arrays["hold_bin"][k]), int(test.arrays["reward_bin"][k]),
                                       classes[obj], bin_s))
        if per_bin:
            per_trial[-1].update(state=result["state"].tolist(), decision=result["decision"].tolist())
        if ape:
            runs.append(result)
            for key in ("aperture", "aperture_smoothed"):  # JSON: null before the ring is full
                per_trial[-1][key] = [None if v != v else round(float(v), 3) for v in result[key]]
    lat = np.concatenate(latencies) if latencies else np.zeros(1)
    firsts = [t["first_correct_s"] for t in per_trial if t["first_correct_s"] is not None]
    return {
        "detector": det_m["name"], "classifier": cls_m["name"], "session": det_m["data"]["session"],
        "data": "test split of {}: {} of {} trials, {} bins".format(det_m["data"]["session"], n_trials, test.n_trials, len(lat)),
        **runtime.describe(), "classifier_runtime": cls_runtime.describe(), "threads": threads, "realtime": realtime, "debounce_bins": debounce,
        "bin_ms": det_m["data"]["bin_ms"],
        "latency": {"p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
                    "max_ms": float(lat.max() * 1e3), "deadline_misses": int((lat > bin_s).sum()), "bins": int(len(lat)),
                    "headroom_p99": float(bin_s / max(np.percentile(lat, 99), 1e-9)),
                    "headroom_max": float(bin_s / max(lat.max(), 1e-9))},
        "trials": {
            "n": n_trials,
            "correct_object_in_hold": float(np.mean([t["correct_in_hold"] for t in per_trial])) if per_trial else 0.0,
            "first_correct_s_median": float(np.median(firsts)) if firsts else None,
            "first_correct_s_p90": float(np.percentile(firsts, 90)) if firsts else None,
            "false_grasps_per_trial": float(np.mean([t["false_grasps"] for t in per_trial])) if per_trial else 0.0,
            "hold_bins_detected": float(np.mean([t["hold_bins_detected"] for t in per_trial])) if per_trial else 0.0,
            "hold_decisions_correct": float(np.mean([t["hold_decisions_correct"] for t in per_trial])) if per_trial else 0.0,
        },
        "per_trial": per_trial,
        "input_saturated": dict({"detector": saturated(det), "classifier": saturated(cls)},
                                **({"aperture": saturated(ape)} if ape else {})),
        **({"aperture": aperture_figures(runs, target_per_bin(tests[2]), test, ape_m, ape_runtime, smoother)}
           if ape else {}),
    }


def aperture_figures(runs: list, target_rows: np.ndarray, test: TestSet, manifest: dict, runtime, smoother) -> dict:
    """The aperture decoder in the stream: outputs per bin, scored against the test targets of the
    same bins (raw and smoothed), and its own share of each bin's latency."""
    offsets = test.arrays["trial_offsets"]
    target = np.concatenate([target_rows[offsets[k]:offsets[k] + len(r["aperture"])] for k, r in enumerate(runs)]
                            ) if runs else np.zeros(0)
    raw = np.concatenate([r["aperture"] for r in runs]) if runs else np.zeros(0)
    smooth = np.concatenate([r["aperture_smoothed"] for r in runs]) if runs else np.zeros(0)
    lat = np.concatenate([r["aperture_latency_s"] for r in runs]) if runs else np.zeros(0)
    scored = np.isfinite(target) & np.isfinite(raw)
    timed = lat[np.isfinite(lat)]
    return {"model": manifest["name"], "units": manifest["data"]["target"]["units"], **runtime.describe(),
            "bins": int(len(raw)), "outputs": int(np.isfinite(raw).sum()), "scored_bins": int(scored.sum()),
            "raw": regression_scores(target[scored], raw[scored]),
            "smoothed": regression_scores(target[scored], smooth[scored]),
            "smoother": smoother.describe(),
            "latency": {"p50_ms": float(np.percentile(timed, 50) * 1e3) if len(timed) else None,
                        "p99_ms": float(np.percentile(timed, 99) * 1e3) if len(timed) else None}}


def format_result(r: dict) -> str:
    lat, tr = r["latency"], r["trials"]
    first = "never" if tr["first_correct_s_median"] is None else "{:.0f} ms (p90 {:.0f} ms)".format(
        tr["first_correct_s_median"] * 1e3, tr["first_correct_s_p90"] * 1e3)
    cls = r["classifier_runtime"]
    return "\n".join(_lines(r, lat, tr, first, cls) + _aperture_lines(r.get("aperture")))


def _aperture_lines(a) -> list:
    if not a:
        return []
    u, sm = a["units"], a["smoother"]
    smoothing = ("no smoother" if sm["kind"] == "none" else
                 "smoothed ({}, time constant {:.0f} ms, lag {:.0f} ms): R2 {:.4f}, RMSE {:.2f} {}".format(
                     sm["kind"], sm["tau_ms"], sm["lag_ms"], a["smoothed"]["r2"], a["smoothed"]["rmse"], u))
    return ["  aperture {} on {} ({}): one output per bin once the ring is full ({} of {} bins); its part of the "
            "bin: p50 {:.3f} ms, p99 {:.3f} ms".format(a["model"], a["runtime"], a["detail"], a["outputs"], a["bins"],
                                                       a["latency"]["p50_ms"] or 0.0, a["latency"]["p99_ms"] or 0.0),
            "  aperture vs the test targets of the same bins ({} bins): raw R2 {:.4f}, RMSE {:.2f} {}; {}".format(
                a["scored_bins"], a["raw"]["r2"], a["raw"]["rmse"], u, smoothing)]


def _lines(r: dict, lat: dict, tr: dict, first: str, cls: dict) -> list:
    return ([
        "stream {} on {} | detector on {} ({}), classifier on {} ({}), {}, debounce {} bins".format(
            " + ".join([r["detector"], r["classifier"]] + ([r["aperture"]["model"]] if r.get("aperture") else [])),
            r["data"], r["runtime"], r["detail"], cls["runtime"], cls["detail"],
            "real-time pacing" if r["realtime"] else "as fast as possible", r["debounce_bins"]),
        "  per-bin decision latency: p50 {:.3f} ms, p99 {:.3f} ms, max {:.3f} ms; {} deadline misses of {:.0f} ms; "
        "headroom {:.0f}x at p99, {:.0f}x at max".format(lat["p50_ms"], lat["p99_ms"], lat["max_ms"], lat["deadline_misses"],
                                                        r["bin_ms"], lat["headroom_p99"], lat["headroom_max"]),
        "  trials: correct object during the hold in {:.1%}; Hold onset -> first correct object: median {}; "
        "false grasps {:.2f} per trial; hold bins detected {:.1%}; hold decisions correct {:.1%}".format(
            tr["correct_object_in_hold"], first, tr["false_grasps_per_trial"], tr["hold_bins_detected"],
            tr["hold_decisions_correct"]),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.stream", description=__doc__.splitlines()[0])
    parser.add_argument("detector_dir", help="quantised grasp-phase model folder")
    parser.add_argument("classifier_dir", help="quantised object model folder (same session)")
    parser.add_argument("aperture_dir", nargs="?", default=None,
                        help="quantised aperture model folder (same session; optional): decoded every bin")
    parser.add_argument("--smooth-ms", type=float, default=SMOOTH_MS,
                        help="aperture smoother: one-pole exponential low-pass with this time constant, ms "
                             "(0 = none; default {:g} ms, a lag of about 23 ms at 40 ms bins)".format(SMOOTH_MS))
    parser.add_argument("--debounce", type=int, default=2, help="consecutive bins before the state switches")
    parser.add_argument("--realtime", action="store_true", help="pace bins on the wall clock (40 ms each)")
    parser.add_argument("--trials", type=int, default=0, help="replay only the first N test trials (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="never use the Edge TPU")
    parser.add_argument("--json", default=None, help="write every figure to this file ('-' = stdout)")
    parser.add_argument("--per-bin", action="store_true",
                        help="add each trial's per-bin state and decision to the JSON (to compare with device.live)")
    args = parser.parse_args(argv)
    if args.debounce < 1 or args.threads < 1:
        parser.error("--debounce and --threads must be >= 1")
    if not (0.0 <= args.smooth_ms <= 10000.0):  # NaN fails too
        parser.error("--smooth-ms must lie in [0, 10000]")
    try:
        result = run(args.detector_dir, args.classifier_dir, args.debounce, args.realtime, args.trials,
                     not args.cpu, args.threads, args.aperture_dir, args.smooth_ms, args.per_bin)
    except DeviceError as exc:
        print("device.stream: error: {}".format(exc), file=sys.stderr)
        return 2
    emit(result, args.json, format_result(result) if args.json != "-" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
