"""The output folder of ``lwbench prepare``: claimed while the command runs, published whole or not at all.

The folder is written under a temporary name ``.<name>.prepare-<pid>-<ns>`` beside ``out``, holding an
advisory lock while the command lives (:func:`claimed_folder`); once ``prepare`` has written it and verified
it by loading it with every check of :func:`~lwbench.data.interactions.build_interactions`, it is renamed to
``out`` (:func:`publish`): a failed preparation leaves nothing behind, a second command on the same ``out``
is refused while the first runs, and the temporary folder of a killed command (its lock released by the OS)
is removed by the next ``prepare`` on that ``out``.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import shutil
import time
from pathlib import Path

from lwbench.data.cards import PREPARE_TMP
from lwbench.data.interactions import DataError
from lwbench.files import output_error

logger = logging.getLogger(__name__)

LOCK_FILE = ".prepare.lock"       # inside the temporary folder, locked while its command runs
STARTING_SECONDS = 10             # an unlocked temporary folder this young, of a live pid, is still starting


@contextlib.contextmanager
def claimed_folder(out: Path):
    """A new temporary folder beside ``out`` holding a locked file while this command runs; removed on any
    failure. Refuses an existing ``out`` and an ``out`` that another live command started preparing first;
    removes the temporary folders of killed commands."""
    if out.exists() or out.is_symlink():
        raise DataError(f"{out}: already exists; prepare writes a new folder (choose another --out or remove it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.prepare-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()    # it becomes ``out``: mkdir gives it the permissions of a new folder (the umask's)
    except OSError as exc:
        raise output_error(out, exc) from None
    lock = None
    try:
        try:
            lock = open(tmp / LOCK_FILE, "w")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a new file: never blocks
        except OSError as exc:
            raise output_error(out, exc) from None
        _check_others(out, tmp)
        yield tmp
    finally:
        if lock is not None:
            lock.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _stamp(folder: Path) -> tuple[int, int]:
    match = PREPARE_TMP.match(folder.name)
    return int(match["stamp"]), int(match["pid"])


def _check_others(out: Path, mine: Path) -> None:
    """Other temporary folders of ``out``: a live one that started before this command is an error (the later
    command loses); one whose command is gone is removed."""
    pattern = glob.escape(str(out.parent / f".{out.name}.prepare-")) + "*"
    for other in sorted(Path(p) for p in glob.glob(pattern)):
        match = PREPARE_TMP.match(other.name)
        if other == mine or match is None or match["name"] != out.name or not other.is_dir():
            continue
        if _is_live(other, int(match["pid"])):
            if _stamp(other) < _stamp(mine):
                raise DataError(f"{out}: is being prepared by another command (pid {match['pid']}, temporary folder "
                                f"{other.name}); wait for it to finish, or choose another --out")
        else:
            shutil.rmtree(other, ignore_errors=True)
            logger.warning("removed %s, the temporary folder of a prepare of %s that was killed", other, out)


def _is_live(folder: Path, pid: int) -> bool:
    """Whether the command that made a temporary folder still runs: its lock is held (released by the OS when
    a process dies, whatever kills it). Without a lock file (being created, or removed by :func:`publish` just
    before the rename, which makes the folder's mtime new) or unlocked, only a folder seconds old may still be
    starting or publishing, and then its pid decides; an older one is a killed command's, even where its pid now
    belongs to another process (pids are reused)."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return _starting(folder, pid)
    except OSError:
        return True                       # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return _starting(folder, pid)


def _starting(folder: Path, pid: int) -> bool:
    """A folder younger than :data:`STARTING_SECONDS` whose pid runs: its command may not have locked it yet."""
    try:
        young = time.time() - folder.stat().st_mtime < STARTING_SECONDS
    except OSError:
        return False
    return young and _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished temporary folder to ``out`` (never over an ``out`` that appeared meanwhile)."""
    os.unlink(tmp / LOCK_FILE)
    taken = DataError(f"{out}: already exists (another command prepared it meanwhile); this preparation is "
                      "discarded: choose another --out, or remove it and run again")
    if out.exists() or out.is_symlink():
        raise taken
    try:
        os.rename(tmp, out)
    except OSError as exc:
        if out.exists():
            raise taken from None
        raise output_error(out, exc) from None
