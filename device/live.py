"""`python -m device.live DETECTOR_DIR CLASSIFIER_DIR [APERTURE_DIR] --stream NAME`: decode a live LSL stream.

The board subscribes to an LSL stream of binned spike counts (one sample per bin, one channel per
unit), checks it against the models' manifests (channel count, rate, channel labels: a mismatch
is refused in one line), and decodes each bin with the same per-bin logic as device.stream
(`BinDecoder`: 12-bin ring buffer, detector + debounce, classifier while in grasp, aperture every
window). Each bin's decision goes out on an LSL outlet (`--outlet`, default NAME-decoded) stamped
with the input sample's own timestamp, so a consumer on the acquisition's clock measures
end-to-end latency as its receive time minus that stamp.

Counts, not spike events, come first: an acquisition system (or its LSL app) bins already, the
manifest fixes bin width and unit order so the check is exact, and the comparison with the
offline replay is bin for bin. Spike events binned on the board would add a clock-alignment
problem (which 40 ms does a spike at the edge belong to) before the decoder sees anything.

Robustness, per bin, with no window ever decoded across a hole in the data:
- a stamp more than 1.5 bins after the last one is a gap: its missing bins are counted (missed
  bins) and the decoder starts over (the ring must refill before the next decision);
- a stamp earlier than half a bin after the last (a restarted or reordered stream) also resets;
- a sample with NaN, negative, fractional or > 255 counts is not decoded: the decoder resets, the
  bin goes out with status "invalid", and the first problem of each run of bad bins is one line;
- a second publisher of the same name is refused at start, and reported if one appears later
  (the inlet stays bound to the stream it opened);
- an inlet that pauses is reported; one whose publisher restarts with the same source id is
  reconnected by liblsl, and the jump in stamps is a gap;
- SIGINT/SIGTERM (or `--idle-stop S` seconds without input, counted from subscription) ends the run
  with a summary.
Every output sample's `status` says which case produced it (OUTPUT_CHANNELS, STATUS).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time

import numpy as np

from device import lsl
from device.bench import saturated
from device.contract import DeviceError, check_counts, dequantise_one, load_manifest, one_line
from device.output import emit, write_atomically
from device.stream import SMOOTH_MS, BinDecoder, Smoother, class_of_objects, load_decoders

OUTPUT_CHANNELS = ("grasp", "object_index", "object_id", "probability", "aperture", "aperture_smoothed",
                   "detector_ms", "classifier_ms", "aperture_ms", "board_ms", "status")
STATUS = {"decoded": 0, "filling": 1, "invalid": 2}  # filling: no whole window since start, a gap or a bad bin
OUTPUT_TYPE = "GraspDecisions"
MAX_PROBLEM_LINES = 20  # further problems are counted in the summary, not printed


def labels_of(unit_index) -> list:
    """Channel labels of units, in order: unit<N>, N the recording's unit number (none if unknown)."""
    return ["unit{}".format(int(u)) for u in unit_index] if unit_index is not None else []


def unit_labels(manifest: dict) -> list:
    """The channel labels the model expects, in its unit order."""
    return labels_of(manifest["data"].get("unit_index"))


def channel_labels(info) -> list:
    """Channel labels from a stream's full description (empty if it names none)."""
    labels, ch = [], info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        ch = ch.next_sibling()
    return labels


def check_stream(info, labels: list, manifest: dict, unlabelled: bool) -> None:
    """Refuse a stream that does not carry this model's bins: channel count, rate, format, labels."""
    data = manifest["data"]
    name = one_line(info.name(), 80)
    if info.channel_count() != data["n_units"]:
        raise DeviceError("stream {} has {} channels; the models take {} units per bin (one channel per unit, in "
                          "the manifest's order)".format(name, info.channel_count(), data["n_units"]))
    rate = 1000.0 / float(data["bin_ms"])
    if abs(info.nominal_srate() - rate) > 1e-6 * rate:
        raise DeviceError("stream {} runs at {:g} Hz; the models take one sample per {:g} ms bin ({:g} Hz): publish "
                          "binned counts at the model's bin width".format(name, info.nominal_srate(), data["bin_ms"], rate))
    if info.channel_format() == 3:  # cf_string
        raise DeviceError("stream {} carries strings; device.live takes numeric spike counts".format(name))
    expected = unit_labels(manifest)
    if not labels:
        if not unlabelled:
            raise DeviceError("stream {} names no channels, so its unit order cannot be checked; label them {} ... "
                              "or pass --unlabelled to trust the order".format(name, " ".join(expected[:3]) or "unit0"))
        return
    if expected and len(labels) != len(expected):
        raise DeviceError("stream {} labels {} of its {} channels; label every channel ({} ...)".format(
            name, len(labels), info.channel_count(), " ".join(expected[:3])))
    if expected and labels != expected:
        k = next(i for i, (a, b) in enumerate(zip(labels, expected)) if a != b)
        raise DeviceError("stream {} channel {} is {!r}, the models expect {!r} (the manifest's unit order); publish the "
                          "channels in that order".format(name, k, one_line(labels[k], 40), expected[k]))


def find_stream(pylsl, name: str, timeout: float, publisher: str = "the acquisition (or `grasptpu replay`)") -> object:
    """The one stream named `name` (waiting up to `timeout` s for it); two publishers of the name are refused."""
    deadline = time.time() + timeout
    found = []
    while not found:
        left = deadline - time.time()
        if left <= 0:
            raise DeviceError("no LSL stream named {} within {:g} s; start {} first, or check the name".format(
                one_line(name, 80), timeout, publisher))
        found = pylsl.resolve_byprop("name", name, 1, min(left, 1.0))
    found += pylsl.resolve_byprop("name", name, 2, 0.5)  # look a moment longer for a second publisher
    distinct = {i.uid(): i for i in found}
    if len(distinct) > 1:
        raise DeviceError("{} LSL streams are named {} (on {}); stop one or give each publisher its own name".format(
            len(distinct), one_line(name, 80), ", ".join(sorted(one_line(i.hostname(), 40) for i in distinct.values()))))
    return found[0]


def make_outlet(pylsl, name: str, rate: float, models: dict, session: str):
    """The decision outlet: one double sample per input bin, channels OUTPUT_CHANNELS."""
    info = pylsl.StreamInfo(name, OUTPUT_TYPE, len(OUTPUT_CHANNELS), rate, "double64", "grasptpu-live:" + name)
    channels = info.desc().append_child("channels")
    for label in OUTPUT_CHANNELS:
        channels.append_child("channel").append_child_value("label", label)
    about = info.desc().append_child("grasptpu")
    about.append_child_value("session", session)
    for task, model in models.items():
        about.append_child_value(task.replace("-", "_"), model)
    return pylsl.StreamOutlet(info, 1)


class Problems:
    """One stderr line per problem, up to MAX_PROBLEM_LINES; every one counted."""

    def __init__(self) -> None:
        self.lines = 0

    def say(self, text: str) -> None:
        self.lines += 1
        if self.lines <= MAX_PROBLEM_LINES:
            print("device.live: " + one_line(text), file=sys.stderr, flush=True)


def bad_counts(sample: np.ndarray, ts: float) -> str:
    """Why a bin's counts cannot be decoded ("" if they can): the contract's one check of counts."""
    try:
        check_counts(sample, "bin at stamp {:.3f}".format(ts))
    except DeviceError as exc:
        return str(exc)
    return ""


class Live:
    """The decode loop's state and its counters (what the summary reports)."""

    def __init__(self, bins: BinDecoder, classes: dict, bin_s: float, outlet, problems: Problems) -> None:
        self.bins, self.bin_s, self.outlet, self.problems = bins, bin_s, outlet, problems
        self.object_ids = {index: obj for obj, index in classes.items()}
        self.out_scale, self.out_zero = bins.classifier.out_scale, bins.classifier.out_zero
        self.last_ts = None
        self.counts = {"received": 0, "decoded": 0, "filling": 0, "invalid": 0, "gaps": 0, "missed_bins": 0,
                       "restarts": 0, "pauses": 0}
        self.board_s = []
        self.bad_run = False
        self.cpu = {"seconds": 0.0, "wall_s": 0.0, "share": None, "ms_per_bin": 0.0}

    def continuity(self, ts: float) -> None:
        """Reset the decoder at a hole or a jump back in the stamps, counting the bins that never came."""
        if self.last_ts is None:
            return
        step = (ts - self.last_ts) / self.bin_s
        if step > 1.5:
            missing = int(round(step)) - 1
            self.counts["gaps"] += 1
            self.counts["missed_bins"] += missing
            self.problems.say("gap: {} bin(s) missing before stamp {:.3f}; decoding restarts once {} new bins "
                              "fill the window".format(missing, ts, self.bins.ring.bins))
            self.bins.reset()
        elif step < 0.5:
            self.counts["restarts"] += 1
            self.problems.say("stamp {:.3f} is not after the last bin's ({:.3f}): the stream restarted or reordered; "
                              "decoding restarts".format(ts, self.last_ts))
            self.bins.reset()

    def handle(self, sample: list, ts: float, received: float) -> None:
        """Decode one input bin and publish its decision (always exactly one output sample per input)."""
        self.counts["received"] += 1
        self.continuity(ts)
        self.last_ts = ts
        nan = float("nan")
        counts = np.asarray(sample, np.float64)
        problem = bad_counts(counts, ts)
        if problem:
            self.counts["invalid"] += 1
            if not self.bad_run:
                self.problems.say("{}; not decoded, decoding restarts after it".format(problem))
            self.bad_run = True
            self.bins.reset()
            out = [-1, -1, -1, nan, nan, nan, nan, nan, nan, nan, STATUS["invalid"]]
        else:
            self.bad_run = False
            state, decision, scores, value, smoothed, times = self.bins.step(counts.astype(np.uint8))
            whole = self.bins.ring.full
            probability = nan if scores is None else dequantise_one(scores[decision], self.out_scale, self.out_zero)
            out = [state if whole else -1, decision, self.object_ids.get(decision, -1), probability, value, smoothed,
                   times[0] * 1e3, times[1] * 1e3, times[2] * 1e3, nan, STATUS["decoded" if whole else "filling"]]
            self.counts["decoded" if whole else "filling"] += 1
        board_s = time.perf_counter() - received
        out[9] = board_s * 1e3
        self.outlet.push_sample(out, ts)
        self.board_s.append(board_s)


def run(folders: list, stream: str, outlet_name: str, debounce: int = 2, smooth_ms: float = SMOOTH_MS,
        allow_edgetpu: bool = True, threads: int = 1, resolve_s: float = 30.0, idle_stop: float = 0.0,
        unlabelled: bool = False, pidfile: str = None) -> dict:
    """Decode the stream until a signal (or `idle_stop` s without input once subscribed); the summary.
    The pid file (for a remote stop) exists exactly while this runs; a signal during set-up ends it too."""
    stop = on_signals()
    if pidfile:
        write_atomically(pidfile, str(os.getpid()))
    try:
        return _run(folders, stream, outlet_name, debounce, smooth_ms, allow_edgetpu, threads, resolve_s, idle_stop,
                    unlabelled, stop)
    finally:
        if pidfile and os.path.exists(pidfile):
            os.remove(pidfile)


def _run(folders: list, stream: str, outlet_name: str, debounce: int, smooth_ms: float, allow_edgetpu: bool,
         threads: int, resolve_s: float, idle_stop: float, unlabelled: bool, stop: list) -> dict:
    pylsl = lsl.load()
    manifests = [load_manifest(folder) for folder, _ in folders]  # checked in full by load_decoders below
    det_m = manifests[0]
    bin_ms = float(det_m["data"]["bin_ms"])
    models = {task: m["name"] for (_, task), m in zip(folders, manifests)}
    outlet = make_outlet(pylsl, outlet_name, 1000.0 / bin_ms, models, det_m["data"]["session"])
    info = find_stream(pylsl, stream, resolve_s)
    inlet = pylsl.StreamInlet(info, max_buflen=60, recover=True)
    full = _opened(lambda: inlet.info(timeout=10.0), stream)
    check_stream(full, channel_labels(full), det_m, unlabelled)  # before any model loads: a wrong stream costs nothing
    decoders, _ = load_decoders(folders, allow_edgetpu, threads)
    (det, det_m, runtime), (cls, cls_m, _) = decoders[:2]
    ape = decoders[2][0] if len(decoders) > 2 else None
    smoother = Smoother(smooth_ms, bin_ms) if ape else None
    _opened(lambda: inlet.open_stream(timeout=10.0), stream)
    for decoder in [d for d, _, _ in decoders]:  # warm up: the first invokes set up kernels, never on a live bin
        for _ in range(5):
            decoder.invoke(np.zeros((1,) + decoder.window_shape, np.int8))
    problems = Problems()
    live = Live(BinDecoder(det, cls, debounce, ape, smoother), class_of_objects(cls_m), bin_ms / 1000.0, outlet, problems)
    print("device.live: decoding {} ({} channels at {:g} Hz from {}) -> outlet {}".format(
        one_line(stream, 80), full.channel_count(), full.nominal_srate(), one_line(full.hostname(), 40), outlet_name),
        file=sys.stderr, flush=True)
    watcher = pylsl.ContinuousResolver(prop="name", value=stream, forget_after=1.5)
    why = _loop(inlet, live, stop, idle_stop, bin_ms / 1000.0, watcher, info.uid(), problems)
    lat = np.asarray(live.board_s) * 1e3
    return {"stream": stream, "outlet": outlet_name, "source": {"hostname": full.hostname(), "source_id": full.source_id()},
            "session": det_m["data"]["session"], "bin_ms": bin_ms, "models": models, **runtime.describe(),
            "debounce_bins": debounce, "smoother": smoother.describe() if smoother else None, "stopped_by": why,
            **live.counts, "cpu": live.cpu, "problem_lines": problems.lines,
            "board_ms": {"p50": float(np.percentile(lat, 50)) if len(lat) else None,
                         "p99": float(np.percentile(lat, 99)) if len(lat) else None,
                         "max": float(lat.max()) if len(lat) else None},
            "input_saturated": {"detector": saturated(det), "classifier": saturated(cls),
                                **({"aperture": saturated(ape)} if ape else {})}}


def _opened(call, stream: str):
    """An inlet call that needs the publisher; pylsl's lost / timed-out errors as one DeviceError line."""
    try:
        return call()
    except RuntimeError as exc:  # pylsl's TimeoutError and LostError
        raise DeviceError("stream {} did not answer while being opened ({}); is its publisher still running?".format(
            one_line(stream, 80), type(exc).__name__)) from None


def on_signals() -> list:
    """A flag that SIGINT/SIGTERM set: the loop ends between bins, never inside one."""
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    return stop


def _loop(inlet, live: Live, stop: list, idle_stop: float, bin_s: float, watcher, uid: str, problems: Problems) -> str:
    """Pull and decode bins until told to stop; why it stopped. CPU share covers the first to the last bin."""
    clock = time.perf_counter
    last_input, paused, warned, first = clock(), False, False, None
    cpu0 = wall0 = 0.0
    gc.collect()
    gc.disable()  # no collector pauses inside a bin; collected while the input is idle
    try:
        while not stop:
            sample, ts = inlet.pull_sample(timeout=0.1)
            now = clock()
            if sample is None:
                gc.collect()
                if live.counts["received"] and not paused and now - last_input > 3 * bin_s:
                    paused = True
                    live.counts["pauses"] += 1
                    problems.say("input paused: no bin for {:.0f} ms".format((now - last_input) * 1e3))
                if idle_stop > 0 and now - last_input > idle_stop:  # counted from subscription
                    return "idle for {:g} s".format(idle_stop)
                continue
            if first is None:
                first, cpu0, wall0 = now, time.process_time(), now
            paused, last_input = False, now
            live.handle(sample, ts, now)
            if not warned and live.counts["received"] % 25 == 0:
                warned = _second_publisher(watcher, uid, problems)
        return "signal"
    finally:
        gc.enable()
        wall = (last_input - wall0) if first is not None else 0.0
        cpu = (time.process_time() - cpu0) if first is not None else 0.0
        n = max(live.counts["received"], 1)
        live.cpu = {"seconds": cpu, "wall_s": wall, "share": cpu / wall if wall > 0 else None,
                    "ms_per_bin": 1e3 * cpu / n}


def _second_publisher(watcher, uid: str, problems: Problems) -> bool:
    others = [i for i in watcher.results() if i.uid() != uid]
    if others:
        problems.say("a second stream named {} appeared on {}; still decoding the first one; give each publisher "
                     "its own name".format(one_line(others[0].name(), 80), one_line(others[0].hostname(), 40)))
    return bool(others)


def format_result(r: dict) -> str:
    cpu, b = r["cpu"], r["board_ms"]
    return "\n".join([
        "live {} -> {} | {} on {} ({}), stopped by {}".format(r["stream"], r["outlet"], " + ".join(r["models"].values()),
                                                             r["runtime"], r["detail"], r["stopped_by"]),
        "  bins: {received} received, {decoded} decoded, {filling} while the window filled, {invalid} invalid; "
        "{gaps} gaps ({missed_bins} missed bins), {restarts} restarts, {pauses} pauses".format(**r),
        "  on the board per bin (pull to push): p50 {} ms, p99 {} ms, max {} ms; CPU {:.2f} ms per bin, {} of one "
        "core".format(*["-" if v is None else "{:.3f}".format(v) for v in (b["p50"], b["p99"], b["max"])],
                      cpu["ms_per_bin"], "-" if cpu["share"] is None else "{:.1%}".format(cpu["share"]))])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.live", description=__doc__.splitlines()[0])
    parser.add_argument("detector_dir", help="quantised grasp-phase model folder")
    parser.add_argument("classifier_dir", help="quantised object model folder (same session)")
    parser.add_argument("aperture_dir", nargs="?", default=None, help="quantised aperture model folder (optional)")
    parser.add_argument("--stream", required=True, help="name of the LSL stream of binned spike counts")
    parser.add_argument("--outlet", default=None, help="name of the decision outlet (default: STREAM-decoded)")
    parser.add_argument("--smooth-ms", type=float, default=SMOOTH_MS, help="aperture smoother time constant, ms (0 = none)")
    parser.add_argument("--debounce", type=int, default=2, help="consecutive bins before the state switches")
    parser.add_argument("--resolve-s", type=float, default=30.0, help="how long to wait for the stream to appear")
    parser.add_argument("--idle-stop", type=float, default=0.0, help="stop after this many seconds without input (0 = never)")
    parser.add_argument("--unlabelled", action="store_true", help="accept a stream whose channels have no labels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="never use the Edge TPU")
    parser.add_argument("--pidfile", default=None, help="write this process's id here (to stop it with SIGTERM)")
    parser.add_argument("--json", default=None, help="write the summary to this file ('-' = stdout)")
    args = parser.parse_args(argv)
    if args.debounce < 1 or args.threads < 1:
        parser.error("--debounce and --threads must be >= 1")
    if not (0.0 <= args.smooth_ms <= 10000.0) or not (0.0 < args.resolve_s <= 3600.0) or not args.idle_stop >= 0:
        parser.error("--smooth-ms must lie in [0, 10000], --resolve-s in (0, 3600], --idle-stop >= 0")
    folders = [(args.detector_dir, "grasp-phase"), (args.classifier_dir, "object")] + (
        [(args.aperture_dir, "aperture")] if args.aperture_dir else [])
    try:
        result = run(folders, args.stream, args.outlet or args.stream + "-decoded", args.debounce, args.smooth_ms,
                     not args.cpu, args.threads, args.resolve_s, args.idle_stop, args.unlabelled, args.pidfile)
    except DeviceError as exc:
        print("device.live: error: {}".format(exc), file=sys.stderr)
        return 2
    emit(result, args.json, format_result(result) if args.json != "-" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
