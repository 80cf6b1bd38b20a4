"""What a recording's trials mean: which annotation names the class, which events bound the
region of interest, which trials to keep. A layout file (TOML, `--layout FILE`) says it for a
researcher's own recording; the paper's layout is the built-in default (docs/method.md, "Trial
selection"), so a command without `--layout` behaves as it always has.

    [trials]
    class = "grip"               # per-trial annotation (Neo) or trials-table column (NWB) naming the class
    roi = ["CUE-OFF", "GO-ON"]   # region of interest: from the onset of the first event up to the second
    keep = { correct = 1 }       # optional: keep only trials whose values match (every key must match)
    merge = { 11 = 41 }          # optional: classes recorded under two names, merged into the second
    order = ["SG", "PG"]         # optional: class order (neighbours count for relaxed accuracy);
                                 #   classes not listed are dropped, each with a counted reason
    drop = [85, 86]              # optional: classes that are not grasps (never kept)
    min_trials = 3               # optional: a class with fewer kept trials is dropped (default 3)
    catalogue = "dpz-objects"    # optional: the paper's object catalogue: shape and size accuracies,
                                 #   and ids >= 85 (not grasp objects) dropped
    target = "aperture"          # optional: the continuous signal a regression decoder learns
                                 #   (a Neo AnalogSignal's or an NWB acquisition TimeSeries' name)

    [units]
    min_rate_hz = 0.5            # optional: drop units firing less than this over the kept trials

    [segments]                   # optional: trials cut from continuous segments (host/data/cut.py)
    start = "TS-ON"              # each onset starts a trial
    stop = "STOP"                # optional: it ends at the first such event after its start
    class_events = ["SGHF", "PGLF"]  # optional: the first of these in a trial is its `event_class`

A layout is stored in every model folder's manifest (`layout`), so later stages read the same
trials without being told again; it is part of the binned-session cache key.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from host.data import objects
from host.data.cut import Segments
from host.errors import GrasptpuError
from host.files import read_toml

CATALOGUES = ("dpz-objects",)  # the paper's grasp objects: id = 10 * turntable + position (host/data/objects.py)
MIN_TRIALS_PER_CLASS = 3  # so that every kept class can appear in train, validation and test
MAX_LAYOUT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Layout:
    """The meaning of a recording's trials (see the module docstring for each field)."""

    class_key: str = "obj"
    roi: tuple[str, str] = ("Hold", "Rew")
    keep: dict = field(default_factory=lambda: {"correct": 1})
    merge: dict = field(default_factory=lambda: dict(objects.DUPLICATE_IDS))
    order: tuple = ()
    drop: tuple = ()
    min_trials: int = MIN_TRIALS_PER_CLASS
    catalogue: str | None = "dpz-objects"
    min_rate_hz: float = 0.0
    segments: Segments | None = None
    target: str | None = "aperture"
    name: str = "paper"

    def as_dict(self) -> dict:
        """JSON-ready: what a manifest stores and the cache key hashes."""
        d = asdict(self)
        d["roi"], d["order"], d["drop"] = list(self.roi), list(self.order), list(self.drop)
        d["merge"] = {str(k): v for k, v in self.merge.items()}
        if self.segments is not None:
            d["segments"] = {"start": self.segments.start, "stop": self.segments.stop,
                             "class_events": list(self.segments.class_events)}
        return d

    def key(self) -> str:
        """A stable text of the layout for the cache key (the name is left out: it changes no trial)."""
        d = self.as_dict()
        d.pop("name")
        return json.dumps(d, sort_keys=True)

    def describe(self) -> str:
        """One line for summaries: what class, which region, which trials."""
        keep = ", ".join(f"{k} = {v!r}" for k, v in self.keep.items()) or "all trials"
        return (f"layout {self.name}: class from {self.class_key!r}, region {self.roi[0]}..{self.roi[1]}, "
                f"keep {keep}" + (f", catalogue {self.catalogue}" if self.catalogue else ""))


PAPER = Layout()


def _fail(path: object, problem: str) -> GrasptpuError:
    return GrasptpuError(f"{path}: {problem} (see `grasptpu prepare --help` for the layout file's keys)")


def _scalar(value) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 200) or (type(value) is int) or (
        type(value) is float and math.isfinite(value))


def _class_value(text_or_number, path: object, what: str):
    """A class value from a layout: text, or an integer (TOML keys are text: '11' means 11)."""
    if isinstance(text_or_number, str):
        try:
            return int(text_or_number)
        except ValueError:
            return text_or_number
    if type(text_or_number) is int:
        return text_or_number
    raise _fail(path, f"{what} {text_or_number!r} is not a class (text or an integer)")


_TRIAL_KEYS = {"class", "roi", "keep", "merge", "order", "drop", "min_trials", "catalogue", "target"}
_UNIT_KEYS = {"min_rate_hz"}


def from_dict(data: dict, path: object, name: str) -> Layout:
    """A Layout from a parsed layout file, each key checked; a one-line error names the key."""
    unknown = sorted(set(data) - {"trials", "units", "segments"})
    if unknown:
        raise _fail(path, f"unknown tables {unknown}; a layout has [trials], [units] and [segments]")
    trials, units = data.get("trials"), data.get("units", {})
    if not isinstance(trials, dict) or not isinstance(units, dict):
        raise _fail(path, "[trials] (and [units], if given) must be tables")
    segments = _segments(data.get("segments"), path)
    bad = sorted(set(trials) - _TRIAL_KEYS) + sorted(set(units) - _UNIT_KEYS)
    if bad:
        raise _fail(path, f"unknown keys {bad}; [trials] takes {sorted(_TRIAL_KEYS)}, [units] {sorted(_UNIT_KEYS)}")
    if "class" not in trials or "roi" not in trials:
        raise _fail(path, "[trials] needs `class` (the annotation naming the class) and `roi` (two event labels)")
    class_key, roi = trials["class"], trials["roi"]
    if not (isinstance(class_key, str) and 0 < len(class_key) <= 200):
        raise _fail(path, f"class = {class_key!r} is not an annotation name")
    if not (isinstance(roi, list) and len(roi) == 2 and all(isinstance(e, str) and e.strip() for e in roi)
            and roi[0] != roi[1]):
        raise _fail(path, f"roi = {roi!r} is not two different event labels [start, end]")
    keep = trials.get("keep", {})
    if not isinstance(keep, dict) or not all(_scalar(v) for v in keep.values()):
        raise _fail(path, "keep must be a table of annotation = value (text or a number)")
    merge = trials.get("merge", {})
    if not isinstance(merge, dict):
        raise _fail(path, "merge must be a table of class = class it merges into")
    merge = {_class_value(k, path, "merge"): _class_value(v, path, "merge") for k, v in merge.items()}
    order, drop = trials.get("order", []), trials.get("drop", [])
    for key, values in (("order", order), ("drop", drop)):
        if not isinstance(values, list):
            raise _fail(path, f"{key} must be a list of classes")
    order = tuple(_class_value(v, path, "order") for v in order)
    if len(set(order)) != len(order):
        raise _fail(path, "order lists a class twice")
    drop = tuple(_class_value(v, path, "drop") for v in drop)
    min_trials = trials.get("min_trials", MIN_TRIALS_PER_CLASS)
    if type(min_trials) is not int or not 3 <= min_trials <= 10000:
        raise _fail(path, f"min_trials = {min_trials!r} is not an integer >= 3 (train, validation and test "
                          "each need a trial of every class)")
    catalogue = trials.get("catalogue")
    if catalogue is not None and catalogue not in CATALOGUES:
        raise _fail(path, f"catalogue = {catalogue!r} is not one of {list(CATALOGUES)}")
    if catalogue is not None and order:
        raise _fail(path, "a catalogue orders its classes itself; give either `catalogue` or `order`")
    target = trials.get("target")
    if target is not None and not (isinstance(target, str) and 0 < len(target.strip()) <= 200):
        raise _fail(path, f"target = {target!r} is not a signal name")
    rate = units.get("min_rate_hz", 0.0)
    if type(rate) not in (int, float) or not (0 <= rate < 1000):
        raise _fail(path, f"min_rate_hz = {rate!r} is not a rate in Hz (0 to 1000)")
    return Layout(class_key=class_key, roi=(roi[0].strip(), roi[1].strip()), keep=dict(keep), merge=merge,
                  order=order, drop=drop, min_trials=min_trials, catalogue=catalogue, min_rate_hz=float(rate),
                  segments=segments, target=target.strip() if target else None, name=name)


def _segments(table, path: object) -> Segments | None:
    """The optional [segments] table: trials cut from continuous segments at a start event."""
    if table is None:
        return None
    if not isinstance(table, dict) or "start" not in table:
        raise _fail(path, "[segments] needs `start` (the event that starts each trial)")
    bad = sorted(set(table) - {"start", "stop", "class_events"})
    if bad:
        raise _fail(path, f"unknown keys {bad}; [segments] takes start, stop, class_events")
    start, stop, classes = table["start"], table.get("stop"), table.get("class_events", [])
    for key, value in (("start", start), ("stop", stop)):
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise _fail(path, f"{key} = {value!r} is not an event label")
    if not (isinstance(classes, list) and all(isinstance(c, str) and c.strip() for c in classes)):
        raise _fail(path, "class_events must be a list of event labels")
    return Segments(start.strip(), stop.strip() if stop else None, tuple(c.strip() for c in classes))


def load_layout(path: Path | str | None) -> Layout:
    """The layout file at `path`, or the paper's layout when None."""
    if path is None:
        return PAPER
    path = Path(path)
    data = read_toml(path, "layout", "a", MAX_LAYOUT_BYTES)
    return from_dict(data, path, path.stem)


def from_manifest(stored: dict | None) -> Layout:
    """The layout a model folder's manifest recorded (folders written before layouts: the paper's)."""
    if stored is None:
        return PAPER
    d = dict(stored)
    trials = {"class": d["class_key"], "roi": d["roi"], "keep": d["keep"], "merge": d["merge"], "order": d["order"],
              "drop": d["drop"], "min_trials": d["min_trials"]}
    if d.get("catalogue"):
        trials["catalogue"] = d["catalogue"]
    if d.get("target"):
        trials["target"] = d["target"]
    data = {"trials": trials, "units": {"min_rate_hz": d["min_rate_hz"]}}
    if d.get("segments"):
        data["segments"] = {k: v for k, v in d["segments"].items() if v is not None}
    return from_dict(data, "the manifest's layout", d.get("name", "stored"))
