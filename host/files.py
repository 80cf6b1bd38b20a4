"""Writing files so that a reader never sees half of one: one way for single files, one for folders.

Single files go to a temporary name beside their place and are renamed over it (`atomic_path`);
a folder is filled under a temporary name and swapped in whole (`StagedDir`). Either way a crash
leaves the previous version, and the temporary name is removed on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from device.contract import sha256_of  # one implementation: the board must hash exactly as the host does

__all__ = ["FileTooLarge", "StagedDir", "atomic_path", "read_bounded", "read_foreign", "read_toml", "sha256_of", "write_json",
           "write_text"]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds,
    removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes it 0600; the artifact gets the mode any new file would (umask)
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: object) -> None:
    """Indented JSON (numpy scalars and arrays as plain numbers and lists), written atomically."""
    write_text(path, json.dumps(data, indent=1, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


class StagedDir:
    """A folder filled under a temporary name, then atomically put in place of `final`."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", dir=self.final.parent))

    def commit(self) -> Path:
        """Swap the staged folder in; the previous one (if any) is removed only after the swap."""
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.rename(self.final, old)
        os.rename(self.path, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "StagedDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class FileTooLarge(OSError):
    """A file longer than the reader's bound (read_bounded)."""


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of a small file someone else may have written, read no further than `max_bytes` + 1,
    so a huge (or endless) file cannot fill memory. The one reader of such files (inventories,
    layouts, bench and live JSON); it raises what its caller words as one line: IsADirectoryError
    for a folder, FileNotFoundError, FileTooLarge (over `max_bytes`) or another OSError."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise FileTooLarge(f"{path} is larger than {max_bytes} bytes")
    return raw


def read_foreign(path: Path, what: str, article: str, fmt: str, parse, max_bytes: int, hint: str = ""):
    """A small text file someone else wrote (an inventory, a layout, a bench or live JSON), parsed
    by `parse(text)`, or a one-line GrasptpuError: a folder, missing, unreadable, over `max_bytes`,
    not UTF-8, not `fmt` (`parse` raised ValueError) or nested deeper than the parser's stack. The
    one place these are worded: `what` names the kind of file ("inventory file"), `article` is its
    "a"/"an", `hint` what to do about it."""
    from host.errors import GrasptpuError, first_line

    limit = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes / 2**10:g} KiB"
    tail = f"; {hint}" if hint else ""
    try:
        raw = read_bounded(path, max_bytes)
    except IsADirectoryError:
        raise GrasptpuError(f"{path}: a directory, not {article} {what}{tail}") from None
    except FileNotFoundError:
        raise GrasptpuError(f"{path}: no such {what}{tail}") from None
    except FileTooLarge:
        raise GrasptpuError(f"{path}: larger than {limit}; not {article} {what}{tail}") from None
    except OSError as exc:
        raise GrasptpuError(f"{path}: cannot read the {what} ({exc.strerror or exc}){tail}") from None
    try:
        return parse(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text: {exc.reason} at byte {exc.start}"
    except RecursionError:
        why = f"nested too deeply for {article} {what}"
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        why = first_line(exc)
    raise GrasptpuError(f"{path}: not valid {fmt} ({why}){tail}")


def read_toml(path: Path, what: str, article: str, max_bytes: int) -> dict:
    """A small TOML file someone else may have written (an inventory, a layout): `read_foreign`."""
    import tomllib

    return read_foreign(path, f"{what} file", article, "TOML", tomllib.loads, max_bytes)
