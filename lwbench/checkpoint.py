"""Crash-safe files, cached arrays and RNG state capture, for resumable runs and atomic records."""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


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


def atomic_torch_save(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


def torch_load(path: Path) -> Any:
    """Load a checkpoint this package wrote (it contains numpy/pandas objects, hence weights_only=False)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
