"""`grasptpu report`: one self-contained HTML page of what a board and a live session measured.

Inputs (any of them, at least one), all written by other commands:
- the board bench JSON (`grasptpu bench --board NAME --json FILE`): per model device.bench's
  latency percentiles and, from this version on, its per-invoke histogram (`histogram_ms`);
- a live session folder: `summary.json` (board, session, models, their folders, latency, missed
  bins, agreement with the offline replay) and `bins.npz` (one row per bin the replay sent);
  the model folders it names give the truth (spike counts, Hold/Rew bins, objects, aperture) and
  are read only through device.contract, as the board reads them.

The page is one file: every figure is a PNG (matplotlib Agg) inlined as a data: URI, so it opens
from disk with no server. A small script marks each image `data-shown="yes"/"no"` once loaded and
puts "shown/total" in `body[data-figures]` (what the headless-browser test reads). Every number the
page prints comes from the input files.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from device.contract import STREAM_TASKS, DeviceError, TestSet, load_manifest, read_npz
from device.stream import class_of_objects, target_per_bin, trial_figures
from host.live.session import MISSING
from host.errors import GrasptpuError
from host.files import read_foreign, write_text

SUMMARY = "summary.json"
BINS = "bins.npz"
MAX_JSON_BYTES = 64 << 20  # a bench or summary JSON is kB; histograms and many boards stay far below this
BENCH_HINT = "write it with `grasptpu bench --board NAME --json FILE`"
LIVE_HINT = "record the session again (its folder holds summary.json and bins.npz)"

# bins.npz: one row per bin the replay sent; integer and float arrays, all of one length.
BIN_INT_ARRAYS = ("trial", "bin", "grasp", "object_index", "offline_grasp", "offline_object")
BIN_FLOAT_ARRAYS = ("timestamp", "received", "latency_ms", "probability", "aperture", "aperture_smoothed",
                    "detector_ms", "classifier_ms", "aperture_ms", "board_ms")
SUMMARY_KEYS = ("session", "models", "model_dirs", "bin_ms", "latency", "bins_sent", "bins_received",
                "missed_bins", "agreement")
COMPUTE = (("detector_ms", "detector"), ("classifier_ms", "classifier"), ("aperture_ms", "aperture"),
           ("board_ms", "board total"))


def build_report(out: Path, bench_json: Path | None = None, live_dir: Path | None = None, trials: int = 3) -> dict:
    """Write the report page.

    Args:
      out: the .html to write (replaced atomically).
      bench_json: a `grasptpu bench --json` file, or None.
      live_dir: a live session folder (summary.json, bins.npz), or None.
      trials: how many trials get a per-bin timeline (the first ones of the session with a hold).
    Returns:
      {"path", "figures": [names], "bench", "live", "trials": [trial indices drawn]}.
    Raises:
      GrasptpuError: no input, or an input that is missing or not in its format (one line).
    """
    if bench_json is None and live_dir is None:
        raise GrasptpuError("grasptpu report: give a bench JSON (--bench), a live session folder (--live) or both")
    if trials < 0:
        raise GrasptpuError(f"grasptpu report: --trials {trials} is negative; give 0 or more")
    sections, figures, drawn = [], [], []
    if bench_json is not None:
        boards = load_bench(Path(bench_json))
        sections.append(_bench_section(Path(bench_json), boards, figures))
    if live_dir is not None:
        live = load_live(Path(live_dir))
        drawn = pick_trials(live, trials)
        sections.append(_live_section(live, drawn, figures))
    page = _page(sections, len(figures))
    out = Path(out)
    write_text(out, page)
    return {"path": str(out), "figures": [name for name, _ in figures], "bench": None if bench_json is None else
            str(bench_json), "live": None if live_dir is None else str(live_dir), "trials": drawn}


# ---------------------------------------------------------------- inputs

def read_json(path: Path, what: str, hint: str):
    """A JSON file someone else wrote, parsed, or a one-line GrasptpuError naming it (`read_foreign`)."""
    return read_foreign(path, what, "a", "JSON", json.loads, MAX_JSON_BYTES, hint)


def load_bench(path: Path) -> list:
    """[(board name, {model name: device.bench result})] from a bench JSON: the list `grasptpu bench`
    writes (one result per board), {"boards": that list or {name: result}}, one board's result, or
    one device.bench result."""
    data = read_json(path, "bench JSON", BENCH_HINT)
    if isinstance(data, dict) and "boards" in data:
        data = data["boards"]
        if isinstance(data, dict):
            data = [dict(r, board=r.get("board", name)) if isinstance(r, dict) else r for name, r in data.items()]
    if isinstance(data, dict) and "latency" in data and "task" in data:  # one device.bench result
        data = [{"board": data.get("machine", {}).get("node", "this machine"), "models": {data.get("model", "model"): data}}]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise GrasptpuError(f"{path}: holds no board results (a list of boards, or {{\"boards\": ...}}); {BENCH_HINT}")
    boards = []
    for i, board in enumerate(data):
        if not isinstance(board, dict) or not isinstance(board.get("models"), dict):
            raise GrasptpuError(f"{path}: board entry {i} has no \"models\" table; {BENCH_HINT}")
        name = str(board.get("board", f"board {i}"))
        for model, r in board["models"].items():
            lat = r.get("latency") if isinstance(r, dict) else None
            if not isinstance(lat, dict) or not all(_is_number(lat.get(k)) for k in ("p50_ms", "p99_ms", "max_ms")):
                raise GrasptpuError(f"{path}: board {name}, model {model}: no latency p50_ms/p99_ms/max_ms; {BENCH_HINT}")
            hist = lat.get("histogram_ms")
            if hist is not None and not _histogram_ok(hist):
                raise GrasptpuError(f"{path}: board {name}, model {model}: histogram_ms is not edges (n + 1 increasing "
                                    f"numbers) and counts (n integers); {BENCH_HINT}")
        boards.append((name, board["models"]))
    return boards


def _histogram_ok(hist) -> bool:
    if not isinstance(hist, dict):
        return False
    edges, counts = hist.get("edges"), hist.get("counts")
    return (isinstance(edges, list) and isinstance(counts, list) and len(counts) >= 1 and len(edges) == len(counts) + 1
            and all(_is_number(e) for e in edges) and all(type(c) is int and c >= 0 for c in counts)
            and all(a <= b for a, b in zip(edges, edges[1:])))


def _is_number(x) -> bool:
    return type(x) in (int, float) and x == x


class Live:
    """A live session: its summary, its per-bin arrays and the truth from its model folders."""

    def __init__(self, folder: Path, summary: dict, bins: dict, manifests: dict, tests: dict) -> None:
        self.folder, self.summary, self.bins = folder, summary, bins
        self.manifests, self.tests = manifests, tests
        self.detector_test = tests["grasp-phase"]
        self.classes = class_of_objects(manifests["object"])  # object id -> class index
        self.bin_ms = float(summary["bin_ms"])
        self.target_rows = target_per_bin(tests["aperture"]) if "aperture" in tests else None

    def rows(self, k: int) -> np.ndarray:
        """Indices into `bins` of trial k, in bin order."""
        idx = np.flatnonzero(self.bins["trial"] == k)
        return idx[np.argsort(self.bins["bin"][idx], kind="stable")]

    def trial_length(self, k: int) -> int:
        offsets = self.detector_test.arrays["trial_offsets"]
        return int(offsets[k + 1] - offsets[k])

    def per_bin(self, k: int, key: str, fill) -> np.ndarray:
        """bins[key] of trial k placed at its bins (a bin never sent keeps `fill`)."""
        values = self.bins[key]
        out = np.full(self.trial_length(k), fill, dtype=np.float64 if values.dtype.kind == "f" else np.int64)
        idx = self.rows(k)
        out[self.bins["bin"][idx]] = values[idx]
        return out

    def true_class(self, k: int) -> int:
        return self.classes[int(self.detector_test.arrays["object_id"][k])]

    def hold(self, k: int) -> tuple:
        a = self.detector_test.arrays
        return int(a["hold_bin"][k]), int(a["reward_bin"][k])


def load_live(folder: Path) -> Live:
    """A live session folder, checked: summary.json's fields, bins.npz's arrays (names, kinds, one
    length, trials and bins inside the model folders' test trials) and the model folders it names."""
    if not folder.is_dir():
        raise GrasptpuError(f"{folder}: no such live session folder; {LIVE_HINT}")
    path = folder / SUMMARY
    summary = read_json(path, "live session summary", LIVE_HINT)
    if not isinstance(summary, dict):
        raise GrasptpuError(f"{path}: not a JSON object; {LIVE_HINT}")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise GrasptpuError(f"{path}: lacks {', '.join(missing)}; {LIVE_HINT}")
    if not _is_number(summary["bin_ms"]) or summary["bin_ms"] <= 0:
        raise GrasptpuError(f"{path}: bin_ms {summary['bin_ms']!r:.40} is not a positive number; {LIVE_HINT}")
    for key in ("models", "model_dirs", "latency", "agreement"):
        if not isinstance(summary[key], dict):
            raise GrasptpuError(f"{path}: {key} is not a JSON object; {LIVE_HINT}")
    manifests, tests = {}, {}
    for task in STREAM_TASKS:
        where = summary["model_dirs"].get(task)
        if where is None and task == "aperture":
            continue
        if not isinstance(where, str) or not where:
            raise GrasptpuError(f"{path}: model_dirs names no {task} model folder; {LIVE_HINT}")
        model_dir = _model_dir(Path(where), folder)
        try:
            manifests[task] = load_manifest(str(model_dir))
            tests[task] = TestSet.load(str(model_dir), manifests[task])
        except DeviceError as exc:
            raise GrasptpuError(f"{exc} (the {task} model folder named in {path})") from None
        if manifests[task]["task"] != task:
            raise GrasptpuError(f"{model_dir}: a {manifests[task]['task']} model, but {path} names it as the {task} "
                                f"model; fix model_dirs")
        named = summary["models"].get(task)
        if named is not None and named != manifests[task]["name"]:
            raise GrasptpuError(f"{model_dir}: holds model {manifests[task]['name']}, but {path} says the session "
                                f"ran {named}; point model_dirs at the folders the session used")
    first = tests["grasp-phase"].arrays["trial_index"]
    for task, test in tests.items():
        if not np.array_equal(first, test.arrays["trial_index"]):
            raise GrasptpuError(f"{summary['model_dirs'][task]}: its test trials differ from the grasp-phase model's; "
                                f"the models must come from one session and split")
    bins = _load_bins(folder / BINS, tests["grasp-phase"], len(manifests["object"]["labels"]))
    try:
        class_of_objects(manifests["object"])
    except (KeyError, TypeError, ValueError):
        raise GrasptpuError(f"{summary['model_dirs']['object']}: its manifest's labels carry no object_id per class; "
                            f"re-run `grasptpu quantize`") from None
    return Live(folder, summary, bins, manifests, tests)


def _model_dir(where: Path, live_dir: Path) -> Path:
    """A model folder as summary.json names it: absolute, or relative to where the session ran
    (the current folder) or else to the session folder."""
    if where.is_absolute() or where.is_dir():
        return where
    beside = live_dir / where
    return beside if beside.is_dir() else where


def _load_bins(path: Path, test: TestSet, n_classes: int) -> dict:
    if not path.is_file():
        raise GrasptpuError(f"{path}: no such file (the live session's per-bin arrays); {LIVE_HINT}")
    try:
        bins = read_npz(str(path), "per-bin arrays", LIVE_HINT)
    except DeviceError as exc:
        raise GrasptpuError(str(exc)) from None
    missing = [k for k in BIN_INT_ARRAYS + BIN_FLOAT_ARRAYS if k not in bins]
    if missing:
        raise GrasptpuError(f"{path}: lacks the arrays {', '.join(missing)}; {LIVE_HINT}")
    n = len(bins["trial"]) if bins["trial"].ndim == 1 else -1
    for key in BIN_INT_ARRAYS + BIN_FLOAT_ARRAYS:
        kinds = "iu" if key in BIN_INT_ARRAYS else "f"
        a = bins[key]
        if a.ndim != 1 or len(a) != n or a.dtype.kind not in kinds:
            raise GrasptpuError(f"{path}: {key} is {a.dtype} {a.shape}, expected ({n},) "
                                f"{'integers' if kinds == 'iu' else 'floats'}; {LIVE_HINT}")
    if not n:
        raise GrasptpuError(f"{path}: holds no bins; {LIVE_HINT}")
    trial, b = bins["trial"].astype(np.int64), bins["bin"].astype(np.int64)
    offsets = test.arrays["trial_offsets"]
    if trial.min() < 0 or trial.max() >= test.n_trials:
        raise GrasptpuError(f"{path}: trial indices {trial.min()}..{trial.max()} lie outside the model folders' "
                            f"{test.n_trials} test trials; point model_dirs at the folders the session used")
    inside = trial.clip(0, test.n_trials - 1)
    if b.min() < 0 or (b >= np.diff(offsets)[inside]).any():
        raise GrasptpuError(f"{path}: a bin lies outside its test trial; point model_dirs at the folders the "
                            f"session used")
    for key in ("object_index", "offline_object"):
        if bins[key].min() < MISSING or bins[key].max() >= n_classes:
            raise GrasptpuError(f"{path}: {key} holds classes outside {MISSING}..{n_classes - 1} (the classifier's, "
                                f"-1 for none, {MISSING} for a missed bin); {LIVE_HINT}")
    bins["trial"], bins["bin"] = trial, b
    return bins


def pick_trials(live: Live, n: int) -> list:
    """The first `n` trials the session sent (by test-set index) that have a hold (Hold before Rew,
    inside the trial): reproducible, and each timeline has a grasp to show."""
    picked = []
    for k in np.unique(live.bins["trial"]):
        hold, reward = live.hold(int(k))
        if 0 <= hold < reward <= live.trial_length(int(k)) and len(picked) < n:
            picked.append(int(k))
    return picked


# ---------------------------------------------------------------- figures

def _figure(figsize: tuple):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=90)  # a bare Figure: no pyplot registry to leak into


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hist_panel(ax, edges, counts, title: str, marks: dict, unit: str = "ms") -> None:
    edges, counts = np.asarray(edges, float), np.asarray(counts, float)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="none")
    if counts.max(initial=0) > 0:
        ax.set_yscale("log")
    for (label, x), color in zip(marks.items(), ("#dd8452", "#c44e52", "#8172b3")):
        if x is not None:
            ax.axvline(x, color=color, lw=1.2, ls="--", label=f"{label} {x:.3f} {unit}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit)
    ax.set_ylabel("count")
    if marks:
        ax.legend(fontsize=7)


def _grid(n: int, cols: int = 3, height: float = 2.8):
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig = _figure((4.4 * cols, height * rows + 0.4))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def bench_figure(boards: list):
    panels = [(b, m, r) for b, models in boards for m, r in models.items()]
    fig, axes = _grid(len(panels))
    for ax, (board, model, r) in zip(axes, panels):
        lat = r["latency"]
        title = f"{board}: {model} ({r.get('task', '?')})"
        hist = lat.get("histogram_ms")
        if hist is None:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{title}\nno histogram in this bench JSON\n(device.bench before histogram_ms)",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
            continue
        _hist_panel(ax, hist["edges"], hist["counts"], title, {"p50": lat["p50_ms"], "p99": lat["p99_ms"]})
    fig.tight_layout()
    return fig


def live_latency_figure(live: Live):
    b = live.bins
    series = [("latency_ms", "end to end (bin sent -> decision back)")] + [(k, f"board compute: {t}") for k, t in COMPUTE]
    series = [(k, t) for k, t in series if np.isfinite(b[k]).any()]
    fig, axes = _grid(len(series), cols=len(series) if len(series) <= 3 else 3)
    lat = live.summary["latency"]
    for ax, (key, title) in zip(axes, series):
        values = b[key][np.isfinite(b[key])]
        counts, edges = np.histogram(values, bins=40)
        marks = {"p50": lat.get("p50_ms"), "p99": lat.get("p99_ms")} if key == "latency_ms" else {}
        _hist_panel(ax, edges, counts, f"{title}, {len(values)} bins", {k: v for k, v in marks.items() if _is_number(v)})
    fig.tight_layout()
    return fig


def trial_figure(live: Live, k: int):
    bin_s = live.bin_ms / 1000.0
    n = live.trial_length(k)
    hold, reward = live.hold(k)
    truth = live.true_class(k)
    offsets = live.detector_test.arrays["trial_offsets"]
    counts = live.detector_test.counts[offsets[k]:offsets[k + 1]]
    aperture = "aperture" in live.tests
    heights = [2.2, 0.9, 1.6, 0.9] + ([1.5] if aperture else [])
    fig = _figure((12.0, 1.3 * sum(heights) + 0.6))
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    t_s = np.arange(n) * bin_s  # bin b starts at b * bin; a decision belongs to the bin it was made on
    raster, det, cls, conf = axes[:4]
    raster.imshow(counts.T, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest",
                  extent=(0, n * bin_s, 0, counts.shape[1]))
    raster.set_ylabel("unit")
    for ax in axes:
        ax.axvspan(hold * bin_s, reward * bin_s, color="#55a868", alpha=0.15, lw=0)
    sent = np.zeros(n, bool)
    sent[live.bins["bin"][live.rows(k)]] = True
    grasp = live.per_bin(k, "grasp", -1).astype(float)
    grasp[grasp < 0] = np.nan  # ring filling, or never sent
    det.step(t_s, grasp, where="post", color="#4c72b0", label="live")
    det.step(t_s, np.where(live.per_bin(k, "offline_grasp", -1) < 0, np.nan, live.per_bin(k, "offline_grasp", -1)),
             where="post", color="#dd8452", ls="--", lw=1, label="offline replay")
    missed = sent & ~np.isfinite(live.per_bin(k, "received", np.nan))
    if missed.any():
        det.plot(t_s[missed], np.full(missed.sum(), 0.5), "x", color="#c44e52", ms=5, label="missed bin")
    det.set_yticks([0, 1], ["rest", "grasp"])
    det.set_ylim(-0.3, 1.3)
    det.legend(fontsize=7, loc="upper left", ncol=3)
    obj = live.per_bin(k, "object_index", -1)
    has = obj >= 0
    ok = has & (obj == truth)
    cls.axhline(truth, color="black", lw=1, label=f"true class {truth}")
    cls.plot(t_s[ok], obj[ok], "o", color="#55a868", ms=3, label="correct")
    cls.plot(t_s[has & ~ok], obj[has & ~ok], "o", color="#c44e52", ms=3, label="wrong")
    cls.set_ylabel("object class")
    cls.set_ylim(-1, len(live.manifests["object"]["labels"]))
    cls.legend(fontsize=7, loc="upper left", ncol=3)
    conf.plot(t_s, live.per_bin(k, "probability", np.nan), ".-", color="#8172b3", ms=2, lw=0.8)
    conf.set_ylabel("probability")
    conf.set_ylim(0, 1.05)
    if aperture:
        ape = axes[4]
        target = live.target_rows[offsets[k]:offsets[k + 1]]
        ape.plot(t_s, target, color="black", lw=1.2, label="true")
        ape.plot(t_s, live.per_bin(k, "aperture", np.nan), color="#4c72b0", lw=0.8, alpha=0.7, label="decoded")
        ape.plot(t_s, live.per_bin(k, "aperture_smoothed", np.nan), color="#dd8452", lw=1.2, label="smoothed")
        ape.set_ylabel(f"aperture ({live.manifests['aperture']['data'].get('target', {}).get('units', '?')})")
        ape.legend(fontsize=7, loc="upper left", ncol=3)
    axes[-1].set_xlabel("time from trial start (s)")
    fig.suptitle(f"test trial {k}: object {int(live.detector_test.arrays['object_id'][k])} (class {truth}), "
                 f"Hold {hold * bin_s:.2f} s .. Rew {reward * bin_s:.2f} s", fontsize=10)
    fig.tight_layout()
    return fig


def first_correct(live: Live) -> tuple:
    """(seconds from Hold onset to the first correct object decision, per trial that has one;
    trials with a hold but none; trials with a hold) over every trial the session sent, by
    device.stream.trial_figures on the live decisions."""
    seconds, never, total = [], 0, 0
    for k in np.unique(live.bins["trial"]):
        k = int(k)
        hold, reward = live.hold(k)
        if not 0 <= hold < reward <= live.trial_length(k):
            continue
        total += 1
        run = {"state": np.maximum(live.per_bin(k, "grasp", -1), 0), "decision": live.per_bin(k, "object_index", -1)}
        first = trial_figures(run, hold, reward, live.true_class(k), live.bin_ms / 1000.0)["first_correct_s"]
        if first is None:
            never += 1
        else:
            seconds.append(first)
    return seconds, never, total


def first_correct_figure(seconds: list, bin_ms: float):
    fig = _figure((6.5, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    bin_s = bin_ms / 1000.0
    top = max(seconds) if seconds else bin_s
    edges = np.arange(0, top + 2 * bin_s, bin_s)  # one bar per bin: the decisions come once a bin
    counts, _ = np.histogram(seconds, bins=edges)
    median = float(np.median(seconds)) if seconds else None
    _hist_panel(ax, edges, counts, f"Hold onset -> first correct object decision, {len(seconds)} trials",
                {"median": median}, unit="s")
    ax.set_yscale("linear")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- page

def _bench_section(path: Path, boards: list, figures: list) -> str:
    rows = []
    for board, models in boards:
        for model, r in models.items():
            lat = r["latency"]
            rows.append([board, model, r.get("task", "?"), r.get("runtime", "?"), _fmt(lat.get("n")),
                         _fmt(lat["p50_ms"]), _fmt(lat.get("p90_ms")), _fmt(lat["p99_ms"]), _fmt(lat["max_ms"]),
                         _accuracy(r)])
    table = _table(["board", "model", "task", "runtime", "invokes", "p50 ms", "p90 ms", "p99 ms", "max ms", "accuracy"],
                   rows)
    fig = _img(figures, "bench-latency", bench_figure(boards),
               "Per-invoke latency of each decoder on the board (device.bench), one panel per model",
               "Latency histograms from the bench JSON (log count scale); dashed lines: p50 and p99.")
    return f"<section><h2>Board bench</h2><p class=src>{_e(path)}</p>{table}{fig}</section>"


def _accuracy(r: dict) -> str:
    acc = r.get("accuracy") or {}
    if "r2" in acc:
        return f"R2 {_fmt(acc['r2'])}"
    return _fmt(acc.get("accuracy"))


def _live_section(live: Live, drawn: list, figures: list) -> str:
    s, b = live.summary, live.bins
    board_name = s.get("board") if isinstance(s.get("board"), str) else "?"
    models = ", ".join(f"{t} {s['models'].get(t)}" for t in STREAM_TASKS if s["models"].get(t))
    trials = np.unique(b["trial"])
    lat, agree = s["latency"], s["agreement"]
    facts = [("board", board_name), ("session", s["session"]), ("models", models),
             ("data", f"{len(trials)} test trials ({_ranges(trials)}), {len(b['trial'])} bins in bins.npz, "
                      f"{_fmt(s['bin_ms'])} ms bins"),
             ("end-to-end latency", f"p50 {_fmt(lat.get('p50_ms'))} ms, p99 {_fmt(lat.get('p99_ms'))} ms, "
                                    f"max {_fmt(lat.get('max_ms'))} ms"),
             ("bins", f"{_fmt(s['bins_sent'])} sent, {_fmt(s['bins_received'])} received, "
                      f"{_fmt(s['missed_bins'])} missed"),
             ("agreement with the offline replay", f"{_fmt(agree.get('identical'))} of {_fmt(agree.get('bins'))} "
                                                   f"bins identical")]
    device = _board_summary(s)
    facts += [(f"board: {k}", v) for k, v in device]
    header = "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"
    parts = [f"<section><h2>Live session</h2><p class=src>{_e(live.folder)}</p>{header}"]
    parts.append(_img(figures, "live-latency", live_latency_figure(live),
                      "Live session latency: end to end per bin, and the board's compute per decoder",
                      "Histograms over the bins of bins.npz (bins with no decision left out); dashed lines: p50 and "
                      "p99 of summary.json."))
    seconds, never, total = first_correct(live)
    median = f"median {np.median(seconds):.3f} s" if seconds else "no trial reached a correct decision"
    parts.append(f"<p>Hold onset to the first correct object decision: {median} over {len(seconds)} of {total} trials "
                 f"with a hold; {never} never decided correctly.</p>")
    parts.append(_img(figures, "first-correct", first_correct_figure(seconds, live.bin_ms),
                      "Histogram of the time from Hold onset to the first correct object decision per trial",
                      f"Per trial with a hold: seconds from the Hold onset to the end of the first bin whose live "
                      f"decision is the true object ({median})."))
    for k in drawn:
        parts.append(_img(figures, f"trial-{k}", trial_figure(live, k),
                          f"Per-bin timeline of test trial {k}: spike raster, detector, classifier, confidence"
                          + (", aperture" if "aperture" in live.tests else ""),
                          f"Test trial {k}: spike counts (units x bins), the detector's state (live, offline replay "
                          f"dashed, missed bins x), the classifier's object class (green correct, red wrong, line: "
                          f"truth) and probability" + (", aperture true / decoded / smoothed" if "aperture" in
                                                       live.tests else "") + "; shaded: Hold .. Rew."))
    if not drawn:
        parts.append("<p>No trial with a hold was sent, or --trials 0: no timeline drawn.</p>")
    return "".join(parts) + "</section>"


def _board_summary(s: dict) -> list:
    """The figures of device.live's own summary (summary.json `board_live`) a reader needs."""
    b = s.get("board_live") if isinstance(s.get("board_live"), dict) else {}
    if not b:
        return []
    cpu, ms = b.get("cpu") or {}, b.get("board_ms") or {}
    share = cpu.get("share")
    return [("runtime", f"{b.get('runtime', '?')} {b.get('runtime_version', '')} ({b.get('detail', '')})"),
            ("compute per bin (pull to push)", f"p50 {_fmt(ms.get('p50'))} ms, p99 {_fmt(ms.get('p99'))} ms, "
                                               f"max {_fmt(ms.get('max'))} ms"),
            ("CPU per bin", f"{_fmt(cpu.get('ms_per_bin'))} ms, "
                            + ("-" if not _is_number(share) else f"{100 * share:.1f} % of one core")),
            ("input as the board saw it", f"{_fmt(b.get('received'))} bins, {_fmt(b.get('gaps'))} gaps "
                                          f"({_fmt(b.get('missed_bins'))} missing bins), {_fmt(b.get('invalid'))} "
                                          f"invalid, {_fmt(b.get('restarts'))} restarts")]


def _ranges(values) -> str:
    values = [int(v) for v in values]
    out, start = [], values[0]
    for a, b in zip(values, values[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def _img(figures: list, name: str, fig, alt: str, caption: str) -> str:
    data = _png(fig)
    figures.append((name, alt))
    return (f"<figure id=\"{_e(name)}\"><img alt=\"{_e(alt)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(head: list, rows: list) -> str:
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc}
.src{color:#666;font-family:monospace;font-size:.85em}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:.9em;color:#444}
.warning{color:#b00;font-weight:700}
"""

# Marks each image shown or not once the page has loaded, warns visibly when one is not, and puts
# "shown/total" on the body: what a reader sees and what the headless-browser test checks.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), shown = 0;
  for (var i = 0; i < imgs.length; i++) {
    var img = imgs[i], ok = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-shown", ok ? "yes" : "no");
    if (ok) { shown++; continue; }
    var warn = document.createElement("p");
    warn.className = "warning";
    warn.textContent = "This figure could not be shown: " + img.alt;
    img.parentNode.insertBefore(warn, img);
  }
  document.body.setAttribute("data-figures", shown + "/" + imgs.length);
});
"""


def _page(sections: list, n_figures: int) -> str:
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>grasptpu report</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head>"
            f"<body data-figures=\"0/{n_figures}\"><h1>grasptpu report</h1>" + "".join(sections) + "</body></html>\n")
