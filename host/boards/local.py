"""Run the board's runner (`device.bench`) on this machine and print it beside the host's results.

The runner goes through a subprocess exactly as it would over SSH (`python -m device.bench
MODEL_DIR --json -`), so what is measured is the device package alone, with the runtime it picks
here; the host figures come from the manifest `grasptpu quantize` wrote (same test windows).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from host.errors import GrasptpuError, last_line, report_json


def run_device_bench(folder: Path, invokes: int, python: str = sys.executable, extra: tuple = ()) -> dict:
    """device.bench's JSON report on `folder`, or one line saying why there is none."""
    cmd = [python, "-m", "device.bench", str(folder), "--invokes", str(invokes), "--json", "-", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if proc.returncode != 0:
        raise GrasptpuError(f"device.bench failed on {folder}: {last_line(proc.stderr, f'exit {proc.returncode}')}")
    return report_json(proc.stdout, proc.stderr, f"device.bench on {folder}")
