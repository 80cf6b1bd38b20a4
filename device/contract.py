"""The contract between host and board, in one place: a model folder's file names, its manifest
(format and validation), the test-set layout, the rules that turn counts into the int8 input and
int8 outputs back into scores, and the order the stream takes its decoders in.

`grasptpu train` and `grasptpu quantize` (host/) write model folders to this contract and import
it from here; the board's runner (device/) reads them with it. device/ imports nothing from
host/, so the board needs only this package, numpy and a TFLite runtime. Nothing is loaded
before every file the manifest lists (and that is on the board) matches its sha256.

Python 3.7 and old numpy (Mendel Linux): no walrus, no `sliding_window_view` (numpy 1.20).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile

import numpy as np

SUPPORTED_FORMAT = 1

# A model folder's files. The board receives BOARD_FILES (those present); the rest stay home.
MANIFEST = "manifest.json"
KERAS_MODEL = "model.keras"             # the trained Keras model (host only)
CALIBRATION = "calibration.npz"         # training windows the int8 ranges are calibrated on (host only)
FLOAT_MODEL = "model_float.tflite"
INT8_MODEL = "model_int8.tflite"
COMPILED_MODEL = "model_int8_edgetpu.tflite"
COMPILE_LOG = "model_int8_edgetpu.log"
TEST_SET = "test_set.npz"
METRICS = "metrics.json"
BOARD_FILES = (MANIFEST, INT8_MODEL, COMPILED_MODEL, COMPILE_LOG, FLOAT_MODEL, TEST_SET, METRICS)
REQUIRED = (INT8_MODEL, TEST_SET)

# test_set.npz: the test trials' binned counts (uint8, whole trials so the stream can replay them)
# and every test window as the row of its last bin; `grasptpu train` writes these ...
TEST_WINDOW_ARRAYS = ("counts", "trial_offsets", "trial_index", "object_id", "hold_bin", "reward_bin",
                      "end_row", "label", "window_trial")
# A regression decoder's test set also holds each window's target (float32) ...
TEST_TARGET_ARRAY = "target"
# ... and `grasptpu quantize` adds the host's outputs on those windows, for the board to compare.
TEST_OUTPUT_ARRAYS = ("keras_probs", "float_probs", "int8_output")
# calibration.npz: `windows`, (n, window_bins, units) uint8 counts of training windows, and `label`,
# (n,) integers, their classes (`grasptpu quantize` samples a subset stratified by them).
CALIBRATION_ARRAY = "windows"
CALIBRATION_LABEL = "label"

INPUT_QUANTISATION = "q = clip(round(counts / scale) + zero_point, -128, 127)"
TASKS = ("object", "grasp-phase", "aperture")  # aperture: a regression of the layout's target signal
# The decoders device.stream and device.live take, in this order: a detector, a classifier and
# optionally an aperture regressor.
STREAM_TASKS = ("grasp-phase", "object", "aperture")
GRASP_PHASE_LABELS = ["rest", "grasp"]

# A name a manifest (or a release record) gives a file or a folder: letters, digits and . _ + -,
# starting with a letter, digit or _, at most 128 characters. So no separator, no "..", no hidden or
# absolute name: whatever a manifest says, it can only name something inside its own folder.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


MAX_MESSAGE = 1000  # characters of an error line: enough for paths and a hint, not a pasted 100 kB value
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few kB; more is not a manifest


def output_width(manifest: dict) -> int:
    """Outputs per window of the manifest's model: one per label, or 1 for a regressor (aperture,
    whose rest/grasp labels only sort its windows)."""
    return 1 if manifest["task"] == "aperture" else len(manifest["labels"])


def one_line(text, limit: int = MAX_MESSAGE) -> str:
    """`text` as one printable line of at most `limit` characters. Error messages quote values from
    files, boards and inventories written by others: a line break would split the "one line", and a
    control character (a terminal's escape sequence) would reach the user's terminal. So line
    breaks become spaces, other unprintable characters their escapes, and a long text is cut."""
    text = " ".join(str(text).splitlines())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: a library's
    message may run to a page (a traceback, a file dump), and the user needs its headline."""
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def last_line(text, default: str = "") -> str:
    """The last non-blank line of a command's output, stripped, or `default`: a failing program says
    why at the end of its stderr, after whatever it printed on the way."""
    for line in reversed(str(text or "").splitlines()):
        if line.strip():
            return line.strip()
    return default


def short(value, limit: int = 80) -> str:
    """repr of a value for an error message, cut to `limit` characters (a value from a file may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class DeviceError(Exception):
    """A problem the user can act on; the command line prints it as one line and exits 2."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


def check_name(name, what: str = "name") -> str:
    """`name` if it is a plain file or folder name (see _PLAIN_NAME), else a DeviceError. The one
    check for every name a model folder or a release names, on the host and on the board alike."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name):
        raise DeviceError("{} {} is not a plain file name (letters, digits, '.', '_', '+', '-'; no path); "
                          "refusing it".format(what, short(name)))
    return name


def check_relative(path, what: str = "path") -> str:
    """`path` if it is a relative path of plain names joined by '/' (a file inside a release)."""
    if not isinstance(path, str) or not path:
        raise DeviceError("{} {} is not a relative path; refusing it".format(what, short(path)))
    for part in path.split("/"):
        check_name(part, what)
    return path


def path_in(folder: str, name: str, what: str = "file") -> str:
    """The path of `name` inside `folder`, refused unless `name` is plain and the file is not a
    symbolic link (a model folder or a release holds plain files only: a link could point anywhere)."""
    path = os.path.join(folder, check_name(name, what))
    if os.path.islink(path):
        raise DeviceError("{}: a symbolic link; model folders and releases hold plain files only".format(path))
    return path


def as_array(values, what: str = "input") -> np.ndarray:
    """np.asarray, with numpy's refusal of a ragged nested list (ValueError on numpy >= 1.24; older
    numpy makes an object array, which the dtype checks refuse) as a DeviceError."""
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise DeviceError("{} is not a rectangular array of counts ({})".format(what, exc)) from None


MAX_COUNT = 255  # spikes in one bin: the stored counts are uint8, a unit firing 6 kHz would fill 40 ms


def check_counts(counts, what: str = "input") -> np.ndarray:
    """`counts` as an array, if it holds spike counts: numeric, finite, non-negative, whole numbers,
    at most MAX_COUNT per bin; otherwise a DeviceError naming the problem (never a silent wrap,
    round or clip: the one check wherever counts enter the board's runner)."""
    arr = as_array(counts, what)
    if arr.dtype.kind not in "uif":
        raise DeviceError("{} dtype {} is not numeric spike counts".format(what, arr.dtype))
    if not arr.size:
        return arr
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DeviceError("{} holds NaN or infinite counts; refusing to decode it".format(what))
        if (np.floor(arr) != arr).any():
            raise DeviceError("{} holds fractional counts (e.g. {}); spike counts are whole numbers".format(
                what, arr[np.floor(arr) != arr].reshape(-1)[0]))
    if arr.dtype.kind in "if" and arr.min() < 0:
        raise DeviceError("{} holds negative counts; spike counts are >= 0".format(what))
    if arr.max() > MAX_COUNT:
        raise DeviceError("{} holds a count of {} in one bin, more than {}: not binned spike counts".format(
            what, arr.max(), MAX_COUNT))
    return arr


def quantise(counts: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Counts -> the int8 input tensor's values (INPUT_QUANTISATION): the host computes its
    reference outputs with this very function, so host and board quantise alike."""
    x = np.asarray(counts, np.float32)
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantise(raw, scale: float, zero_point: int) -> np.ndarray:
    """int8 outputs -> the scores (or values) they stand for, as float32: (q - zero_point) * scale.
    The host's reference outputs and the board's are turned back with this very function."""
    return ((np.asarray(raw).astype(np.float32) - zero_point) * scale).astype(np.float32)


def dequantise_one(raw, scale: float, zero_point: int) -> float:
    """`dequantise` of one int8 output, in Python floats (double): the stream's per-bin path, which
    hands single values to LSL and JSON rather than arrays."""
    return (float(raw) - zero_point) * scale


def stream_decoders(tasks) -> dict:
    """{task: decoder} of (task, decoder) pairs, in STREAM_TASKS order (how device.stream and
    device.live take them), or a DeviceError if two decoders share a task or the detector or the
    classifier is missing."""
    found = {}
    for task, decoder in tasks:
        if task in found:
            raise DeviceError("two {} models ({} and {}); give one of each task".format(task, found[task], decoder))
        found[task] = decoder
    if set(STREAM_TASKS[:2]) - set(found):
        raise DeviceError("the stream needs a grasp-phase and an object model (and optionally an aperture one); "
                          "found {}".format(", ".join(sorted(found)) or "none"))
    return {t: found[t] for t in STREAM_TASKS if t in found}


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: str, redo: str) -> dict:
    """`folder`'s manifest.json, read as untrusted input and checked (check_manifest), or a one-line
    DeviceError ending in `redo` (what the user should run). The one reader of manifests, on the host
    and the board: the file must be a plain regular file inside the folder (not a symbolic link, a
    folder or a FIFO that would block the reader), at most MAX_MANIFEST_BYTES of UTF-8 JSON holding
    an object in a format this grasptpu knows."""
    path = path_in(folder, MANIFEST, "manifest")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DeviceError("{}: no {}: not a model folder; {}".format(folder, MANIFEST, redo)) from None
    except OSError as exc:
        raise DeviceError("{}: cannot read the manifest ({}); {}".format(path, exc.strerror or exc, redo)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder with its own error
        os.close(fd)
        raise DeviceError("{}: not a regular file; {}".format(path, redo))
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    try:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ValueError("larger than {} bytes".format(MAX_MANIFEST_BYTES))
        manifest = json.loads(data.decode("utf-8"))
        _require(isinstance(manifest, dict), "not a JSON object")
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested deeper than the parser's stack
        why = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise DeviceError("{}: damaged manifest ({}); {}".format(path, why, redo)) from None
    fmt = manifest.get("format")
    if type(fmt) is int and fmt > SUPPORTED_FORMAT:
        raise DeviceError("{}: manifest format {} is newer than this grasptpu understands ({}); use the grasptpu "
                          "version that wrote the folder".format(path, fmt, SUPPORTED_FORMAT))
    if type(fmt) is not int or fmt < 1:
        raise DeviceError("{}: manifest format {} is not a manifest format (1..{}); {}".format(
            path, short(fmt), SUPPORTED_FORMAT, redo))
    return check_manifest(manifest, path)


def load_manifest(folder: str) -> dict:
    """The board's view of a manifest (read_manifest): it must also describe a quantised model."""
    manifest = read_manifest(folder, "deploy a quantised model again")
    path = os.path.join(folder, MANIFEST)
    if "tflite" not in manifest or "test_set" not in manifest:
        raise DeviceError("{}: the model is not quantised (run `grasptpu quantize` on the host)".format(folder))
    try:
        shape = manifest["tflite"]["int8"]["input"]["shape"]
        labels = manifest["labels"]
        _require(isinstance(shape, list) and len(shape) == 3 and shape[0] == 1
                 and shape[1:] == [manifest["data"]["window_bins"], manifest["data"]["n_units"]],
                 "tflite.int8.input.shape {} is not [1, window_bins, n_units]".format(short(shape)))
        _require(isinstance(labels, list) and len(labels) == len(manifest["data"]["label_names"])
                 and all(isinstance(e, dict) and e.get("index") == i for i, e in enumerate(labels)),
                 "labels do not list the classes 0..n-1 of data.label_names")
    except (KeyError, TypeError) as exc:
        raise DeviceError("{}: {}; re-run `grasptpu quantize` and deploy again".format(path, _missing(exc))) from None
    except ValueError as exc:
        raise DeviceError("{}: {}; re-run `grasptpu quantize` and deploy again".format(path, exc)) from None
    return manifest


def _missing(exc: Exception) -> str:
    """What a KeyError (a field missing) or a TypeError (a field of the wrong kind) says of a manifest."""
    if isinstance(exc, KeyError):
        return "the manifest lacks {}".format(short(exc.args[0] if exc.args else ""))
    return "a manifest field is of the wrong kind ({})".format(exc)


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


def check_manifest(manifest, path: str) -> dict:
    """The fields every model folder's manifest has from `grasptpu train` on, checked for type and
    consistency (the host and the board read manifests written by others): a plain name, a known
    task whose labels match it, positive window and bin sizes, artifacts as plain names with sha256
    digests. A DeviceError names the first problem."""
    try:
        _require(isinstance(manifest, dict), "not a JSON object")
        check_name(manifest["name"], "model name")
        task, data = manifest["task"], manifest["data"]
        _require(isinstance(task, str) and task in TASKS, "task {} is not one of {}".format(short(task), ", ".join(TASKS)))
        for key in ("window_bins", "n_units"):
            _require(type(data[key]) is int and 0 < data[key] <= 100000, "data.{} {} is not a positive integer"
                     .format(key, short(data[key])))
        _require(type(data["bin_ms"]) in (int, float) and 0 < data["bin_ms"] <= 60000,
                 "data.bin_ms {} is not a positive number of milliseconds".format(short(data["bin_ms"])))
        _require(isinstance(data["session"], str), "data.session is not text")
        names, classes = data["label_names"], data["classes"]
        _require(isinstance(names, list) and isinstance(classes, list) and len(names) == len(classes) >= 2,
                 "data.label_names and data.classes are not two lists of the same length (>= 2)")
        if task in ("grasp-phase", "aperture"):  # an aperture decoder's windows carry rest/grasp labels too
            _require(names == GRASP_PHASE_LABELS and classes == [0, 1],
                     "task grasp-phase, but the labels are {} (a rest/grasp detector has [rest, grasp])".format(
                         short(names)))
        else:
            _require(names != GRASP_PHASE_LABELS, "task object, but the labels are a rest/grasp detector's")
            _require(all(type(c) is int and 0 <= c < 1000 for c in classes) and len(set(classes)) == len(classes),
                     "task object, but data.classes {} are not distinct object ids (integers)".format(short(classes)))
            # Whole-number classes (the paper's object ids) are named by their digits; text classes
            # (a layout's grips, say) and classes in a layout's order are coded 0..n-1 and named by their value.
            named = names == [str(c) for c in classes] or (
                classes == list(range(len(classes))) and len(set(names)) == len(names)
                and all(isinstance(n, str) and 0 < len(n) <= 200 for n in names))
            _require(named, "task object, but the labels {} are not the classes' names".format(short(names)))
        artifacts = manifest["artifacts"]
        _require(isinstance(artifacts, dict), "artifacts is not a table of file -> sha256")
        for name, digest in artifacts.items():
            check_name(name, "artifact")
            _require(isinstance(digest, str) and bool(_SHA256.match(digest)),
                     "artifact {}: {} is not a sha256 digest".format(name, short(digest)))
    except (KeyError, TypeError) as exc:
        raise DeviceError("{}: {}; re-run the stage that wrote it".format(path, _missing(exc))) from None
    except ValueError as exc:
        raise DeviceError("{}: {}".format(path, exc)) from None
    return manifest


def verify(folder: str, manifest: dict) -> list:
    """sha256 of every listed file present; every file the board receives (BOARD_FILES) must be
    there. Returns the verified file names. Raises on a missing file or any mismatch.
    """
    artifacts = manifest.get("artifacts", {})
    for name in REQUIRED + ((COMPILED_MODEL,) if COMPILED_MODEL in artifacts else ()):
        if name not in artifacts:
            raise DeviceError("{}: the manifest lists no {}; re-run `grasptpu quantize`".format(folder, name))
        if not os.path.isfile(path_in(folder, name)):
            raise DeviceError("{}: {} is missing; deploy the model again".format(folder, name))
    checked = []
    for name, digest in sorted(artifacts.items()):
        path = path_in(folder, name, "artifact")
        if not os.path.isfile(path):
            if name in BOARD_FILES:
                raise DeviceError("{}: {} is missing; deploy the model again".format(folder, name))
            continue  # host-only files (model.keras, report.png) need not travel
        if sha256_of(path) != digest:
            raise DeviceError("{}: sha256 does not match the manifest: the file is damaged or was changed; "
                              "deploy the model again".format(path))
        checked.append(name)
    return checked


def save_test_set(path: str, arrays: dict) -> None:
    """Write test_set.npz with exactly the contract's arrays: the windows' arrays, plus the host's
    outputs when all three are given (after quantisation)."""
    keys = set(arrays) - {TEST_TARGET_ARRAY}
    if keys != set(TEST_WINDOW_ARRAYS) and keys != set(TEST_WINDOW_ARRAYS + TEST_OUTPUT_ARRAYS):
        raise ValueError("test set arrays {} do not follow the contract ({} [+ {}] [+ {}])".format(
            sorted(arrays), TEST_WINDOW_ARRAYS, TEST_TARGET_ARRAY, TEST_OUTPUT_ARRAYS))
    np.savez_compressed(path, **arrays)


def read_npz(path: str, what: str, redo: str) -> dict:
    """Every array of an .npz (no pickles), or a one-line DeviceError: a damaged, truncated or foreign
    file is reported, whatever numpy or zipfile raise on it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single array, not an .npz archive")
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise DeviceError("{}: not a readable {} ({}); {}".format(
            path, what, first_line(exc), redo)) from None


def check_test_set(arrays: dict, window_bins: int, n_units=None, n_classes=None, quantised: bool = False) -> None:
    """The test set's arrays against the contract, before anything indexes with them: the arrays
    TEST_WINDOW_ARRAYS names (and the three outputs, or none), uint8 counts of (rows, units), trial
    offsets that cut the rows into trials, and every window inside its trial with a label in range.
    A ValueError names the first problem (TestSet turns it into a DeviceError)."""
    missing = [k for k in TEST_WINDOW_ARRAYS if k not in arrays]
    _require(not missing, "it lacks the arrays {}".format(missing))
    outputs = [k for k in TEST_OUTPUT_ARRAYS if k in arrays]
    _require(len(outputs) in ((len(TEST_OUTPUT_ARRAYS),) if quantised else (0, len(TEST_OUTPUT_ARRAYS))),
             "it lacks the host's outputs {} of a quantised model".format([k for k in TEST_OUTPUT_ARRAYS if k not in outputs]))
    counts = arrays["counts"]
    _require(counts.ndim == 2 and counts.dtype == np.uint8, "counts are {} {}, not (bins, units) uint8".format(
        counts.dtype, counts.shape))
    _require(n_units is None or counts.shape[1] == n_units, "counts have {} units, the manifest {}".format(
        counts.shape[1], n_units))
    for key in TEST_WINDOW_ARRAYS[1:]:
        _require(arrays[key].ndim == 1 and arrays[key].dtype.kind in "iu", "{} is not a list of integers".format(key))
    offsets = arrays["trial_offsets"]
    _require(len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == len(counts) and (np.diff(offsets) >= 0).all(),
             "trial_offsets do not cut the counts' {} rows into trials".format(len(counts)))
    n_trials, n = len(offsets) - 1, len(arrays["end_row"])
    for key in ("trial_index", "object_id", "hold_bin", "reward_bin"):
        _require(len(arrays[key]) == n_trials, "{} has {} entries for {} trials".format(key, len(arrays[key]), n_trials))
    for key in ("label", "window_trial") + tuple(outputs):
        _require(len(arrays[key]) == n, "{} has {} entries for {} windows".format(key, len(arrays[key]), n))
    if TEST_TARGET_ARRAY in arrays:
        target = arrays[TEST_TARGET_ARRAY]
        _require(target.shape == (n,) and target.dtype.kind == "f" and bool(np.isfinite(target).all()),
                 "target is not one finite number per window")
    if not n:
        return
    trial, end = arrays["window_trial"], arrays["end_row"]
    _require(trial.min() >= 0 and trial.max() < n_trials, "window_trial points outside the trials")
    _require(((end - (window_bins - 1) >= offsets[trial]) & (end < offsets[trial + 1])).all(),
             "end_row puts a window outside its trial")
    label = arrays["label"]
    _require(label.min() >= 0 and (n_classes is None or label.max() < n_classes),
             "a label is outside the classes 0..{}".format("n-1" if n_classes is None else n_classes - 1))
    for key in outputs:
        _require(arrays[key].ndim == 2 and arrays[key].dtype.kind in "fi", "{} is not (windows, outputs) numbers".format(key))


class TestSet:
    """The manifest's test windows (and the host's outputs on them, once quantised) as strided
    views over the stored counts; `batch` copies only the windows asked for. The arrays are checked
    against the contract first (check_test_set): a test set may come from someone else."""

    __test__ = False  # not a pytest test class

    def __init__(self, arrays: dict, window_bins: int, n_units=None, n_classes=None, quantised: bool = False,
                 where: str = "test set") -> None:
        try:
            check_test_set(arrays, window_bins, n_units, n_classes, quantised)
        except ValueError as exc:
            raise DeviceError("{}: {}; re-run `grasptpu train` (or deploy the model again)".format(where, exc)) from None
        self.arrays = arrays
        self.window_bins = window_bins
        counts = np.ascontiguousarray(arrays["counts"])
        rows, units = counts.shape
        step_r, step_u = counts.strides
        # windows[i] = counts[i : i + window_bins], without a copy (numpy < 1.20 has no sliding_window_view)
        self.all_windows = np.lib.stride_tricks.as_strided(
            counts, shape=(max(rows - window_bins + 1, 0), window_bins, units), strides=(step_r, step_r, step_u),
            writeable=False)
        self.counts = counts
        self.end_row = arrays["end_row"]
        self.label = arrays["label"]

    @classmethod
    def load(cls, folder: str, manifest: dict) -> "TestSet":
        """The folder's test_set.npz (no pickles: allow_pickle stays off), checked against `manifest`
        (window length, units, classes; the host's outputs once quantised)."""
        path = path_in(folder, TEST_SET)
        arrays = read_npz(path, "test set", "re-run `grasptpu train`, or deploy the model again")
        data = manifest["data"]
        return cls(arrays, data["window_bins"], data["n_units"], len(data["label_names"]), "tflite" in manifest,
                   where=path)
    def __len__(self) -> int:
        return len(self.end_row)

    def batch(self, idx) -> np.ndarray:
        """Windows `idx` as ``(n, window_bins, units)`` uint8 (the only copy made)."""
        return self.all_windows[self.end_row[idx] - (self.window_bins - 1)]

    def trial_rows(self, k: int) -> np.ndarray:
        offsets = self.arrays["trial_offsets"]
        return self.counts[offsets[k]:offsets[k + 1]]

    @property
    def n_trials(self) -> int:
        return len(self.arrays["trial_offsets"]) - 1
