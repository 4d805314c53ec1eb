"""What a run record says about the code, libraries and hardware it ran on."""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
CODE_PATHS = ("lwbench", "run_bench.py", "pyproject.toml")   # what runs; results written into a checkout are not code
_LIBRARIES = ("lwbench", "torch", "numpy", "scipy", "pandas", "scikit-learn", "pymetis", "joblib")


class DeviceError(RuntimeError):
    """The device asked for does not exist here."""


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_KEEP_BYTES = 1 << 30
_MMAP_ABOVE_BYTES = 32 << 20      # glibc's largest mmap threshold on 64-bit


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory in the process instead of returning it to the system.

    A training step allocates and frees the same few megabyte-sized CPU tensors (gradients, gathered rows,
    sparse products) dozens of times; by default each comes from fresh pages, and first touching them costs
    page faults: a tenth of a small CPU step's time (synthetic UD: 3x fewer page faults, ~10% fewer CPU
    seconds). Memory then stays at its peak until the process ends, which a training process reaches anyway.
    Returns whether it applied (glibc only; elsewhere the allocator is left alone)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):   # not glibc (macOS: no mallopt; Windows: no CDLL(None))
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_ABOVE_BYTES) and mallopt(_M_TRIM_THRESHOLD, _HEAP_KEEP_BYTES))


DEVICE_FORMS = "auto, cpu, cuda or cuda:N (e.g. cuda:1)"


def resolve_device(name: str) -> torch.device:
    """``auto`` means the first CUDA GPU when one is visible, else the CPU. An explicit CUDA device
    that is not available is an error, never a silent fallback; so is anything but the forms of
    :data:`DEVICE_FORMS` (``tpu``, ``""``, ``cuda:x``, torch's other device types, which the trainer does
    not support), as a :class:`DeviceError` that lists them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise DeviceError(f"--device {name!r} is not a device lwbench can use; expected {DEVICE_FORMS}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA GPU is visible to torch {torch.__version__} "
                           "(use --device cpu, or install a CUDA build of torch)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0")
    return device


@functools.cache
def code_version() -> str:
    """The commit of the checkout the package is imported from (``+dirty`` with uncommitted changes to the
    code, not to results written into the checkout), or, for an installed copy outside any checkout of
    lwbench, ``lwbench <version> (installed)``. Fixed at the first call, so a long job's records name the
    code it started with, even if the checkout changes while it runs."""
    try:
        top = subprocess.run(["git", "-C", str(PACKAGE_DIR), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        if Path(top).resolve() == PACKAGE_DIR.parent:   # this package's own checkout, not a repo it sits in
            commit = subprocess.run(["git", "-C", top, "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no", "--",
                                    *CODE_PATHS], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"lwbench {version('lwbench')} (installed)"
    except PackageNotFoundError:
        return "unknown (neither a git checkout nor an installed package)"


COMMIT = re.compile(r"[0-9a-f]{40}")


def same_code(first: str, second: str) -> bool:
    """Whether two :func:`code_version` strings name the same code: equal, or two clean commits of this checkout
    whose code (:data:`CODE_PATHS`) does not differ, e.g. when only results or docs were committed between
    them. Anything else (a dirty tree, an installed copy, a commit this checkout lacks) counts as different."""
    if first == second:
        return True
    if not (COMMIT.fullmatch(first) and COMMIT.fullmatch(second)):
        return False
    try:
        diff = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), "diff", "--quiet", first, second, "--",
                               *CODE_PATHS], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return diff.returncode == 0


def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["torch_cuda"] = torch.version.cuda or "none"
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {_cpu_model()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
