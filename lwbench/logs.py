"""Logging: every module logs to a child of the ``lwbench`` logger; the command line decides what reaches
the terminal (``--quiet``: warnings, default: progress, ``--verbose``: details), and every run also logs,
with timestamps, to its own file (``<out>/logs/<run_id>.log``) whatever the terminal shows.

Terminal lines go through ``tqdm.write`` so that they never tear a progress bar."""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

ROOT = "lwbench"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class TerminalHandler(logging.Handler):
    """Writes records to stderr above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)   # looked up now: callers may redirect it
        except Exception:  # noqa: BLE001 (logging must never raise into the caller)
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


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append every ``lwbench`` log record to ``path`` (with timestamps) for the ``with`` block; in a
    worker process nothing else is configured, so this is where its run's progress goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(ROOT)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)
