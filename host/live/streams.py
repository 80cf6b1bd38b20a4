"""The acquisition system's stand-in and the prosthesis side's recorder, over Lab Streaming Layer.

`replay` publishes trials' binned counts as a real-time LSL stream (one float32 sample per bin,
one channel per unit labelled `unit<N>` in the model's unit order, nominal rate 1000 / bin_ms),
paced on the wall clock, each sample stamped with `local_clock()` at the moment it is pushed.
Test trials are not adjacent in a recording, so the replay leaves `gap_bins` of silence between
trials: the decoder sees the hole in the stamps, counts it and starts a fresh window, exactly as
the offline replay starts each trial afresh.

`record` subscribes to the board's decision outlet and keeps every sample with its stamp (the
input bin's stamp, passed through by device.live) and its local receive time, so on the machine
that runs the replay, receive time minus stamp is the end-to-end latency of that bin.

Both write their log atomically at the end (also when stopped by a signal), never half a file.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from device import lsl
from device.contract import DeviceError, TestSet, load_manifest
from device.live import channel_labels, find_stream, labels_of, on_signals
from host.errors import GrasptpuError
from host.files import atomic_path

REPLAY_TYPE = "SpikeCounts"
SPIN_S = 0.002  # the replay sleeps until this close to a slot, then spins: a sleep alone overshot by p99 2.3 ms here


def load_pylsl():
    """pylsl, or a GrasptpuError saying what is missing (device.lsl's diagnosis, one mechanism)."""
    try:
        return lsl.load()
    except DeviceError as exc:
        raise GrasptpuError(str(exc)) from None


@dataclasses.dataclass
class Trials:
    """Binned trials to publish: counts (rows x units, uint8), trial k's rows offsets[k]:offsets[k+1]."""

    session: str
    bin_ms: float
    counts: np.ndarray
    offsets: np.ndarray
    labels: list
    what: str
    first: int = 0  # the source's number of trial 0 here (the log names trials by the source's numbers)

    @property
    def n_trials(self) -> int:
        return len(self.offsets) - 1

    def pick(self, first: int, count: int) -> "Trials":
        """Trials first .. first + count - 1 (count 0: to the end)."""
        last = self.n_trials if count <= 0 else min(self.n_trials, first + count)
        if not 0 <= first < last:
            raise GrasptpuError(f"no trials from {first} (the source has {self.n_trials}); lower --first-trial")
        rows = slice(int(self.offsets[first]), int(self.offsets[last]))
        return dataclasses.replace(self, counts=self.counts[rows], offsets=self.offsets[first:last + 1] - self.offsets[first],
                                   what=f"{self.what}, trials {first}..{last - 1}", first=self.first + first)


def model_trials(folder: Path) -> Trials:
    """A model folder's test trials: exactly the bins the board's offline replay (device.stream) uses."""
    manifest = load_manifest(str(folder))
    test = TestSet.load(str(folder), manifest)
    data = manifest["data"]
    labels = labels_of(data.get("unit_index"))
    return Trials(data["session"], float(data["bin_ms"]), test.counts, np.asarray(test.arrays["trial_offsets"]), labels,
                  f"test split of {data['session']} from {folder}")


def recording_trials(path: Path, which: str, reading: dict, bin_ms: float = 40.0, seed: int = 0) -> Trials:
    """A recording's trials (`which`: "test" = the test split `grasptpu train` holds out with this seed, or "all")."""
    from host.data.prepare import prepare

    prepared = prepare(path, bin_ms=bin_ms, seed=seed, **reading)
    b = prepared.binned
    keep = prepared.split.test if which == "test" else np.arange(len(b.trial_offsets) - 1)
    keep = np.sort(keep)
    lengths = np.diff(b.trial_offsets)[keep]
    rows = np.concatenate([np.arange(b.trial_offsets[k], b.trial_offsets[k + 1]) for k in keep])
    return Trials(b.session, b.bin_ms, b.counts[rows], np.r_[0, np.cumsum(lengths)], labels_of(b.unit_index),
                  f"{which} trials of {b.session} from {path}")


def _one_stream_named(pylsl, name: str, timeout: float, publisher: str):
    """device.live's own lookup (one stream of that name, or one line), as a host error."""
    try:
        return find_stream(pylsl, name, timeout, publisher)
    except DeviceError as exc:
        raise GrasptpuError(str(exc)) from None


def replay(trials: Trials, stream: str, log_path: Path | None = None, gap_bins: int = 1, wait_s: float = 30.0,
           echo=print) -> dict:
    """Publish `trials` at the bin rate once a consumer is connected; the log of what was sent."""
    pylsl = load_pylsl()
    if _exists(pylsl, stream):
        raise GrasptpuError(f"an LSL stream named {stream} is already published; stop it or pick another --stream")
    units = trials.counts.shape[1]
    info = pylsl.StreamInfo(stream, REPLAY_TYPE, units, 1000.0 / trials.bin_ms, "float32", f"grasptpu-replay:{stream}")
    channels = info.desc().append_child("channels")
    for label in trials.labels:
        channels.append_child("channel").append_child_value("label", label).append_child_value("unit", "count")
    info.desc().append_child("grasptpu").append_child_value("session", trials.session)
    outlet = pylsl.StreamOutlet(info, 1)
    stop = on_signals()  # from here a signal ends the replay, and the log of what was sent is still written
    subscribed = outlet.wait_for_consumers(wait_s)
    if stop:
        raise GrasptpuError("replay: stopped before anyone subscribed; nothing was sent")
    if not subscribed:
        raise GrasptpuError(f"nobody subscribed to {stream} within {wait_s:g} s; start device.live (or another "
                            "consumer) first")
    echo(f"replay: {stream} has a consumer; publishing {trials.what}: {trials.n_trials} trials, "
         f"{len(trials.counts)} bins at {trials.bin_ms:g} ms")
    sent = _pace(pylsl, outlet, trials, gap_bins, stop)
    time.sleep(0.2)  # let liblsl hand the last samples over before the outlet goes
    del outlet
    log = {"timestamp": sent[0], "pushed": sent[3], "trial": sent[1], "bin": sent[2]}
    if log_path:
        with atomic_path(log_path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **log)
    return {"stream": stream, "what": trials.what, "bins": len(sent[0]), "trials": int(len(np.unique(sent[1]))),
            "interrupted": len(sent[0]) < len(trials.counts), "log": str(log_path) if log_path else None}


def _exists(pylsl, stream: str) -> bool:
    return bool(pylsl.resolve_byprop("name", stream, 1, 0.5))


def _pace(pylsl, outlet, trials: Trials, gap_bins: int, stop: list) -> tuple:
    """Push every bin on schedule and stamp it with its slot's time (bin i at start + slot_i * bin, gaps
    skipping `gap_bins` slots), as an acquisition system stamps a bin when it was recorded: a late
    push never looks like a gap or a restart to the decoder. (stamps, trial, bin, push times)."""
    n = len(trials.counts)
    lengths = np.diff(trials.offsets)
    trial_of = np.repeat(np.arange(trials.n_trials), lengths)
    bin_of = np.arange(n) - np.repeat(trials.offsets[:-1], lengths)
    slot = np.arange(n) + gap_bins * trial_of  # each trial after the first starts gap_bins slots later
    rows = trials.counts.astype(np.float32)
    bin_s = trials.bin_ms / 1000.0
    stamps = pylsl.local_clock() + 0.1 + slot * bin_s
    pushed = np.full(n, np.nan)
    for i in range(n):  # real time: one bin per slot, as an acquisition system would send them
        if stop:
            break
        _until(pylsl.local_clock, stamps[i])
        outlet.push_sample(rows[i], stamps[i])
        pushed[i] = pylsl.local_clock()
    done = int(np.isfinite(pushed).sum())
    return (stamps[:done], (trials.first + trial_of[:done]).astype(np.int32), bin_of[:done].astype(np.int32),
            pushed[:done])


def _until(clock, when: float) -> None:
    """Return at `when` on `clock`, not later: the OS wakes a sleeper late by up to a few ms, so the
    last SPIN_S are spent spinning (SPIN_S per bin: 5 % of one core at 40 ms bins, the replay's only)."""
    wait = when - clock() - SPIN_S
    if wait > 0:
        time.sleep(wait)
    while clock() < when:
        pass


def record(stream: str, out: Path, resolve_s: float = 30.0, idle_stop: float = 3.0, ready=None, echo=print) -> dict:
    """Keep every sample of `stream` (stamp, receive time, values) until `idle_stop` s without one after the
    first, or a signal; write them to `out` (.npz). `ready()` is called once subscribed."""
    pylsl = load_pylsl()
    info = _one_stream_named(pylsl, stream, resolve_s, "device.live (its decisions are NAME-decoded)")
    inlet = pylsl.StreamInlet(info, max_buflen=60, recover=True)
    full = inlet.info(timeout=10.0)
    inlet.open_stream(timeout=10.0)
    channels = channel_labels(full)
    if ready:
        ready()
    stop = on_signals()
    stamps, received, values = [], [], []
    last = time.perf_counter()
    while not stop:
        sample, ts = inlet.pull_sample(timeout=0.1)
        if sample is None:  # done: idle after the last sample, or nothing at all within resolve_s
            if time.perf_counter() - last > (idle_stop if stamps else resolve_s):
                break
            continue
        received.append(pylsl.local_clock())
        stamps.append(ts)
        values.append(sample)
        last = time.perf_counter()
    arrays = {"timestamp": np.asarray(stamps, np.float64), "received": np.asarray(received, np.float64),
              "values": np.asarray(values, np.float64).reshape(len(values), full.channel_count()),
              "channels": np.asarray(channels)}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    echo(f"record: {len(stamps)} samples of {stream} ({full.channel_count()} channels) -> {out}")
    return {"stream": stream, "samples": len(stamps), "out": str(out)}
