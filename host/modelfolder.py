"""models/<name>/ on the host: read a model folder and change it all at once or not at all.

The folder's file names and manifest format are the host-to-board contract (`device.contract`);
this module is the host's side of it: the manifest read with errors a user can act on, every
file checked against its sha256 before a later stage uses it, and `Rewrite`, which stages a copy,
lets a stage add its files and swaps the copy in, so a crash mid-step leaves the previous,
consistent folder in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from device import contract
from device.contract import MANIFEST, DeviceError
from host.errors import GrasptpuError, first_line
from host.files import StagedDir, sha256_of, write_json


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, read and checked by the contract's one reader (device.contract
    .read_manifest: the same checks the board makes), its refusal as a one-line GrasptpuError."""
    try:
        return contract.read_manifest(str(folder), "retrain the model, or use the folder as its author wrote it")
    except DeviceError as exc:
        raise GrasptpuError(str(exc)) from None


def check_files(folder: Path, manifest: dict, names: tuple[str, ...], redo: str) -> None:
    """Each of `names` is a plain file in the folder (not a symbolic link: contract.path_in) and
    matches the sha256 the manifest recorded for it, or a one-line error that says to run `redo`
    (the stage that writes it) again."""
    for name in names:
        try:
            path = Path(contract.path_in(str(folder), name))
        except DeviceError as exc:
            raise GrasptpuError(str(exc)) from None
        if not path.is_file():
            raise GrasptpuError(f"{path}: missing; run `{redo}` again")
        if (manifest.get("artifacts") or {}).get(name) != sha256_of(path):
            raise GrasptpuError(f"{path}: changed since it was written (sha256 differs from the manifest); "
                                f"run `{redo}` again")


def load_keras(folder: Path, manifest: dict):
    """The folder's Keras model (checked by check_files first), loaded in Keras' safe mode (no
    Python lambdas deserialised from the file) and checked to take the manifest's window; a file
    Keras cannot read is a one-line error, whatever Keras raises."""
    import keras

    from host.train.bilstm import CUSTOM_OBJECTS

    path = Path(folder) / contract.KERAS_MODEL
    try:
        model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises anything from ValueError to OSError on a foreign file
        why = first_line(exc)[:200]
        raise GrasptpuError(f"{path}: not a readable Keras model ({type(exc).__name__}: {why}); retrain it") from None
    data = manifest["data"]
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape[1:] != (data["window_bins"], data["n_units"]):
        raise GrasptpuError(f"{path}: takes input {shape}, the manifest says windows of "
                            f"({data['window_bins']}, {data['n_units']}); retrain the model")
    return model


def load_calibration(folder: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """calibration.npz's windows and labels, checked against the manifest's window and classes."""
    path = Path(folder) / contract.CALIBRATION
    try:
        arrays = contract.read_npz(str(path), "calibration set", "run `grasptpu train` again")
    except DeviceError as exc:
        raise GrasptpuError(str(exc)) from None
    data = manifest["data"]
    windows, labels = arrays.get(contract.CALIBRATION_ARRAY), arrays.get(contract.CALIBRATION_LABEL)
    ok = (windows is not None and labels is not None and windows.dtype == np.uint8 and labels.dtype.kind in "iu"
          and windows.shape[1:] == (data["window_bins"], data["n_units"]) and len(windows) >= 1
          and labels.shape == (len(windows),) and labels.min() >= 0 and labels.max() < len(data["label_names"]))
    if not ok:
        raise GrasptpuError(f"{path}: not the manifest's calibration windows (uint8 ({data['window_bins']}, "
                            f"{data['n_units']}) windows with labels); run `grasptpu train` again")
    return windows, labels


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
