"""Crash-safe files: atomic writes, cached arrays and advisory locks (no torch: records and reports use it)."""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block; other
    processes asking for it wait. Released by the OS if the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
