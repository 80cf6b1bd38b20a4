"""Run the board's runner (`device.bench`) on this machine and print it beside the host's results.

The runner goes through a subprocess exactly as it would over SSH (`python -m device.bench
MODEL_DIR --json -`), so what is measured is the device package alone, with the runtime it picks
here; the host figures come from the manifest `grasptpu quantize` wrote (same test windows).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from host.errors import GrasptpuError


def run_device_bench(folder: Path, invokes: int, python: str = sys.executable, extra: tuple = ()) -> dict:
    cmd = [python, "-m", "device.bench", str(folder), "--invokes", str(invokes), "--json", "-", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise GrasptpuError(f"device.bench failed on {folder}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_by_side(device: dict, where: str = "this machine") -> str:
    """Host Keras / float TFLite / int8 TFLite beside the device runner, one row each."""
    host, acc, lat = device.get("host") or {}, device["accuracy"], device["latency"]
    obj = device["task"] == "object"
    second = "relaxed" if obj else "F1"
    lines = [f"{device['model']}: {device['task']}, {device['data']}",
             f"  {'decoder':<44} {'accuracy':>9} {second:>8} {'agree':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    for key, label in (("keras", "host: Keras float"), ("float", "host: float TFLite"), ("int8", "host: int8 TFLite")):
        if key in host:
            m = host[key]
            sec = f"{m['relaxed_accuracy']:.1%}" if obj else f"{m['f1']:.3f}"
            lines.append(f"  {label:<44} {m['accuracy']:>9.2%} {sec:>8} {m['agreement']:>8.2%} {'':>8} {'':>8}")
    sec = f"{acc['relaxed_accuracy']:.1%}" if obj else f"{acc['f1']:.3f}"
    label = f"device on {where}: {device['runtime']}{' + Edge TPU' if device['edgetpu'] else ''}"
    lines.append(f"  {label:<44} {acc['accuracy']:>9.2%} {sec:>8} {acc['host_float_agreement']:>8.2%} "
                 f"{lat['p50_ms']:>8.3f} {lat['p99_ms']:>8.3f}")
    lines.append(f"  device vs host int8: {acc['host_int8_bit_exact']:.2%} of windows bit-exact, argmax "
                 f"{acc['host_int8_argmax_agreement']:.2%}; {lat['n']} timed invokes, {device['threads']} thread(s); "
                 f"model file {device['model_file']} ({device['detail']})")
    lines += [f"  not used: {why}" for why in device["skipped"]]
    return "\n".join(lines)
