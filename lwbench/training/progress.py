"""What a person watching sees of a stage's training: a tqdm bar on a terminal, a log line per validation.

Without a terminal the bar is off (``show=None``), and a long run would print nothing between its start
and its end; the line each validation logs at INFO is then its progress report. With the bar shown,
the same numbers sit in the bar's postfix and the line goes to DEBUG, for a log file rather than the
terminal the bar already occupies.
"""
from __future__ import annotations

import logging
import math

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


class StageProgress:
    """Progress of one stage: ``trained`` after every epoch, ``validated`` after every validation."""

    def __init__(self, run: str, seed: int, stage: str, metric: str, total: int, done: int, show: bool | None):
        self.run, self.seed, self.stage, self.metric = run, seed, stage, metric
        self.bar = tqdm(total=total, initial=done, desc=f"{run} s{seed} {stage}", leave=False, dynamic_ncols=True,
                        disable=None if show is None else not show)  # None: on only for a terminal
        self.level = logging.INFO if self.bar.disable else logging.DEBUG
        self.phase = ""
        self.loss = math.nan              # of the last trained epoch
        self.valid = math.nan             # of the last validation
        self.improved = False
        self.seconds: list[float] = []    # of the epochs trained since the last validation

    def trained(self, phase: str, loss: float, seconds: float) -> None:
        self.phase, self.loss = phase, loss
        self.seconds.append(seconds)
        self.bar.update(1)
        self._postfix()

    def validated(self, phase: str, epoch: int, value: float, improved: bool) -> None:
        self.phase, self.valid, self.improved = phase, value, improved
        logger.log(self.level, "%s seed %d: stage %s, phase %s, epoch %d: loss %s, valid %s %s (%s), "
                   "%s s/epoch", self.run, self.seed, self.stage, phase, epoch, _number(self.loss, 4), self.metric,
                   _number(value, 4), "improved" if improved else "no gain", _number(self._seconds_per_epoch(), 2))
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
