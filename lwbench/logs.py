"""Logging: every module logs to a child of the ``lwbench`` logger; the command line decides what reaches
the terminal (``--quiet``: warnings, default: progress, ``--verbose``: details), and every run also logs,
with timestamps, to its own file (``<out>/logs/<run_id>.log``) whatever the terminal shows.

Terminal lines go through ``tqdm.write`` so that they never tear a progress bar: they scroll above it, so a
run's trajectory stays on the terminal while its bar is shown.

A run's log file is opened without following a symbolic link (``O_NOFOLLOW``): a link planted at
``<out>/logs/<run_id>.log`` (in a shared results folder, say) would otherwise make the run append to
whatever file it points at. Such a link is refused with a one-line error naming it (:func:`run_log`), before
the run trains; it is neither followed nor removed, since who planted it, and why, is for the user to see."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = "lwbench"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class TerminalHandler(logging.Handler):
    """Writes records to stderr above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm  # imported when a line is written: --help never needs it
            tqdm.write(self.format(record), file=sys.stderr)   # looked up now: callers may redirect it
        except Exception:
            self.handleError(record)


_terminal: TerminalHandler | None = None


def configure(verbosity: int = 0, prog: str = "lwbench") -> None:
    """Show ``lwbench`` log records on the terminal at the level of ``verbosity`` (-1, 0 or 1); the logger
    itself passes everything, so file handlers receive debug lines too. Calling it again replaces the
    terminal handler (commands run in-process, e.g. by tests, do not stack handlers)."""
    global _terminal
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG)
    if _terminal is not None:
        logger.removeHandler(_terminal)
    _terminal = TerminalHandler(LEVELS[max(-1, min(1, verbosity))])
    _terminal.setFormatter(logging.Formatter(f"{prog}: %(message)s" if verbosity < 1 else
                                             f"{prog}: %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(_terminal)


def open_log(path: Path):
    """``path`` opened for appending (created if missing) without following a symbolic link; a link there
    is an :class:`~lwbench.files.OutputError` naming it and where it points."""
    from lwbench.files import OutputError, output_error
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or path.is_symlink():   # EMLINK: FreeBSD's answer
            try:
                target = f" (to {os.readlink(path)})"
            except OSError:
                target = ""
            raise OutputError(f"{path} is a symbolic link{target}; lwbench does not write a run's log through a "
                              "link: remove it, or choose another --out") from None
        raise output_error(path, exc) from None
    return os.fdopen(fd, "a", encoding="utf-8")


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append every ``lwbench`` log record to ``path`` (with timestamps) for the ``with`` block; in a
    worker process nothing else is configured, so this is where its run's progress goes. A symbolic link
    at ``path`` is refused (:func:`open_log`), before the block runs."""
    stream = open_log(path)
    logger = logging.getLogger(ROOT)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        stream.close()
        logger.setLevel(level)


def format_duration(seconds: float) -> str:
    """A duration as a person reads it in a message: seconds below 90 s, minutes below 90 min, else hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
