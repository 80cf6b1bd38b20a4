"""Releases on the board: verify an uploaded release, switch `current` to it atomically, roll back.

Layout under the board's root folder (all written by `grasptpu deploy` through SSH):
    releases/<id>/           one deploy: release.json, device/, firmware_tests/, models/<name>/
    releases/<id>.partial/   an upload in progress (never active; removed by the next deploy)
    current -> releases/<id> the active release: a symlink replaced in one rename
    .deploy-lock/            held by the deploy in progress (mkdir is atomic)

Run on the board from inside the release being handled, e.g.
    cd ROOT/releases/<id>.partial && python -m device.release verify .
so the board's own Python and this package check the bytes that arrived. Python 3.7 compatible.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from device.contract import COMPILED_MODEL, INT8_MODEL, DeviceError, TestSet, check_relative, load_manifest, sha256_of
from device.contract import verify as verify_model

RELEASE_FILE = "release.json"
MODELS = "models"


def verify(folder: str) -> int:
    """Check every file of release.json by size and sha256, then every model folder against its
    manifest and that this board's runner loads it; return the file count or raise."""
    with open(os.path.join(folder, RELEASE_FILE)) as fh:
        release = json.load(fh)
    for entry in release["files"]:
        rel = check_relative(entry["path"], "release file")
        path = os.path.join(folder, *rel.split("/"))
        if os.path.islink(path) or not os.path.isfile(path):
            raise ValueError("{} is missing".format(rel))
        if os.path.getsize(path) != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            raise ValueError("{} does not match its sha256 (damaged in transfer or on disk)".format(rel))
    check_models(os.path.join(folder, MODELS))
    return len(release["files"])


def check_models(models: str) -> list:
    """Each model folder of a release: its manifest, every board file it lists against its sha256,
    the test set readable, and the model loaded by the runtime this board would run it with. So
    `current` never switches to a release the runner would then refuse."""
    from device import runtime as rt
    from device.decoder import Decoder

    names = sorted(os.listdir(models)) if os.path.isdir(models) else []
    if not names:
        raise ValueError("the release holds no model folder under {}/".format(MODELS))
    for name in names:
        folder = os.path.join(models, name)
        manifest = load_manifest(folder)
        verify_model(folder, manifest)
        TestSet.load(folder, manifest)
        runtime = rt.select(COMPILED_MODEL in manifest["artifacts"])
        # Said before loading: a damaged flatbuffer can crash the TFLite runtime (tflite_runtime 2.7
        # has no verifier), and then this line is the host's only clue which model did it.
        model = COMPILED_MODEL if runtime.edgetpu else INT8_MODEL
        print("device.release: loading {} with {}".format(os.path.join(folder, model), runtime.detail),
              file=sys.stderr, flush=True)
        Decoder(folder, manifest, runtime)
    return names


def releases(root: str) -> list:
    """Finished release ids, oldest first (ids start with a sortable UTC time)."""
    folder = os.path.join(root, "releases")
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if not n.endswith(".partial") and not n.startswith("."))


def current(root: str):
    link = os.path.join(root, "current")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def activate(root: str, release_id: str) -> None:
    """Point `current` at releases/<id> with one rename (a reader sees the old or the new, never neither)."""
    target = os.path.join("releases", release_id)
    if not os.path.isdir(os.path.join(root, target)):
        raise ValueError("release {} is not on this board".format(release_id))
    tmp = os.path.join(root, "current.new.{}".format(os.getpid()))
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, os.path.join(root, "current"))


def finish(root: str, partial: str, keep: int) -> str:
    """Rename an uploaded, verified `<id>.partial` to `<id>`, activate it and prune old releases."""
    if not partial.endswith(".partial"):
        raise ValueError("{} is not an upload in progress (<id>.partial)".format(partial))
    release_id = partial[: -len(".partial")]
    os.sync()  # the uploaded files reach the disk before `current` can point at them
    os.rename(os.path.join(root, "releases", partial), os.path.join(root, "releases", release_id))
    activate(root, release_id)
    prune(root, keep)
    return release_id


def prune(root: str, keep: int) -> list:
    """Remove all but the newest `keep` releases (never the active one) and stale partial uploads."""
    active = current(root)
    done = releases(root)
    removed = [r for r in done[: max(len(done) - keep, 0)] if r != active]
    folder = os.path.join(root, "releases")
    removed += [n for n in os.listdir(folder) if n.endswith(".partial")]
    for name in removed:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return removed


def rollback(root: str) -> str:
    """Activate the release before the current one."""
    done = releases(root)
    active = current(root)
    if active not in done or done.index(active) == 0:
        raise ValueError("no earlier release to roll back to (releases: {})".format(", ".join(done) or "none"))
    previous = done[done.index(active) - 1]
    activate(root, previous)
    return previous


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["verify"] and len(args) == 2:
            print(json.dumps({"verified_files": verify(args[1])}))
        elif args[:1] == ["finish"] and len(args) == 4:
            print(json.dumps({"current": finish(args[1], args[2], int(args[3]))}))
        elif args[:1] == ["rollback"] and len(args) == 2:
            print(json.dumps({"current": rollback(args[1])}))
        elif args[:1] == ["status"] and len(args) == 2:
            print(json.dumps({"current": current(args[1]), "releases": releases(args[1])}))
        else:
            print("usage: python -m device.release verify DIR | finish ROOT PARTIAL KEEP | rollback ROOT | status ROOT",
                  file=sys.stderr)
            return 64
    except (OSError, ValueError, KeyError, TypeError, DeviceError) as exc:
        print("device.release: error: {}".format(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
