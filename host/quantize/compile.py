"""Compile the int8 model for the Edge TPU with Coral's `edgetpu_compiler`, when it is installed.

The compiler is a closed x86-64 Debian/Ubuntu binary from Coral's package repository. When it
is not on PATH this step says so, how to install it, and exits with its own code
(`EXIT_NO_COMPILER`); the compatibility report `grasptpu quantize` stored in the manifest stays
the evidence, and the board runs the int8 model on its CPU. Nothing is ever marked compiled
unless the compiler ran and wrote its model.

The compiler's report (stdout) and its operation log (`<model>_edgetpu.log`) are parsed into the
manifest: operations on the Edge TPU and on the CPU, subgraphs, on-chip and off-chip memory.
Formats: Coral, "Edge TPU Compiler" (coral.ai/docs/edgetpu/compiler); the parsers are tested on
Coral's documented output in tests/test_quantize.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from device.contract import COMPILE_LOG, COMPILED_MODEL, INT8_MODEL
from host.errors import GrasptpuError, last_line
from host.modelfolder import Rewrite, check_files, read_manifest

COMPILER = "edgetpu_compiler"
EXIT_NO_COMPILER = 3
INSTALL_HINT = ("install it from Coral's package repository (x86-64 Debian/Ubuntu only): add "
                "'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' to "
                "/etc/apt/sources.list.d/coral-edgetpu.list with Google's apt key, then "
                "`sudo apt-get update && sudo apt-get install edgetpu-compiler`")
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}


class CompilerMissing(GrasptpuError):
    """`edgetpu_compiler` is not installed here: a distinct outcome, not a failure of the model."""


def _bytes(text: str) -> int | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?i?B)\s*", text)
    return int(float(m.group(1)) * UNITS[m.group(2)]) if m else None


def parse_report(stdout: str) -> dict:
    """The compiler's summary lines, as numbers. Unknown lines are ignored."""
    keys = {
        "Edge TPU Compiler version": ("compiler_version", str),
        "Input size": ("input_bytes", _bytes), "Output size": ("output_bytes", _bytes),
        "On-chip memory used for caching model parameters": ("on_chip_used_bytes", _bytes),
        "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", _bytes),
        "On-chip memory available for caching model parameters": ("on_chip_available_bytes", _bytes),
        "Off-chip memory used for streaming uncached model parameters": ("off_chip_used_bytes", _bytes),
        "Number of Edge TPU subgraphs": ("edgetpu_subgraphs", int),
        "Total number of operations": ("total_ops", int),
        "Number of operations that will run on Edge TPU": ("ops_on_edgetpu", int),
        "Number of operations that will run on CPU": ("ops_on_cpu", int),
    }
    out: dict = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("Edge TPU Compiler version"):
            out["compiler_version"] = line.rsplit(" ", 1)[-1]
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys:
            name, conv = keys[key.strip()]
            try:
                out[name] = conv(value.strip())
            except ValueError:
                continue
    return out


def parse_log(text: str) -> list[dict]:
    """The operation log's table: one row per (operator, status) with its count."""
    rows = []
    for m in re.finditer(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", text, re.M):
        rows.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    return rows


def summarise(report: dict, rows: list[dict]) -> dict:
    """Report + log -> what the manifest keeps; op counts from the log when the report lacks them."""
    on_tpu = sum(r["count"] for r in rows if r["status"] == "Mapped to Edge TPU")
    total = sum(r["count"] for r in rows)
    out = dict(report)
    if rows:
        out.setdefault("ops_on_edgetpu", on_tpu)
        out.setdefault("total_ops", total)
        out.setdefault("ops_on_cpu", total - on_tpu)
        out["not_mapped"] = [r for r in rows if r["status"] != "Mapped to Edge TPU"]
    elif "total_ops" in out and "ops_on_edgetpu" not in out:
        out["ops_on_edgetpu"], out["ops_on_cpu"] = out["total_ops"], 0  # the report omits them when all map
    return out


def find_compiler(name: str = COMPILER) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise CompilerMissing(f"{name} is not on PATH, so nothing was compiled; {INSTALL_HINT}. "
                              "The Edge TPU compatibility report in the manifest stays the evidence "
                              "(`grasptpu edgetpu-check`), and the board runs the int8 model on its CPU")
    return exe


def run_compiler(int8_model: Path, exe: str, timeout_s: float = 600.0) -> tuple[Path, dict, Path]:
    """Compile into a fresh temporary folder; returns (compiled model, parsed summary, that folder)."""
    out_dir = Path(tempfile.mkdtemp(prefix="grasptpu-edgetpu-"))
    cmd = [exe, "--show_operations", "--out_dir", str(out_dir), str(int8_model)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise GrasptpuError(f"{exe} did not finish within {timeout_s:.0f} s on {int8_model}") from None
    stem = int8_model.stem
    compiled, log = out_dir / f"{stem}_edgetpu.tflite", out_dir / f"{stem}_edgetpu.log"
    if proc.returncode != 0 or not compiled.is_file():
        shutil.rmtree(out_dir, ignore_errors=True)
        last = last_line(proc.stderr + "\n" + proc.stdout, "no output")
        raise GrasptpuError(f"{exe} failed on {int8_model} (exit {proc.returncode}): {last}")
    rows = parse_log(log.read_text(errors="replace")) if log.is_file() else parse_log(proc.stdout)
    return compiled, summarise(parse_report(proc.stdout), rows), out_dir


def compile_model(folder: Path, compiler: str = COMPILER) -> dict:
    """Compile a quantised folder's int8 model; the compiled file, its log and the summary land in it."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    int8 = folder / INT8_MODEL
    if "tflite" not in manifest or not int8.is_file():
        raise GrasptpuError(f"{folder}: no int8 model; run `grasptpu quantize {folder}` first")
    check_files(folder, manifest, (INT8_MODEL,), f"grasptpu quantize {folder}")
    exe = find_compiler(compiler)
    compiled, summary, out_dir = run_compiler(int8, exe)
    try:
        with Rewrite(folder) as staged:
            shutil.copy2(compiled, staged.path / COMPILED_MODEL)
            log = out_dir / f"{int8.stem}_edgetpu.log"
            if log.is_file():
                shutil.copy2(log, staged.path / COMPILE_LOG)
            manifest["edgetpu"] = {"compiled": True, "file": COMPILED_MODEL, "compiler": exe, **summary}
            manifest = staged.write_manifest(manifest)
            staged.commit()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return manifest["edgetpu"]
