"""Lab Streaming Layer on the board: load pylsl, or say exactly what is missing and how to get it.

pylsl is two parts: the Python package (pure Python, `pip install pylsl`; 1.16.2 is the newest for
the Coral board's Python 3.7) and liblsl, the C++ library it opens with ctypes. PyPI's x86-64
wheels of newer pylsl bundle liblsl; the wheel pip picks for Python 3.7 and every aarch64 wheel
ship none, so on a Coral board liblsl must be built (cmake) or installed from the liblsl
release's arm64 .deb, then found on the library path or named by PYLSL_LIB (docs/live.md).

Only device.live needs this; device.stream and device.bench never import it.

liblsl logs every reconnect to stderr; device.live reports gaps itself, so unless the user has an
lsl_api.cfg of their own (LSLAPICFG or a standard place), ours keeps liblsl to fatal errors.
"""

from __future__ import annotations

import os
import platform

from device.contract import DeviceError, first_line, one_line

PIP_HINT = "pip install pylsl (1.16.2 on Python 3.7)"
LIBLSL_HINT = ("pylsl found no liblsl: build it (github.com/sccn/liblsl, cmake) or install the liblsl .deb for {} "
               "from its releases, then set PYLSL_LIB to the liblsl.so path")
_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsl_api.cfg")
_USER_CONFIGS = ("lsl_api.cfg", os.path.expanduser("~/lsl_api/lsl_api.cfg"), "/etc/lsl_api/lsl_api.cfg")


def _quiet_liblsl() -> None:
    if "LSLAPICFG" not in os.environ and not any(os.path.isfile(p) for p in _USER_CONFIGS):
        os.environ["LSLAPICFG"] = _CONFIG


class Missing(DeviceError):
    """No usable Lab Streaming Layer here; `problem` is what is missing and how to get it (without the
    "Lab Streaming Layer: " the message begins with), for device.runtime's report."""

    def __init__(self, problem: str) -> None:
        super().__init__("Lab Streaming Layer: " + problem)
        self.problem = one_line(problem)


def load():
    """The pylsl module, or Missing (a DeviceError) naming what is missing on this board and how to get it."""
    _quiet_liblsl()
    try:
        import pylsl
    except ImportError:
        raise Missing("pylsl is not installed for this Python; " + PIP_HINT) from None
    except (RuntimeError, OSError) as exc:  # pylsl raises RuntimeError when liblsl is missing or will not load
        found = "could not be loaded" in str(exc)
        raise Missing(first_line(exc) if found else LIBLSL_HINT.format(platform.machine())) from None
    return pylsl


def status() -> dict:
    """What this board has for LSL (device.runtime reports it): versions, or what is missing."""
    try:
        pylsl = load()
    except Missing as exc:
        return {"available": False, "detail": exc.problem}
    version = getattr(pylsl, "__version__", None) or getattr(getattr(pylsl, "version", None), "__version__", "?")
    return {"available": True, "pylsl": version, "liblsl": int(pylsl.library_version()),
            "detail": "pylsl {} with liblsl {}".format(version, pylsl.library_version())}
