"""What a person watching sees of a stage's training: a tqdm bar on a terminal, a log line per validation.

Every validation logs one line at INFO: stage, phase, epoch, loss, the validation value and seconds per
epoch. On a terminal the bar is shown too (``leave=False``: it disappears when the stage ends) and the
terminal handler writes the lines through ``tqdm.write`` (:mod:`lwbench.logs`), so they scroll above the
bar and the trajectory stays in the scrollback. Without a terminal (``show=None``: a log file, a batch
job) the bar is off, and the same lines are the progress report.

Early stopping keeps one best checkpoint per phase (docs/protocol.md §3.4), so the first validation of a
later phase (UPDATE after FIXED) is always that phase's best so far, even where it fell below an earlier
phase's best; the line then says ``best of this phase`` with the earlier best beside it, and ``improved``
only where the value is the best of the stage so far.

Where training is (run, stage, epoch) is kept for the message the command line prints on Ctrl-C
(:func:`running`, :func:`where`).
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_position: dict = {}   # the run this process trains: run_id, resume, stage, epoch, max_epochs


@contextlib.contextmanager
def running(run_id: str, resume: str) -> Iterator[None]:
    """Note that this process trains ``run_id`` (whose resume file is ``resume``) for the ``with`` block.
    The note is cleared when the block ends normally and kept when it is interrupted, so that the command
    line can say where (:func:`where`)."""
    _position.clear()
    _position.update(run_id=run_id, resume=resume)
    yield
    _position.clear()


def where() -> dict:
    """The interrupted (or current) run of this process: ``run_id``, ``resume`` (its resume file) and, once a
    stage has started, ``stage``, ``epoch`` (epochs of the stage finished) and ``max_epochs``; empty if none."""
    return dict(_position)


def close_bars() -> None:
    """Close every progress bar still open (after an interrupt), so that the terminal is left clean."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


class StageProgress:
    """Progress of one stage: ``trained`` after every epoch, ``validated`` after every validation."""

    def __init__(self, run: str, seed: int, stage: str, metric: str, total: int, done: int, show: bool | None):
        self.run, self.seed, self.stage, self.metric = run, seed, stage, metric
        self.bar = tqdm(total=total, initial=done, desc=f"{run} s{seed} {stage}", leave=False, dynamic_ncols=True,
                        disable=None if show is None else not show)  # None: on only for a terminal
        self.epoch = done
        self.phase = ""
        self.loss = math.nan              # of the last trained epoch
        self.valid = math.nan             # of the last validation
        self.improved = False
        self.seconds: list[float] = []    # of the epochs trained since the last validation
        if _position:
            _position.update(stage=stage, epoch=done, max_epochs=total)

    def trained(self, phase: str, loss: float, seconds: float) -> None:
        self.phase, self.loss = phase, loss
        self.epoch += 1
        if _position:
            _position["epoch"] = self.epoch
        self.seconds.append(seconds)
        self.bar.update(1)
        self._postfix()

    def validated(self, phase: str, epoch: int, value: float, improved: bool,
                  best: Mapping[str, float] | None = None) -> None:
        """``improved``: the best of ``phase`` so far; ``best``: the best value of each phase of the stage
        (the trainer's, this validation included), to tell a phase's best from the stage's."""
        self.phase, self.valid, self.improved = phase, value, improved
        earlier = max((v for p, v in (best or {}).items() if p != phase), default=None)
        if not improved:
            verdict = "no gain"
        elif earlier is not None and not value > earlier:
            verdict = f"best of this phase; below the earlier phase's best {_number(earlier, 4)}"
        else:
            verdict = "improved"
        logger.info("%s seed %d: stage %s, phase %s, epoch %d: loss %s, valid %s %s (%s), %s s/epoch", self.run,
                    self.seed, self.stage, phase, epoch, _number(self.loss, 4), self.metric, _number(value, 4),
                    verdict, _number(self._seconds_per_epoch(), 2))
        self._postfix()
        self.seconds = []

    def close(self) -> None:
        self.bar.close()

    def _seconds_per_epoch(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else math.nan

    def _postfix(self) -> None:
        self.bar.set_postfix(phase=self.phase, loss=_number(self.loss, 4),
                             valid=_number(self.valid, 4) + ("*" if self.improved else ""),
                             s_per_epoch=_number(self._seconds_per_epoch(), 2))
