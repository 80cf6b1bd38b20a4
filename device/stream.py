"""`python -m device.stream DETECTOR_DIR CLASSIFIER_DIR`: the decoder a prosthesis controller would run.

Test trials are replayed one 40 ms bin at a time (`--realtime` paces them on the wall clock; by
default as fast as possible, timing each bin's work). Each bin goes into a 12-bin ring buffer;
once full, the grasp-phase detector runs on the window, and a small debounce (`--debounce`
consecutive bins) switches the state rest -> grasp and back. While in grasp, the object
classifier runs on the same window and its class is the decision. Per bin: the decision latency
(bin arrival to decision) and whether it missed the bin period. Per trial: time from the Hold
onset to the first correct object decision, and false grasps (a switch to grasp whose bin lies
outside [Hold, Rew)). The paper only simulated this offline; here it runs on the board's runtime.

Both folders must come from the same session and split (their test trials are checked equal).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

from device import runtime as rt
from device.contract import COMPILED_MODEL, DeviceError, TestSet, check_counts, load_manifest, verify
from device.bench import saturated
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

    @property
    def full(self) -> bool:
        return self.filled == self.bins

    def window(self) -> np.ndarray:
        start = self.pos + 1
        return self.buf[start:start + self.bins]


def replay_trial(rows: np.ndarray, detector: Decoder, classifier: Decoder, debounce: int,
                 bin_s: float, realtime: bool) -> dict:
    """Run one trial bin by bin; per-bin states, decisions and latencies."""
    n = len(rows)
    ring = RingBuffer(detector.window_shape[0], rows.shape[1])
    state = np.zeros(n, np.int8)          # 0 rest, 1 grasp (after debounce)
    decision = np.full(n, -1, np.int64)   # object class index while in grasp, else -1
    latency = np.zeros(n, np.float64)
    grasp, streak = 0, 0
    clock = time.perf_counter
    t0 = clock()
    for t in range(n):  # one bin at a time, as the recording would arrive
        arrival = t0 + t * bin_s
        if realtime:
            wait = arrival - clock()
            if wait > 0:
                time.sleep(wait)
        start = clock()
        ring.push(rows[t])
        if ring.full:
            q = detector.quantise(ring.window())
            says = int(detector.invoke(q).argmax())
            streak = streak + 1 if says != grasp else 0
            if streak >= debounce:
                grasp, streak = says, 0
            if grasp:
                decision[t] = int(classifier.invoke(classifier.quantise(ring.window())).argmax())
        state[t] = grasp
        latency[t] = clock() - (arrival if realtime else start)
    return {"state": state, "decision": decision, "latency_s": latency}


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


def load_pair(detector_dir: str, classifier_dir: str, allow_edgetpu: bool, threads: int):
    decoders = []
    for folder, task in ((detector_dir, "grasp-phase"), (classifier_dir, "object")):
        manifest = load_manifest(folder)
        if manifest["task"] != task:
            raise DeviceError("{}: a {} model, expected the {} model here".format(folder, manifest["task"], task))
        verify(folder, manifest)
        runtime = rt.select(COMPILED_MODEL in manifest["artifacts"], allow_edgetpu)
        decoders.append((Decoder(folder, manifest, runtime, threads), manifest, runtime))
    (det, det_m, runtime), (cls, cls_m, cls_runtime) = decoders
    for key in ("session", "bin_ms", "window_bins", "n_units"):
        if det_m["data"].get(key) != cls_m["data"].get(key):
            raise DeviceError("the two models differ in {} ({} vs {}); train both on one recording with the same "
                              "settings".format(key, det_m["data"].get(key), cls_m["data"].get(key)))
    test = TestSet.load(detector_dir, det_m)
    other = TestSet.load(classifier_dir, cls_m)
    if det_m["data"]["session"] != cls_m["data"]["session"] or \
            not np.array_equal(test.arrays["trial_index"], other.arrays["trial_index"]):
        raise DeviceError("the two models come from different sessions or splits; train both on one recording")
    return det, cls, det_m, cls_m, (runtime, cls_runtime), test


def run(detector_dir: str, classifier_dir: str, debounce: int = 2, realtime: bool = False,
        max_trials: int = 0, allow_edgetpu: bool = True, threads: int = 1) -> dict:
    """Replay every test trial (or the first `max_trials`) and summarise."""
    det, cls, det_m, cls_m, (runtime, cls_runtime), test = load_pair(detector_dir, classifier_dir, allow_edgetpu, threads)
    bin_s = det_m["data"]["bin_ms"] / 1000.0
    classes = class_of_objects(cls_m)
    n_trials = test.n_trials if max_trials <= 0 else min(max_trials, test.n_trials)
    for decoder in (det, cls):  # warm up: the first invoke sets up kernels (measured ~100 ms), never on the clock
        blank = np.zeros((1,) + decoder.window_shape, np.int8)
        for _ in range(5):
            decoder.invoke(blank)
    per_trial, latencies = [], []
    for k in range(n_trials):
        obj = int(test.arrays["object_id"][k])
        if obj not in classes:
            raise DeviceError("test trial object {} is not in the classifier's label map".format(obj))
        gc.disable()  # a real-time loop: no collector pauses inside a trial (re-enabled between trials)
        try:
            result = replay_trial(test.trial_rows(k), det, cls, debounce, bin_s, realtime)
        finally:
            gc.enable()
        latencies.append(result["latency_s"])
        per_trial.append(trial_figures(result, int(test.arrays["hold_bin"][k]), int(test.arrays["reward_bin"][k]),
                                       classes[obj], bin_s))
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
        "input_saturated": {"detector": saturated(det), "classifier": saturated(cls)},
    }


def format_result(r: dict) -> str:
    lat, tr = r["latency"], r["trials"]
    first = "never" if tr["first_correct_s_median"] is None else "{:.0f} ms (p90 {:.0f} ms)".format(
        tr["first_correct_s_median"] * 1e3, tr["first_correct_s_p90"] * 1e3)
    cls = r["classifier_runtime"]
    return "\n".join([
        "stream {} + {} on {} | detector on {} ({}), classifier on {} ({}), {}, debounce {} bins".format(
            r["detector"], r["classifier"], r["data"], r["runtime"], r["detail"], cls["runtime"], cls["detail"],
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
    parser.add_argument("--debounce", type=int, default=2, help="consecutive bins before the state switches")
    parser.add_argument("--realtime", action="store_true", help="pace bins on the wall clock (40 ms each)")
    parser.add_argument("--trials", type=int, default=0, help="replay only the first N test trials (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="never use the Edge TPU")
    parser.add_argument("--json", default=None, help="write every figure to this file ('-' = stdout)")
    args = parser.parse_args(argv)
    if args.debounce < 1 or args.threads < 1:
        parser.error("--debounce and --threads must be >= 1")
    try:
        result = run(args.detector_dir, args.classifier_dir, args.debounce, args.realtime, args.trials,
                     not args.cpu, args.threads)
    except DeviceError as exc:
        print("device.stream: error: {}".format(exc), file=sys.stderr)
        return 2
    emit(result, args.json, format_result(result) if args.json != "-" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
