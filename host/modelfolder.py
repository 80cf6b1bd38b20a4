"""models/<name>/: what a training run leaves behind, written all at once or not at all.

A model folder is built under a temporary name beside its final place and renamed into it, so a
crash mid-write never leaves a folder that a later stage (quantize, deploy) would pick up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
KERAS_MODEL = "model.keras"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_manifest(folder: Path) -> dict:
    from host.errors import GrasptpuError

    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GrasptpuError(f"{folder}: no {MANIFEST}: not a model folder (run `grasptpu train` first)") from None
    except ValueError as exc:
        raise GrasptpuError(f"{path}: damaged manifest ({exc}); retrain the model") from None


def artifact_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder except the manifest itself."""
    return {p.name: sha256_of(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != MANIFEST}


class Rewrite(StagedDir):
    """A staged copy of an existing model folder: add or replace files, then rewrite the manifest.

    Used by the stages after training (quantize, compile): the folder changes all at once, so a
    crash mid-step leaves the previous, consistent folder in place.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(Path(folder))
        for p in self.final.iterdir():
            if p.is_file() and p.name != MANIFEST:
                shutil.copy2(p, self.path / p.name)

    def write_manifest(self, manifest: dict) -> dict:
        """Hash every file now in the staged folder into `manifest` and write it."""
        from host.train.fit import write_json

        manifest = {**manifest, "artifacts": artifact_hashes(self.path)}
        write_json(self.path / MANIFEST, manifest)
        return manifest
