"""Where a stage's training stands and what it does next: two-phase early stopping as a small pure object
(docs/protocol.md §3.4), so the trainer's loop reads "ask the schedule, validate if told, train an epoch".

:class:`Schedule` is the position (saved in every resume file). :class:`StagePlan` holds one stage's rules
(phases, epoch cap, validation cadence, patience) and answers, from a position alone:

* :meth:`StagePlan.validates`: validate before the next epoch (every ``eval_every`` epochs from epoch 0,
  and whenever the phase is about to be left because the cap leaves only one epoch per later phase);
* :meth:`StagePlan.record`: a validation value was measured; is it the phase's best so far?
* :meth:`StagePlan.leaves_phase` / :meth:`StagePlan.is_last_phase`: patience ran out (or the cap cut the
  phase short); the stage stops in its last phase, otherwise :meth:`StagePlan.enter_next_phase`.

Nothing here imports torch: the rules are tested on their own (tests/test_schedule.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Schedule:
    """Where training stands; saved in every resume checkpoint."""

    stage_index: int = 0
    epoch: int = 0                                   # epochs finished in the current stage
    phase_index: int = 0
    bad_evals: int = 0
    best: dict = field(default_factory=dict)         # phase -> best validation value
    best_epoch: dict = field(default_factory=dict)   # phase -> epoch of that value
    epochs_run: int = 0                              # over all stages
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


@dataclass(frozen=True)
class StagePlan:
    """One stage's early-stopping rules (patience counted in validations, docs/protocol.md §3.4)."""

    phases: tuple[str, ...]
    max_epochs: int
    eval_every: int
    patience: dict            # phase -> validations without improvement before the phase is left
    early_stopping: bool = True

    def phase(self, schedule: Schedule) -> str:
        return self.phases[schedule.phase_index]

    def has_epochs_left(self, schedule: Schedule) -> bool:
        return schedule.epoch < self.max_epochs

    def cut_short(self, schedule: Schedule) -> bool:
        """The cap leaves only one epoch per later phase: the phase is left now (validated), so that a short
        run (``--epochs 2``) still trains every phase."""
        later_phases = len(self.phases) - 1 - schedule.phase_index
        return 0 < self.max_epochs - schedule.epoch <= later_phases

    def validates(self, schedule: Schedule) -> bool:
        """Validate before the next epoch: on the cadence from epoch 0, and before a phase is cut short."""
        return self.early_stopping and (schedule.epoch % self.eval_every == 0 or self.cut_short(schedule))

    def record(self, schedule: Schedule, value: float) -> bool:
        """Take a validation value of the current phase; True when it is the phase's best so far (the
        caller then saves that checkpoint). Patience counts the validations since the last best."""
        phase = self.phase(schedule)
        best = schedule.best.get(phase)
        if best is None or value > best:
            schedule.best[phase] = value
            schedule.best_epoch[phase] = schedule.epoch
            schedule.bad_evals = 0
            return True
        schedule.bad_evals += 1
        return False

    def leaves_phase(self, schedule: Schedule) -> bool:
        """Patience ran out, or the cap cuts the phase short."""
        return self.cut_short(schedule) or (self.early_stopping
                                            and schedule.bad_evals >= self.patience[self.phase(schedule)])

    def is_last_phase(self, schedule: Schedule) -> bool:
        return schedule.phase_index == len(self.phases) - 1

    def enter_next_phase(self, schedule: Schedule) -> str:
        """Move to the next phase from the current weights (its patience starts afresh); returns its name."""
        schedule.phase_index += 1
        schedule.bad_evals = 0
        return self.phase(schedule)

    def trained_epoch(self, schedule: Schedule, seconds: float) -> None:
        schedule.epoch += 1
        schedule.epochs_run += 1
        schedule.train_seconds += seconds
