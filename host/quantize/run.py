"""`grasptpu quantize`: a trained model folder -> full-int8 TFLite for the Edge TPU, plus its float twin.

Steps, all from the model folder alone (`grasptpu train` stored what they need; the recording
is not read again):
1. Check the Keras model, the test windows and the calibration windows against the manifest's sha256.
2. Rebuild the trained model from Edge-TPU-listed ops (`host.quantize.export`) and prove it equal.
3. Convert (`host.quantize.convert`): float32 TFLite, and full int8 calibrated on the stored
   training windows, stratified by label so rare classes and the short grasp phase set the
   ranges too (or on a user's windows, `--representative`).
4. Run Keras, float TFLite and int8 TFLite on the test windows; add those outputs to the test set
   (test_set.npz) for the board to compare against, and the comparison to the manifest.
5. The Edge TPU compatibility report of the int8 model goes into the manifest too.

The folder is rewritten all at once (a staged copy renamed into place): a failure at any step
leaves the previous folder untouched, never an int8 file without its manifest entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.contract import (CALIBRATION, COMPILE_LOG, COMPILED_MODEL, FLOAT_MODEL, INPUT_QUANTISATION, INT8_MODEL,
                             KERAS_MODEL, TEST_SET, TEST_TARGET_ARRAY, TEST_WINDOW_ARRAYS, TestSet, save_test_set)
from host.data.windows import stratified_sample
from host.errors import GrasptpuError
from host.modelfolder import Rewrite, check_files, load_calibration, load_keras, read_manifest
from host.provenance import environment
from host.quantize import edgetpu_check, gate
from host.quantize.convert import check_representative, convert, slimmed
from host.quantize.export import check_equivalent, export_model

PROBE_WINDOWS = 16  # calibration windows on which the export and the slimmed file are proven equal


@dataclass
class ModelData:
    """A trained model folder's manifest, Keras model, test windows and calibration windows."""

    folder: Path
    manifest: dict
    model: object
    test_arrays: dict[str, np.ndarray]
    calibration: np.ndarray
    calibration_label: np.ndarray


def load_model_dir(folder: Path) -> ModelData:
    """The trained model and the windows stored with it, each file checked against the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if "calibration" not in manifest:
        raise GrasptpuError(f"{folder}: no calibration windows in the manifest: trained by an older grasptpu "
                            "(or not a trained model folder); run `grasptpu train` again")
    check_files(folder, manifest, (KERAS_MODEL, TEST_SET, CALIBRATION), "grasptpu train")
    test = TestSet.load(str(folder), manifest)
    test_arrays = {k: test.arrays[k] for k in TEST_WINDOW_ARRAYS + (TEST_TARGET_ARRAY,) if k in test.arrays}
    calibration, labels = load_calibration(folder, manifest)
    model = load_keras(folder, manifest)
    return ModelData(folder, manifest, model, test_arrays, calibration, labels)


def representative_set(md: ModelData, size: int | None, seed: int,
                       user: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """The windows the int8 ranges are calibrated on, and what the manifest says of them: the user's,
    all the stored ones, or a stratified `size` of them (always keeping the busiest window)."""
    data = md.manifest["data"]
    if user is not None:
        rep = check_representative(user, data["window_bins"], data["n_units"])
        return rep, {"source": "user-given file", "windows": int(len(rep))}
    stored, info = md.calibration, dict(md.manifest["calibration"])
    if size is not None and size < len(stored):
        busiest = int(np.argmax(stored.reshape(len(stored), -1).max(axis=1)))
        idx = np.unique(np.concatenate([stratified_sample(md.calibration_label, size, seed), [busiest]]))
        stored, labels = stored[idx], md.calibration_label[idx]
        per_label = np.bincount(labels, minlength=len(data["label_names"]))
        info.update(source=f"{info['source']}; {len(idx)} of the {len(md.calibration)} stored, stratified",
                    windows=int(len(idx)), subsample_seed=seed,
                    per_label={data["label_names"][k]: int(v) for k, v in enumerate(per_label)})
    return stored.astype(np.float32), info


def label_map(manifest: dict) -> list[dict]:
    """Class index -> what it means: object id, shape and size (object) or rest/grasp."""
    from host.data.objects import shape_of, size_of
    from host.train.metrics import has_catalogue

    names = manifest["data"]["label_names"]
    if manifest["task"] != "object":
        return [{"index": i, "name": n} for i, n in enumerate(names)]
    catalogue = has_catalogue(manifest["data"].get("layout"))  # else no shapes or sizes: the classes are the layout's
    return [{"index": i, "name": n, "object_id": int(c), "shape": shape_of(int(c)) if catalogue else None,
             "size": size_of(int(c)) if catalogue else None}
            for i, (n, c) in enumerate(zip(names, manifest["data"]["classes"]))]


def quantize(folder: Path, representative_size: int | None = None, seed: int = 0,
             representative: np.ndarray | None = None) -> dict:
    """Write the float and int8 TFLite models, the test set with the host's outputs and the completed
    manifest; return the manifest (with `quantize_seconds`)."""
    t0 = time.perf_counter()
    md = load_model_dir(folder)
    data, task = md.manifest["data"], md.manifest["task"]
    wb, units = data["window_bins"], data["n_units"]
    exported = export_model(md.model, wb, units)
    probe = md.calibration[:PROBE_WINDOWS].astype(np.float32)
    export_diff = check_equivalent(md.model, exported, probe)
    rep, rep_info = representative_set(md, representative_size, seed, representative)
    t1 = time.perf_counter()
    float_flat = slimmed(convert(exported, None), probe)
    int8_flat = slimmed(convert(exported, rep), probe)
    convert_s = time.perf_counter() - t1

    test = TestSet(md.test_arrays, wb, units, len(data["label_names"]))
    outputs = gate.host_outputs(md.model, float_flat, int8_flat, test)
    comparison = gate.compare_test_set(outputs, test, md.manifest)

    with Rewrite(md.folder) as staged:
        (staged.path / FLOAT_MODEL).write_bytes(float_flat)
        (staged.path / INT8_MODEL).write_bytes(int8_flat)
        for stale in (COMPILED_MODEL, COMPILE_LOG):  # a new int8 model voids an earlier compilation
            (staged.path / stale).unlink(missing_ok=True)
        save_test_set(str(staged.path / TEST_SET), {**md.test_arrays, "keras_probs": outputs["keras"],
                                                     "float_probs": outputs["float"], "int8_output": outputs["int8_raw"]})
        check = edgetpu_check.check_model(staged.path / INT8_MODEL)
        manifest = {k: v for k, v in md.manifest.items() if k != "edgetpu"}
        manifest["tflite"] = {
            "float": {"file": FLOAT_MODEL, "bytes": len(float_flat)},
            "int8": {"file": INT8_MODEL, "bytes": len(int8_flat), **gate.io_details(int8_flat)},
            "representative": rep_info,
            "export_max_abs_diff": export_diff,
            "convert_seconds": convert_s,
            "input_quantisation": INPUT_QUANTISATION,
        }
        manifest["labels"] = label_map(md.manifest)
        manifest["test_set"] = {"file": TEST_SET, "windows": len(test), "trials": test.n_trials,
                                "split": "test", "outputs": _outputs_described(task, data)}
        manifest["quantization"] = comparison
        manifest["edgetpu_check"] = check.summary()
        manifest["quantize_environment"] = environment()
        manifest = staged.write_manifest(manifest)
        staged.commit()
    manifest["quantize_seconds"] = time.perf_counter() - t0
    return manifest


def _outputs_described(task: str, data: dict) -> dict:
    """What the three stored output arrays hold (the contract's names, whatever the task)."""
    what = ("the target in {}".format(data["target"]["units"]) if task == "aperture" else "probabilities")
    return {"keras_probs": f"Keras float model, {what}", "float_probs": f"float TFLite, {what}",
            "int8_output": "int8 TFLite, raw int8 outputs"}
