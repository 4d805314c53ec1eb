"""Crash-safe files: atomic writes, cached arrays and advisory locks (no torch: records and reports use it).

Every write goes through a temporary file unique to its writer (two processes writing the same file never
share one) that is removed whatever goes wrong; the finished file gets the permissions the user's umask
gives a new file (group-readable under the usual 022/002), not the 0600 of a temporary file. A write that
fails (missing permission, full disk, over-long name) is an :class:`OutputError` naming the path.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class OutputError(OSError):
    """A file or folder of the output cannot be written; the message names the path and the reason."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()   # read once: os.umask can only be read by setting it, which would race with other threads


def output_error(path: Path, exc: OSError) -> OutputError:
    """``exc`` as a one-line :class:`OutputError` naming ``path`` and what to do."""
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; choose another --out, or free space / "
                       "grant write permission there")


def prepare_output(out: Path) -> None:
    """Create the output folder (and missing parents) and check that files can be written in it, so that
    an unusable ``--out`` is one error naming it before anything trains."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out} is a file, not a folder; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(out, exc) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~UMASK)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def cached_array(path: Path | None, compute: Callable[[], np.ndarray],
                 usable: Callable[[np.ndarray], bool] = lambda array: True) -> np.ndarray:
    """``compute()``, stored at ``path`` (``.npy``, written atomically) and loaded from there when it
    exists and is ``usable``; ``path=None`` computes without caching (METIS parts, SparsePCA scores)."""
    if path is not None and Path(path).exists():
        array = np.load(path)
        if usable(array):
            return array
    array = compute()
    if path is not None:
        buffer = io.BytesIO()
        np.save(buffer, array)
        atomic_write_bytes(path, buffer.getvalue())
    return array


def json_default(value: Any) -> Any:
    """What JSON writes for a value it has no type for: a numpy scalar (``np.int64``, ``np.float32``,
    ``np.bool_``) as the Python number or bool it holds, anything else as its text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=json_default) + "\n").encode())


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block; other
    processes asking for it wait. Released by the OS if the process dies."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        raise output_error(path, exc) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
