"""How a benchmark runs one step in a process of its own, so each step's wall time, threads and
peak RSS are its own: this Python, from the repository root, with TensorFlow's C++ log
quietened. A child that fails stops the benchmark (its stderr is already on the terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(args: list[str], capture: bool = False) -> str:
    """Run `python ARGS...`; its standard output if `capture`, else it is discarded."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, *args], check=True, cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    return done.stdout or ""


def child_json(args: list[str]) -> dict:
    """Run a child that prints its result as JSON on its last line of output; that result."""
    return json.loads(run_child(args, capture=True).strip().splitlines()[-1])
