"""Where an artifact came from: package versions, the git commit and the machine, for manifests.

Every stage that writes a model folder (train, quantize) records this, so a figure printed later
can be traced to the code and libraries that produced it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("numpy", "scipy", "neo", "tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "ai-edge-litert",
            "grasptpu")


def environment() -> dict:
    """Package versions, the git commit (and whether the tree had changes) and the CPU count."""
    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=here, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=here).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "cpu_count": os.cpu_count()}
