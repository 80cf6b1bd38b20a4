"""Which TFLite runtime runs the model on this machine, chosen in a fixed order and always reported.

Order (first that works wins):
1. Google's `pycoral` with an Edge TPU it lists (Coral's package repository; never PyPI's
   unrelated `pycoral`), running the compiled `_edgetpu.tflite` model;
2. `tflite_runtime` with the `libedgetpu.so.1` delegate, same model;
3. `tflite_runtime` on the CPU, int8 model;
4. `ai_edge_litert` on the CPU;
5. `tensorflow.lite` on the CPU.
The Edge TPU choices need a compiled model in the folder; without one the runner says so and
runs the int8 model on the CPU. Every skipped choice is kept with its reason, so a report never
claims an Edge TPU that was not used.

`python -m device.runtime [--json -]` says what this board runs: Python, numpy, the runtime
that would be chosen for a compiled model and why the better ones were skipped (the host prints
it beside what its inventory records).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import platform
import sys
from typing import Callable, List, Optional

from device.contract import DeviceError, first_line

EDGETPU_LIB = "libedgetpu.so.1"
ORDER = ("pycoral", "tflite_runtime+edgetpu", "tflite_runtime", "ai_edge_litert", "tensorflow")


class Runtime:
    """A chosen runtime: its name, whether the Edge TPU is used, and how to open a model with it."""

    def __init__(self, name: str, edgetpu: bool, detail: str, opener: Callable, skipped: List[str],
                 version: str = "?") -> None:
        self.name = name
        self.version = version
        self.edgetpu = edgetpu
        self.detail = detail
        self._opener = opener
        self.skipped = skipped

    def open(self, model_path: str, threads: int = 1):
        """An interpreter with tensors allocated."""
        it = self._opener(model_path, threads)
        it.allocate_tensors()
        return it

    def describe(self) -> dict:
        return {"runtime": self.name, "runtime_version": self.version, "edgetpu": self.edgetpu,
                "detail": self.detail, "skipped": self.skipped}


def _import(name: str):
    return importlib.import_module(name)


def _version(module) -> str:
    return getattr(module, "__version__", "?")


def _pycoral(skipped: List[str]) -> Optional[Runtime]:
    try:
        edgetpu = _import("pycoral.utils.edgetpu")
    except ImportError:
        skipped.append("pycoral: not installed")
        return None
    tpus = edgetpu.list_edge_tpus()
    if not tpus:
        skipped.append("pycoral: installed, but it lists no Edge TPU")
        return None
    where = ", ".join("{}:{}".format(t.get("type", "?"), t.get("path", "?")) for t in tpus)
    return Runtime("pycoral", True, "Edge TPU {} via pycoral".format(where),
                   lambda path, threads: edgetpu.make_interpreter(path), skipped, _version(_import("pycoral")))


def _tflite_edgetpu(skipped: List[str]) -> Optional[Runtime]:
    try:
        tfl = _import("tflite_runtime.interpreter")
    except ImportError:
        skipped.append("tflite_runtime + {}: tflite_runtime not installed".format(EDGETPU_LIB))
        return None
    try:
        # The library first, on its own: tflite_runtime's Delegate (2.7 and older) prints an
        # AttributeError from its __del__ at exit when it fails to open the library itself.
        ctypes.CDLL(EDGETPU_LIB)
        delegate = tfl.load_delegate(EDGETPU_LIB)
    except (ValueError, OSError, RuntimeError) as exc:
        skipped.append("tflite_runtime + {}: delegate not loadable ({})".format(EDGETPU_LIB, first_line(exc)))
        return None
    return Runtime("tflite_runtime", True, "{} delegate".format(EDGETPU_LIB),
                   lambda path, threads: tfl.Interpreter(model_path=path, num_threads=threads,
                                                         experimental_delegates=[delegate]), skipped,
                   _version(_import("tflite_runtime")))


def _cpu(name: str, module_name: str, skipped: List[str]) -> Optional[Runtime]:
    try:
        module = _import(module_name)
    except ImportError:
        skipped.append("{}: not installed".format(name))
        return None
    interpreter = module.Interpreter if hasattr(module, "Interpreter") else module.lite.Interpreter
    version = _version(_import(module_name.split(".")[0]))
    return Runtime(name, False, "CPU ({} {})".format(name, version),
                   lambda path, threads: interpreter(model_path=path, num_threads=threads), skipped, version)


def select(compiled_model: bool, allow_edgetpu: bool = True) -> Runtime:
    """The first runtime of `ORDER` that works here (see the module docstring)."""
    skipped: List[str] = []
    if not allow_edgetpu:
        skipped.append("Edge TPU: not requested (--cpu)")
    elif not compiled_model:
        skipped.append("Edge TPU: the folder has no compiled model (edgetpu_compiler was not run)")
    else:
        for probe in (_pycoral, _tflite_edgetpu):
            found = probe(skipped)
            if found is not None:
                return found
    for name, module in (("tflite_runtime", "tflite_runtime.interpreter"), ("ai_edge_litert", "ai_edge_litert.interpreter"),
                         ("tensorflow", "tensorflow")):
        found = _cpu(name, module, skipped)
        if found is not None:
            return found
    raise DeviceError("no TFLite runtime here ({}); install tflite-runtime (pip) or Coral's "
                      "python3-tflite-runtime".format("; ".join(skipped)))


def about() -> dict:
    """This machine's Python, numpy and the runtime a compiled model would get here."""
    import numpy

    try:
        chosen = select(compiled_model=True).describe()
    except DeviceError as exc:
        chosen = {"runtime": "none", "runtime_version": "-", "edgetpu": False, "detail": str(exc), "skipped": []}
    from device import lsl

    return {"python": platform.python_version(), "numpy": numpy.__version__, "machine": platform.machine(),
            **chosen, "lsl": lsl.status()}


def main(argv=None) -> int:
    from device.output import emit

    parser = argparse.ArgumentParser(prog="python -m device.runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the report to this file ('-' = stdout)")
    args = parser.parse_args(argv)
    info = about()
    text = "Python {python}, numpy {numpy} on {machine}: runtime {runtime} {runtime_version} ({detail})".format(**info)
    live = "  Lab Streaming Layer (device.live): " + info["lsl"]["detail"]
    emit(info, args.json, "\n".join([text] + ["  not used: " + why for why in info["skipped"]] + [live]))
    return 0  # a report, not a check: no runtime is said in `detail`, and the runners refuse to start


if __name__ == "__main__":
    sys.exit(main())
