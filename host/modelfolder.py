"""models/<name>/ on the host: read a model folder and change it all at once or not at all.

The folder's file names and manifest format are the host-to-board contract (`device.contract`);
this module is the host's side of it: the manifest read with errors a user can act on, every
file checked against its sha256 before a later stage uses it, and `Rewrite`, which stages a copy,
lets a stage add its files and swaps the copy in, so a crash mid-step leaves the previous,
consistent folder in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from device.contract import MANIFEST, DeviceError, check_manifest
from host.errors import GrasptpuError
from host.files import StagedDir, sha256_of, write_json


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise GrasptpuError(f"{folder}: no {MANIFEST}: not a model folder (run `grasptpu train` first)") from None
    except ValueError as exc:
        raise GrasptpuError(f"{path}: damaged manifest ({exc}); retrain the model") from None
    try:
        return check_manifest(manifest, str(path))
    except DeviceError as exc:
        raise GrasptpuError(f"{exc}; retrain the model, or use the folder its author wrote") from None


def check_files(folder: Path, manifest: dict, names: tuple[str, ...], redo: str) -> None:
    """Each of `names` is in the folder and matches the sha256 the manifest recorded for it, or a
    one-line error that says to run `redo` (the stage that writes it) again."""
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            raise GrasptpuError(f"{path}: missing; run `{redo}` again")
        if (manifest.get("artifacts") or {}).get(name) != sha256_of(path):
            raise GrasptpuError(f"{path}: changed since it was written (sha256 differs from the manifest); "
                                f"run `{redo}` again")


def artifact_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder except the manifest itself."""
    return {p.name: sha256_of(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != MANIFEST}


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Hash every file now in `folder` into `manifest` and write it; returns what was written."""
    manifest = {**manifest, "artifacts": artifact_hashes(folder)}
    write_json(Path(folder) / MANIFEST, manifest)
    return manifest


class Rewrite(StagedDir):
    """A staged copy of an existing model folder: add or replace files, then rewrite the manifest.

    Used by the stages after training (quantize, compile).
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(Path(folder))
        for p in self.final.iterdir():
            if p.is_file() and p.name != MANIFEST:
                shutil.copy2(p, self.path / p.name)

    def write_manifest(self, manifest: dict) -> dict:
        return write_manifest(self.path, manifest)
