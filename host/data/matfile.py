"""Fast reader and writer of the `.neo.mat` layout that `neo.io.NeoMatlabIO` writes and reads.

Why not neo.io itself: for the largest session (568 units x 757 trials) `read_block()` takes
minutes and ~5 GB, because scipy builds one Python struct object per spike train and neo one
`SpikeTrain` per struct. Here the MAT v5 byte stream is walked directly: the small parts (block,
segments, events, annotations) through a generic element parser, and each segment's cell of spike
trains through a template: the first train's struct is parsed in full, every other train is
checked byte for byte against it (only the spike times, their count, `t_start`, `t_stop` and
`neo_id` may differ) with vectorised numpy compares, and the spike times are gathered straight
out of the file buffer. A train that does not match the template is parsed the slow, generic way;
a layout this module does not know raises `UnknownLayout` so the caller can fall back to neo.io.

The writer emits exactly the bytes `scipy.io.savemat(..., oned_as='row')` writes for the dicts
`NeoMatlabIO.write_block` builds (a test compares them), without building any Neo object.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from host.data.recording import Recording, Signal

log = logging.getLogger(__name__)

# MAT v5 data types (mi*) and array classes (mx*), from MathWorks' "MAT-File Format" document.
MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32 = 1, 2, 3, 4, 5, 6
MI_SINGLE, MI_DOUBLE, MI_INT64, MI_UINT64 = 7, 9, 12, 13
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18
MX_CELL, MX_STRUCT, MX_CHAR = 1, 2, 4
# Every data type and array class the MAT v5 format defines (MathWorks, "MAT-File Format", tables
# 1-2 and 1-3). Any other number is damage, not an unfamiliar layout, so such a file is refused
# here and never handed to the neo/scipy fallback (byte-flip fuzzing crashed scipy on such files).
MI_VALID = {MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32, MI_SINGLE, MI_DOUBLE, MI_INT64,
            MI_UINT64, MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32}
MX_VALID = range(1, 18)
MI_DTYPES = {
    MI_INT8: "<i1", MI_UINT8: "<u1", MI_INT16: "<i2", MI_UINT16: "<u2", MI_INT32: "<i4",
    MI_UINT32: "<u4", MI_SINGLE: "<f4", MI_DOUBLE: "<f8", MI_INT64: "<i8", MI_UINT64: "<u8",
}
MX_DTYPES = {
    6: "<f8", 7: "<f4", 8: "<i1", 9: "<u1", 10: "<i2", 11: "<u2", 12: "<i4", 13: "<u4",
    14: "<i8", 15: "<u8",
}
NP_TO_MX = {np.dtype(v): k for k, v in MX_DTYPES.items()}
NP_TO_MI = {np.dtype(v): k for k, v in MI_DTYPES.items()}
TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<II")


class UnknownLayout(Exception):
    """The file is a MAT file, but not in a layout this reader knows: use neo.io instead."""


class CorruptFile(Exception):
    """The bytes cannot be a MAT v5 file (truncated, bad tags, bad header)."""


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------- reading


def _tag(buf: memoryview, off: int) -> tuple[int, int, int, int]:
    """Decode one data-element tag: (type, byte count, data offset, offset of the next element)."""
    if off + 8 > len(buf):
        raise CorruptFile(f"element at byte {off} runs past the end of the file")
    word, nbytes = _TAG.unpack_from(buf, off)
    if word >> 16:  # small data element: type and count share the first word, data in 4 bytes
        if (word & 0xFFFF) not in MI_VALID or word >> 16 > 4:
            raise CorruptFile(f"element at byte {off} has no valid small-element tag")
        return word & 0xFFFF, word >> 16, off + 4, off + 8
    if word not in MI_VALID:
        raise CorruptFile(f"element at byte {off} has no valid MAT data type ({word})")
    end = off + 8 + nbytes
    if end > len(buf):
        raise CorruptFile(f"element at byte {off} claims {nbytes} bytes past the end of the file")
    return word, nbytes, off + 8, off + 8 + _pad8(nbytes)


def _numeric(buf: memoryview, off: int) -> tuple[np.ndarray, int]:
    mtype, nbytes, data, nxt = _tag(buf, off)
    if mtype not in MI_DTYPES:
        raise UnknownLayout(f"numeric data of MAT type {mtype}")
    dtype = np.dtype(MI_DTYPES[mtype])
    return np.frombuffer(buf, dtype, nbytes // dtype.itemsize, data), nxt


def _chars(buf: memoryview, off: int, dims: tuple[int, ...]) -> tuple[list[str], int]:
    mtype, nbytes, data, nxt = _tag(buf, off)
    raw = bytes(buf[data:data + nbytes])
    if mtype in (MI_UTF8, MI_UINT8, MI_INT8):
        text = raw.decode("utf-8")
    elif mtype in (MI_UTF16, MI_UINT16):
        text = raw.decode("utf-16-le")
    elif mtype == MI_UTF32:
        text = raw.decode("utf-32-le")
    else:
        raise UnknownLayout(f"char data of MAT type {mtype}")
    rows = dims[0] if dims else 0
    if rows == 0 or not text:
        return [], nxt
    grid = np.array(list(text)).reshape(dims, order="F")
    return ["".join(row) for row in grid.reshape(rows, -1)], nxt


def _matrix_header(buf: memoryview, off: int) -> tuple[int, tuple[int, ...], int, int]:
    """Parse a miMATRIX header: (class, dims, offset of the payload, offset after the matrix)."""
    mtype, nbytes, data, nxt = _tag(buf, off)
    if mtype != MI_MATRIX:
        raise UnknownLayout(f"expected a matrix at byte {off}, found MAT type {mtype}")
    if nbytes == 0:
        return 0, (0, 0), data, nxt
    flags, pos = _numeric(buf, data)
    dims_arr, pos = _numeric(buf, pos)
    _, _, _, pos = _tag(buf, pos)  # array name: empty below the top level
    return int(flags[0]) & 0xFF, tuple(int(d) for d in dims_arr), pos, nxt


def parse_matrix(buf: memoryview, off: int,
                 struct_hooks: dict[str, Callable] | None = None) -> tuple[object, int]:
    """Parse one miMATRIX into plain Python: ndarray, list of char rows, list (cell), list of dicts.

    Args:
        buf: the (decompressed) byte stream.
        off: offset of the element's tag.
        struct_hooks: field name -> function(buf, off) used instead of the generic parse for
            that field of any struct (how the spike-train fast path plugs in).
    Returns:
        (value, offset of the next element). Numeric arrays keep their MATLAB dims (Fortran
        order); char arrays become a list of row strings; cells a flat column-major list;
        structs a flat column-major list of dicts.
    """
    mclass, dims, pos, nxt = _matrix_header(buf, off)
    count = int(np.prod(dims)) if dims else 0
    if mclass == 0:
        return np.empty((0, 0)), nxt
    if mclass in MX_DTYPES:
        raw, after = _numeric(buf, pos)
        if after < nxt:
            raise UnknownLayout("complex numeric arrays are not part of the Neo layout")
        return raw.astype(MX_DTYPES[mclass]).reshape(dims, order="F"), nxt  # a copy: small parts only
    if mclass == MX_CHAR:
        rows, _ = _chars(buf, pos, dims)
        return rows, nxt
    if mclass == MX_CELL:
        items = []
        for _ in range(count):
            item, pos = parse_matrix(buf, pos, struct_hooks)
            items.append(item)
        return items, nxt
    if mclass == MX_STRUCT:
        return _parse_struct(buf, pos, count, struct_hooks), nxt
    if mclass not in MX_VALID:
        raise CorruptFile(f"matrix at byte {off} has no valid MATLAB array class ({mclass})")
    raise UnknownLayout(f"MATLAB array class {mclass} (object, sparse or function)")


def _struct_fields(buf: memoryview, pos: int) -> tuple[list[str], int]:
    namelen_arr, pos = _numeric(buf, pos)
    namelen = int(namelen_arr[0])
    names_raw, pos = _numeric(buf, pos)
    raw = names_raw.tobytes()
    names = [raw[i:i + namelen].split(b"\0", 1)[0].decode("ascii")
             for i in range(0, len(raw), namelen)] if namelen else []
    return names, pos


def _parse_struct(buf: memoryview, pos: int, count: int,
                  hooks: dict[str, Callable] | None) -> list[dict]:
    names, pos = _struct_fields(buf, pos)
    out = []
    for _ in range(count):
        item = {}
        for name in names:
            if hooks and name in hooks:
                item[name], pos = hooks[name](buf, pos)
            else:
                item[name], pos = parse_matrix(buf, pos, hooks)
        out.append(item)
    return out


def scalar(value: object, what: str) -> float:
    """The single number a field holds (a 1x1 numeric array in the file)."""
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise UnknownLayout(f"{what} is not a single number")
    return float(arr.reshape(-1)[0])


def text(value: object) -> str:
    """The string a char field holds (one row)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and not value:
        return ""
    raise UnknownLayout("a unit or name field is not a single string")


def unit_scale_s(unit: str) -> float:
    """Seconds per unit for a time-unit string as Neo writes it."""
    try:
        return TIME_UNITS_S[unit.strip()]
    except KeyError:
        raise UnknownLayout(f"time unit {unit!r}") from None


# ---- the spike-train cell: template parse


class TrainCell:
    """The spike trains of one segment, located in the buffer rather than copied out of it."""

    def __init__(self, data_off: np.ndarray, counts: np.ndarray, itemsize: int,
                 scale_s: float, t_start_s: np.ndarray, t_stop_s: np.ndarray,
                 slow: dict[int, np.ndarray]) -> None:
        self.data_off, self.counts, self.itemsize, self.scale_s = data_off, counts, itemsize, scale_s
        self.t_start_s, self.t_stop_s, self.slow = t_start_s, t_stop_s, slow

    def __len__(self) -> int:
        return len(self.counts)


def _field_spans(buf: memoryview, off: int) -> tuple[dict[str, tuple[int, int]], int]:
    """For one 1x1 struct element at `off`: field -> (matrix offset, end offset); and its end."""
    mclass, dims, pos, nxt = _matrix_header(buf, off)
    if mclass != MX_STRUCT or int(np.prod(dims)) != 1:
        raise UnknownLayout("a spike train is not a 1x1 struct")
    names, pos = _struct_fields(buf, pos)
    spans = {}
    for name in names:
        _, _, _, end = _tag(buf, pos)
        spans[name] = (pos, end)
        pos = end
    return spans, nxt


def _generic_train(buf: memoryview, off: int) -> tuple[np.ndarray, float, float]:
    """The slow path: one spike train struct parsed in full -> (times s, t_start s, t_stop s)."""
    value, _ = parse_matrix(buf, off)
    if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)):
        raise UnknownLayout("a spike train is not a 1x1 struct")
    st = value[0]
    if "times" not in st or "t_stop" not in st:
        raise UnknownLayout("a spike train struct has no 'times' or 't_stop' field")
    scale = unit_scale_s(text(st.get("times_units", ["s"])))
    times = np.asarray(st["times"], dtype=np.float64).reshape(-1) * scale
    t_start = scalar(st.get("t_start", 0.0), "t_start") * unit_scale_s(text(st.get("t_start_units", ["s"])))
    t_stop = scalar(st["t_stop"], "t_stop") * unit_scale_s(text(st.get("t_stop_units", ["s"])))
    return times, t_start, t_stop


class _Template:
    """Byte layout of the first spike train of a cell; what may vary in the others, and where."""

    def __init__(self, buf: memoryview, off: int) -> None:
        spans, end = _field_spans(buf, off)
        for name in ("times", "t_start", "t_stop"):
            if name not in spans:
                raise UnknownLayout(f"spike train struct has no '{name}' field")
        self.start = off
        self.bytes = np.frombuffer(buf, np.uint8, end - off, off).copy()
        times_mat, _ = spans["times"]
        mclass, dims, data_tag, _ = _matrix_header(buf, times_mat)
        mtype, nbytes, data, _ = _tag(buf, data_tag) if mclass else (MI_DOUBLE, 0, 0, 0)
        if mclass not in (6, 7) or len(dims) != 2 or data != data_tag + 8 or mtype not in (MI_DOUBLE, MI_SINGLE):
            raise UnknownLayout("spike times are not a plain double/single row")
        self.itemsize = 8 if mtype == MI_DOUBLE else 4
        self.rel_times_mat = times_mat - off
        self.rel_dims = self._dims_data_offset(buf, times_mat) - off
        self.rel_data_tag = data_tag - off
        self.rel_data = data - off
        self.suffix_start = _pad8(nbytes) + data - off  # offset of the first byte after the times
        self.suffix_len = len(self.bytes) - self.suffix_start
        values, _ = parse_matrix(buf, off)
        st = values[0]
        self.scale_s = unit_scale_s(text(st.get("times_units", ["s"])))
        self.start_scale = unit_scale_s(text(st.get("t_start_units", ["s"])))
        self.stop_scale = unit_scale_s(text(st.get("t_stop_units", ["s"])))
        self.slots = {name: self._scalar_slot(buf, spans[name][0], off)
                      for name in ("t_start", "t_stop", "neo_id") if name in spans}
        self._build_masks()

    @staticmethod
    def _dims_data_offset(buf: memoryview, mat_off: int) -> int:
        mtype, nbytes, data, _ = _tag(buf, mat_off + 24)
        if mtype != MI_INT32 or nbytes != 8:
            raise UnknownLayout("spike times are not a 2-D array")
        return data

    def _scalar_slot(self, buf: memoryview, mat_off: int, off: int) -> tuple[int, int, str]:
        """(relative offset, 8 bytes, dtype) of a scalar's value; it must sit in a full element."""
        mclass, dims, data_tag, _ = _matrix_header(buf, mat_off)
        mtype, nbytes, data, _ = _tag(buf, data_tag)
        if nbytes != 8 or data != data_tag + 8 or mtype not in (MI_DOUBLE, MI_INT64, MI_UINT64):
            raise UnknownLayout("a spike-train scalar is not stored as 8 bytes")
        return data - off, 8, MI_DTYPES[mtype]

    def _build_masks(self) -> None:
        """Constant byte positions before and after the times data."""
        pre = np.ones(self.rel_data, bool)
        suf = np.ones(self.suffix_len, bool)
        for lo, n in ((4, 4), (self.rel_times_mat + 4, 4), (self.rel_dims, 8), (self.rel_data_tag + 4, 4)):
            pre[lo:lo + n] = False
        for rel, n, _ in self.slots.values():
            if rel < self.rel_data:
                pre[rel:rel + n] = False
            else:
                suf[rel - self.suffix_start:rel - self.suffix_start + n] = False
        self.pre_pos = np.flatnonzero(pre)
        self.suf_pos = np.flatnonzero(suf)
        self.pre_want = self.bytes[self.pre_pos]
        self.suf_want = self.bytes[self.suffix_start + self.suf_pos]

    def slot_values(self, u8: np.ndarray, starts: np.ndarray, suffix: np.ndarray, name: str) -> np.ndarray:
        rel, n, dtype = self.slots[name]
        base = starts + rel if rel < self.rel_data else suffix + (rel - self.suffix_start)
        raw = u8[base[:, None] + np.arange(n)]
        return raw.view(dtype).reshape(-1).astype(np.float64)


def _u32_at(u8: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return u8[pos[:, None] + np.arange(4)].view("<u4").reshape(-1).astype(np.int64)


def _find_template(buf: memoryview, starts: np.ndarray, tries: int = 16) -> "_Template | None":
    """The first train (of the first few) whose layout can serve as a template, if any.

    A train whose times are not a plain double/single row (e.g. MATLAB's compact integer
    storage) cannot serve; if none of the first few can, every train takes the slow path.
    """
    for start in starts[:tries]:
        try:
            return _Template(buf, int(start))
        except UnknownLayout:
            continue
    return None


def _conforming(u8: np.ndarray, tpl: "_Template", starts: np.ndarray, nxt: int) -> tuple[np.ndarray, ...]:
    """Which trains match the template byte for byte outside their variable slots.

    Returns (ok mask, times byte counts, suffix offsets, gather-safe starts).
    """
    elem_len = _u32_at(u8, starts + 4) + 8
    fits = (elem_len >= tpl.rel_data + tpl.suffix_len) & (starts + tpl.rel_data + tpl.suffix_len <= nxt)
    safe = np.where(fits, starts, tpl.start)
    nbytes = _u32_at(u8, safe + tpl.rel_data_tag + 4)
    suffix = safe + tpl.rel_data + ((nbytes + 7) & ~7)
    ok = fits & (elem_len == suffix - safe + tpl.suffix_len) & (nbytes % tpl.itemsize == 0)
    safe = np.where(ok, safe, tpl.start)
    suffix = np.where(ok, suffix, tpl.start + tpl.suffix_start)
    ok &= (u8[safe[:, None] + tpl.pre_pos] == tpl.pre_want).all(axis=1)
    ok &= (u8[suffix[:, None] + tpl.suf_pos] == tpl.suf_want).all(axis=1)
    dims = u8[(safe + tpl.rel_dims)[:, None] + np.arange(8)].view("<i4").reshape(-1, 2).astype(np.int64)
    ok &= dims.prod(axis=1) == nbytes // tpl.itemsize
    return ok, nbytes, suffix, safe


def parse_train_cell(buf: memoryview, off: int) -> tuple[TrainCell, int]:
    """Locate every spike train of a segment's `spiketrains` cell; see the module docstring."""
    mclass, dims, pos, nxt = _matrix_header(buf, off)
    if mclass == 0 or (mclass in MX_DTYPES and int(np.prod(dims)) == 0):
        empty = np.empty(0)
        return TrainCell(empty.astype(np.int64), empty.astype(np.int64), 8, 1.0, empty, empty, {}), nxt
    if mclass != MX_CELL:
        raise UnknownLayout("spiketrains is not a cell array")
    n = int(np.prod(dims))
    starts = np.empty(n, np.int64)
    for i in range(n):  # a walk over train tags, ~0.3 us each: each size chains to the next offset
        starts[i] = pos
        if pos + 8 > nxt:
            raise CorruptFile(f"spike-train cell at byte {off} is cut short")
        pos += 8 + _pad8(_U32.unpack_from(buf, pos + 4)[0])
    if pos != nxt:
        raise CorruptFile(f"spike-train cell at byte {off} does not add up to its declared size")
    tpl = _find_template(buf, starts)
    t_start, t_stop = np.zeros(n), np.zeros(n)
    if tpl is None:
        ok = np.zeros(n, bool)
        counts = np.zeros(n, np.int64)
        data_off = np.full(n, -1, np.int64)
        itemsize, scale = 8, 1.0
    else:
        u8 = np.frombuffer(buf, np.uint8)
        ok, nbytes, suffix, safe = _conforming(u8, tpl, starts, nxt)
        counts = nbytes // tpl.itemsize
        good = np.flatnonzero(ok)
        t_start[good] = tpl.slot_values(u8, safe[good], suffix[good], "t_start") * tpl.start_scale
        t_stop[good] = tpl.slot_values(u8, safe[good], suffix[good], "t_stop") * tpl.stop_scale
        data_off = np.where(ok, starts + tpl.rel_data, -1)
        itemsize, scale = tpl.itemsize, tpl.scale_s
    slow = {}
    for i in np.flatnonzero(~ok):  # trains that differ from the template: parse them in full
        times, t_start[i], t_stop[i] = _generic_train(buf, int(starts[i]))
        slow[int(i)] = times
        counts[i] = len(times)
    return TrainCell(data_off, counts, itemsize, scale, t_start, t_stop, slow), nxt


def gather_times(buf: memoryview, cell: TrainCell, out: np.ndarray) -> None:
    """Copy one segment's spike times (in seconds) into `out`, train after train, vectorised."""
    bounds = np.concatenate(([0], np.cumsum(cell.counts)))
    fast = cell.data_off >= 0
    if fast.any():
        dtype = "<f8" if cell.itemsize == 8 else "<f4"
        offs, counts, first = cell.data_off[fast], cell.counts[fast], bounds[:-1][fast]
        if np.all(offs % cell.itemsize == 0):
            flat = np.frombuffer(buf, dtype, len(buf) // cell.itemsize)
            src = np.repeat(offs // cell.itemsize - first, counts)
            dst = np.repeat(first, counts)
            dst = dst + np.arange(len(dst)) - np.repeat(np.cumsum(counts) - counts, counts)
            out[dst] = flat[src + dst] * cell.scale_s
        else:
            for o, c, f in zip(offs, counts, first):
                out[f:f + c] = np.frombuffer(buf, dtype, int(c), int(o)) * cell.scale_s
    for i, times in cell.slow.items():
        out[bounds[i]:bounds[i + 1]] = times


# ---- the file


def open_block_buffer(path: Path) -> tuple[memoryview, int]:
    """Map the file read-only and return (buffer, offset of the 'block' matrix).

    The map is never closed explicitly: numpy views of it may outlive this call (and a
    traceback may hold some), so it is released when the last view goes.
    A v7 (compressed) variable is decompressed into memory instead.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 128:
            raise CorruptFile(f"only {size} bytes: too short for a MAT file header")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return _find_block(memoryview(mm))


def _find_block(view: memoryview) -> tuple[memoryview, int]:
    head = bytes(view[:128])
    if head.startswith(b"MATLAB 7.3"):
        raise UnknownLayout("MATLAB v7.3 (HDF5) file")
    if not head.startswith(b"MATLAB 5.0 MAT-file"):
        raise CorruptFile("no 'MATLAB 5.0 MAT-file' header: not a MAT v5/v7 file")
    if head[126:128] != b"IM":
        raise UnknownLayout("big-endian MAT file")
    off = 128
    while off < len(view):
        mtype, nbytes, data, nxt = _tag(view, off)
        if mtype == MI_COMPRESSED:
            try:
                inner = memoryview(zlib.decompress(view[data:data + nbytes]))
            except zlib.error as exc:
                raise CorruptFile(f"compressed variable at byte {off} is damaged ({exc})") from None
            if _matrix_name(inner, 0) == "block":
                return inner, 0
        elif mtype == MI_MATRIX and _matrix_name(view, off) == "block":
            return view, off
        off = nxt
    raise UnknownLayout("no variable named 'block'")


def _matrix_name(buf: memoryview, off: int) -> str:
    mtype, nbytes, data, _ = _tag(buf, off)
    if mtype != MI_MATRIX or nbytes == 0:
        return ""
    _, _, _, dims_off = _tag(buf, data)  # array flags
    _, _, _, name_off = _tag(buf, dims_off)
    _, n, name_data, _ = _tag(buf, name_off)
    return bytes(buf[name_data:name_data + n]).decode("ascii", "replace")


def read_recording(path: Path, progress: bool = False) -> Recording:
    """Read a NeoMatlabIO `.mat` file into a `Recording` without building Neo objects.

    Raises:
        CorruptFile: the bytes are damaged or not a MAT v5 file.
        UnknownLayout: a valid MAT file this reader does not know (use neo.io).
        DataError: a Neo file whose content is unusable (no trials, no units, ...).
    """
    buf, off = open_block_buffer(Path(path))
    value, _ = parse_matrix(buf, off, {"spiketrains": parse_train_cell})
    if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)):
        raise UnknownLayout("'block' is not a 1x1 struct")
    block = value[0]
    if "segments" not in block:
        raise UnknownLayout("'block' has no 'segments' field")
    segments = block["segments"] if isinstance(block["segments"], list) else []
    segments = [_one_struct(s, "segment") for s in segments]
    cells = [_train_cell(seg, path, k) for k, seg in enumerate(segments)]
    spikes = _gather_all(buf, cells, progress)
    return _assemble(path, block, segments, cells, spikes)


def _one_struct(value: object, what: str) -> dict:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        return value[0]
    raise UnknownLayout(f"a {what} is not a 1x1 struct")


def _train_cell(seg: dict, path: Path, k: int) -> TrainCell:
    cell = seg.get("spiketrains")
    if not isinstance(cell, TrainCell):
        raise UnknownLayout(f"segment {k} has no spike-train cell")
    return cell


def _gather_all(buf: memoryview, cells: list[TrainCell], progress: bool) -> np.ndarray:
    from tqdm import tqdm

    totals = np.array([int(c.counts.sum()) for c in cells], np.int64)
    spikes = np.empty(int(totals.sum()), np.float64)
    bounds = np.concatenate(([0], np.cumsum(totals)))
    for k in tqdm(range(len(cells)), desc="spike times", unit="trial", disable=not progress or None,
                  leave=False):
        gather_times(buf, cells[k], spikes[bounds[k]:bounds[k + 1]])
    return spikes


def _first_event(seg: dict) -> tuple[list[str], np.ndarray]:
    events = seg.get("events")
    if not isinstance(events, list) or not events:
        return [], np.empty(0)
    ev = _one_struct(events[0], "event")
    labels = [str(x).strip() for x in ev.get("labels", [])]
    scale = unit_scale_s(text(ev.get("times_units", ["s"])))
    times = np.asarray(ev.get("times", np.empty(0)), np.float64).reshape(-1) * scale
    return labels, times


def _signals(seg: dict) -> list[tuple[str, str, float, float, np.ndarray]]:
    """A segment's single-channel AnalogSignals: (name, units, rate Hz, t_start s, samples)."""
    cell = seg.get("analogsignals")
    out = []
    for item in cell if isinstance(cell, list) else []:
        sig = _one_struct(item, "analog signal")
        values = np.asarray(sig.get("signal", np.empty((0, 0))), np.float64)
        if values.ndim != 2 or values.shape[1] != 1:
            log.warning("analog signal %r has %s channels; only single-channel signals are read",
                        text(sig.get("name", [])), values.shape[1:] or "no")
            continue
        rate = scalar(sig.get("sampling_rate"), "sampling_rate") * _RATE_UNITS.get(text(sig.get("sampling_rate_units", ["Hz"])), np.nan)
        t0 = scalar(sig.get("t_start"), "t_start") * unit_scale_s(text(sig.get("t_start_units", ["s"])))
        if not np.isfinite(rate) or rate <= 0:
            raise UnknownLayout("an analog signal's sampling rate")
        out.append((text(sig.get("name", [])), text(sig.get("signal_units", [""])), rate, t0, values[:, 0]))
    return out


_RATE_UNITS = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6}


def signal_columns(per_trial: list[list[tuple[str, str, float, float, np.ndarray]]]) -> dict:
    """Per-trial signal lists -> name -> Signal (a trial without one: no samples)."""
    names = list(dict.fromkeys(s[0] for trial in per_trial for s in trial))
    out = {}
    for name in names:
        found = [next((s for s in trial if s[0] == name), None) for trial in per_trial]
        present = [(k, s) for k, s in enumerate(found) if s is not None]
        first = present[0][1]
        changed = next((k for k, s in present if (s[1], s[2]) != (first[1], first[2])), None)
        if changed is not None:  # unusable as a target; the rest of the file still reads
            other = found[changed]
            problem = (f"signal {name!r} changes its unit or sampling rate at the file's trial {changed} "
                       f"({first[1]} at {first[2]:g} Hz before, {other[1]} at {other[2]:g} Hz there); "
                       "convert it to one unit and resample it to one rate")
            out[name] = Signal.unusable(name, len(found), problem)
            continue
        out[name] = Signal.from_trials(name, first[1], first[2], [s[4] if s else np.empty(0) for s in found],
                                       np.array([s[3] if s else np.nan for s in found]))
    return out


def _annotations(seg: dict) -> dict:
    """A segment's annotations that hold one number or one string (others are not trial labels)."""
    ann = seg.get("annotations")
    ann = ann[0] if isinstance(ann, list) and len(ann) == 1 and isinstance(ann[0], dict) else ann
    if not isinstance(ann, dict):
        return {}
    out = {}
    for key, value in ann.items():
        try:
            out[key] = scalar(value, key)
        except UnknownLayout:
            try:
                out[key] = text(value).strip() or None
            except UnknownLayout:
                continue
    return out


def trial_columns(per_trial: list[dict]) -> dict[str, list]:
    """Per-trial annotation dicts -> name -> one value per trial (None where a trial lacks it)."""
    keys = list(dict.fromkeys(k for d in per_trial for k in d))
    return {k: [d.get(k) for d in per_trial] for k in keys}


def _assemble(path: Path, block: dict, segments: list[dict], cells: list[TrainCell],
              spikes: np.ndarray) -> Recording:
    n_units = len(cells[0]) if cells else 0
    counts = [c.counts for c in cells]
    labels_times = [_first_event(seg) for seg in segments]
    return Recording.from_trials(
        path=path,
        name=text(block.get("name", [])) or Path(path).name.split(".")[0],
        unit_counts=[len(c) for c in cells],
        train_counts=counts,
        t_start_s=[c.t_start_s for c in cells],
        t_stop_s=[c.t_stop_s for c in cells],
        trial_annotations=trial_columns([_annotations(seg) for seg in segments]),
        signals=signal_columns([_signals(seg) for seg in segments]),
        event_labels=[lt[0] for lt in labels_times],
        event_times_s=[lt[1] for lt in labels_times],
        spike_times_s=spikes,
        n_units=n_units,
    )


# --------------------------------------------------------------------------- writing


def _element(mtype: int, payload: bytes) -> bytes:
    """A data element: small format for <= 4 bytes (as scipy writes it), else tag + padded data."""
    n = len(payload)
    if n <= 4:
        return _U32.pack((n << 16) | mtype) + payload.ljust(4, b"\0")
    return _TAG.pack(mtype, n) + payload + b"\0" * (_pad8(n) - n)


def _header(mclass: int, dims: tuple[int, ...], name: str = "") -> bytes:
    flags = _TAG.pack(MI_UINT32, 8) + _TAG.pack(mclass, 0)
    dims_el = _element(MI_INT32, np.asarray(dims, "<i4").tobytes())
    return flags + dims_el + _element(MI_INT8, name.encode("ascii"))


def _matrix(body: bytes) -> bytes:
    return _TAG.pack(MI_MATRIX, len(body)) + body


def _matdims(arr: np.ndarray) -> tuple[int, ...]:
    """scipy's matdims with oned_as='row'."""
    if arr.ndim == 0:
        return (1, 1)
    if arr.ndim == 1:
        return (0, 0) if arr.shape[0] == 0 else (1, arr.shape[0])
    return arr.shape


def encode(value: object, name: str = "") -> bytes:
    """One miMATRIX for a Python value, byte-identical to what scipy.io.savemat writes."""
    if isinstance(value, dict):
        return _encode_struct(value, name)
    if isinstance(value, str):
        return _encode_chars(np.asarray([value]) if value else np.asarray(""), name, single=True)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _matrix(_header(MX_CELL, (1, len(value)), name) + b"".join(encode(v) for v in value))
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return _encode_chars(arr, name)
    if arr.dtype.kind == "b":
        raise TypeError("logical arrays are not part of the Neo layout")
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    if arr.dtype not in NP_TO_MX:
        raise TypeError(f"cannot write dtype {arr.dtype}")
    payload = arr.tobytes(order="F")
    return _matrix(_header(NP_TO_MX[arr.dtype], _matdims(arr), name) + _element(NP_TO_MI[arr.dtype], payload))


def _encode_chars(arr: np.ndarray, name: str, single: bool = False) -> bytes:
    if arr.size == 0 or np.all(arr == ""):
        return _matrix(_header(MX_CHAR, (0, 0), name) + _element(MI_UTF8, b""))
    rows = [str(s) for s in arr.reshape(-1)]
    width = max(len(s) for s in rows)
    grid = np.array([list(s.ljust(width)) for s in rows])
    dims = (1, width) if single or arr.ndim == 0 else (len(rows), width)
    payload = "".join(grid.T.reshape(-1)).encode("ascii")
    return _matrix(_header(MX_CHAR, dims, name) + _element(MI_UTF8, payload))


def _field_names(names: list[str]) -> bytes:
    length = max(len(n) for n in names) + 1
    if length > 32:
        raise ValueError("MAT field names are limited to 31 characters")
    raw = b"".join(n.encode("ascii").ljust(length, b"\0") for n in names)
    return _element(MI_INT32, struct.pack("<i", length)) + _element(MI_INT8, raw)


def _encode_struct(fields: dict, name: str = "") -> bytes:
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        body = _header(MX_STRUCT, (1, 1), name) + _element(MI_INT32, struct.pack("<i", 1)) + _element(MI_INT8, b"")
        return _matrix(body)
    names = list(fields)
    return _matrix(_header(MX_STRUCT, (1, 1), name) + _field_names(names)
                   + b"".join(encode(fields[n]) for n in names))


class _TrainEncoder:
    """Spike-train structs as NeoMatlabIO writes them, from precomputed constant pieces.

    Field order and contents follow `NeoMatlabIO.create_struct_from_obj` for a SpikeTrain in
    seconds with the default sampling rate and no annotations.
    """

    FIELDS = ["neo_id", "times", "times_units", "t_start", "t_start_units", "t_stop",
              "t_stop_units", "sampling_rate", "sampling_rate_units", "annotations"]

    def __init__(self) -> None:
        self.head = _header(MX_STRUCT, (1, 1)) + _field_names(self.FIELDS)
        self.int_head = _header(NP_TO_MX[np.dtype("<i8")], (1, 1)) + _TAG.pack(MI_INT64, 8)
        self.dbl_head = _header(6, (1, 1)) + _TAG.pack(MI_DOUBLE, 8)
        self.s_units = encode("s")
        self.tail = encode("s") + encode(1.0) + encode("Hz") + encode({})
        self.flags = _TAG.pack(MI_UINT32, 8) + _TAG.pack(6, 0)
        self.empty_times = encode(np.empty(0))

    def __call__(self, neo_id: int, times_s: np.ndarray, t_start_s: float, t_stop_s: float) -> bytes:
        n = len(times_s)
        if n:
            nbytes = 8 * n
            times = _matrix(self.flags + _element(MI_INT32, struct.pack("<ii", 1, n)) + _element(MI_INT8, b"")
                            + _TAG.pack(MI_DOUBLE, nbytes) + times_s.astype("<f8", copy=False).tobytes())
        else:
            times = self.empty_times
        body = b"".join((
            self.head, _TAG.pack(MI_MATRIX, len(self.int_head) + 8), self.int_head, struct.pack("<q", neo_id),
            times, self.s_units,
            _TAG.pack(MI_MATRIX, len(self.dbl_head) + 8), self.dbl_head, struct.pack("<d", t_start_s),
            self.s_units,
            _TAG.pack(MI_MATRIX, len(self.dbl_head) + 8), self.dbl_head, struct.pack("<d", t_stop_s),
            self.tail,
        ))
        return _matrix(body)


class _Patcher:
    """Write a matrix whose size is known only at its end: placeholder tag, then seek back."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.starts: list[int] = []

    def open(self, header: bytes) -> None:
        self.starts.append(self.fh.tell())
        self.fh.write(_TAG.pack(MI_MATRIX, 0) + header)

    def close(self) -> None:
        start = self.starts.pop()
        end = self.fh.tell()
        if end - start - 8 >= 2 ** 32:
            raise ValueError("a MAT v5 matrix cannot exceed 4 GiB")
        self.fh.seek(start + 4)
        self.fh.write(_U32.pack(end - start - 8))
        self.fh.seek(end)


def file_header() -> bytes:
    text_ = f"MATLAB 5.0 MAT-file Platform: {os.name}, Created on: {time.asctime()}"
    return text_.encode("ascii").ljust(116, b" ")[:116] + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


LABEL_WIDTH = 8  # phase labels are written as a space-padded char matrix, as in the real files


def write_recording(rec: Recording, fh: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
    """Write `rec` as NeoMatlabIO would write the equivalent Neo Block, one Segment per trial.

    Args:
        rec: the session.
        fh: a binary file opened for writing (seekable).
        progress: called with 1 after each trial is written.
    """
    train = _TrainEncoder()
    out = _Patcher(fh)
    fh.write(file_header())
    block_fields = ["neo_id", "segments", "groups", "name", "annotations"]
    out.open(_header(MX_STRUCT, (1, 1), "block") + _field_names(block_fields))
    fh.write(encode(np.int64(1)))
    out.open(_header(MX_CELL, (1, rec.n_trials)) if rec.n_trials else b"")
    neo_id = 2
    for k in range(rec.n_trials):
        fh.write(_segment_bytes(rec, k, neo_id, train))
        neo_id += rec.n_units + 2 + len(rec.signals)
        if progress:
            progress(1)
    out.close()
    fh.write(encode([]))
    fh.write(encode(rec.name))
    fh.write(encode(rec.annotations))
    out.close()


def _segment_bytes(rec: Recording, k: int, neo_id: int, train: _TrainEncoder) -> bytes:
    seg_fields = ["neo_id", "analogsignals", "epochs", "events", "irregularlysampledsignals",
                  "spiketrains", "imagesequences", "name", "annotations"]
    t0, t1 = float(rec.t_start_s[k]), float(rec.t_stop_s[k])
    trains = [train(neo_id + 2 + u, rec.train(k, u), t0, t1) for u in range(rec.n_units)]
    cell = _matrix(_header(MX_CELL, (1, rec.n_units)) + b"".join(trains)) if trains else encode([])
    event = {
        "neo_id": np.int64(neo_id + 1), "times": np.asarray(rec.event_times_s[k], np.float64),
        "times_units": "s", "labels": np.asarray([s.ljust(LABEL_WIDTH) for s in rec.event_labels[k]], dtype=str), "annotations": {},
    }
    body = b"".join((
        _header(MX_STRUCT, (1, 1)), _field_names(seg_fields), encode(np.int64(neo_id)),
        encode(_signal_structs(rec, k, neo_id + 2 + rec.n_units)), encode([]), encode([event]), encode([]), cell,
        encode([]),
        encode(f"trial {k}"),
        encode(_trial_annotations(rec, k)),
    ))
    return _matrix(body)


def _signal_structs(rec: Recording, k: int, first_id: int) -> list[dict]:
    """Trial k's signals as NeoMatlabIO writes AnalogSignals (one channel: samples x 1)."""
    out = []
    for j, sig in enumerate(rec.signals.values()):
        values = sig.trial(k)
        if len(values):
            out.append({"neo_id": np.int64(first_id + j), "signal": np.asarray(values, np.float64)[:, None],
                        "signal_units": sig.units, "sampling_rate": np.float64(sig.rate_hz), "sampling_rate_units": "Hz",
                        "t_start": np.float64(sig.t_start_s[k]), "t_start_units": "s", "name": sig.name,
                        "annotations": {}})
    return out


def _trial_annotations(rec: Recording, k: int) -> dict:
    """Trial k's annotations as Neo writes them: whole numbers as int64, other numbers as float64,
    text as text; a value the trial lacks (NaN, '') is left out."""
    out = {}
    for key, column in rec.trial_annotations.items():
        value = column[k]
        if column.dtype.kind == "f":
            if not np.isnan(value):
                out[key] = np.int64(value) if float(value).is_integer() else np.float64(value)
        elif value:
            out[key] = str(value)
    return out


def save_recording(rec: Recording, path: Path, progress: Callable[[int], None] | None = None) -> None:
    """Write atomically: a temporary name in the same folder, renamed on success."""
    from host.files import atomic_path

    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        write_recording(rec, fh, progress)
