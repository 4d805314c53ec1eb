"""Two-phase early stopping as a pure object (lwbench.training.schedule), tested without torch: the loop
below asks the plan exactly as the trainer's stage loop does."""
import subprocess
import sys

from lwbench.training.schedule import Schedule, StagePlan


def simulate(plan: StagePlan, value_at) -> tuple[list[tuple], Schedule]:
    """Run a stage's schedule; ``value_at(phase, epoch)`` is the validation value. Returns the events
    (``("valid", phase, epoch, best?)``, ``("enter", phase, epoch)``, ``("train", phase, epoch)``)."""
    schedule, events = Schedule(), []
    while plan.has_epochs_left(schedule):
        if plan.validates(schedule):
            phase = plan.phase(schedule)
            events.append(("valid", phase, schedule.epoch, plan.record(schedule, value_at(phase, schedule.epoch))))
        if plan.leaves_phase(schedule):
            if plan.is_last_phase(schedule):
                break
            events.append(("enter", plan.enter_next_phase(schedule), schedule.epoch))
        events.append(("train", plan.phase(schedule), schedule.epoch + 1))
        plan.trained_epoch(schedule, 1.0)
    return events, schedule


TWO_PHASE = dict(phases=("fixed", "update"), eval_every=1, patience={"fixed": 2, "update": 2})


def test_patience_leaves_fixed_then_stops_in_update():
    plan = StagePlan(max_epochs=100, **TWO_PHASE)
    events, schedule = simulate(plan, lambda phase, epoch: 1.0 if epoch in (0, 3) else 0.5)
    validations = [e for e in events if e[0] == "valid"]
    assert validations[:3] == [("valid", "fixed", 0, True), ("valid", "fixed", 1, False), ("valid", "fixed", 2, False)]
    assert ("enter", "update", 2) in events                       # patience 2 ran out at epoch 2
    assert validations[3:] == [("valid", "update", 3, True), ("valid", "update", 4, False),
                               ("valid", "update", 5, False)]
    assert events[-1] == ("valid", "update", 5, False) and schedule.epoch == 5   # stopped without training on
    assert schedule.best == {"fixed": 1.0, "update": 1.0} and schedule.best_epoch == {"fixed": 0, "update": 3}


def test_an_epoch_cap_leaves_each_later_phase_one_epoch():
    plan = StagePlan(max_epochs=2, **{**TWO_PHASE, "patience": {"fixed": 10, "update": 10}})
    events, schedule = simulate(plan, lambda phase, epoch: float(epoch))
    assert events == [("valid", "fixed", 0, True), ("train", "fixed", 1), ("valid", "fixed", 1, True),
                      ("enter", "update", 1), ("train", "update", 2)]
    assert schedule.epoch == 2   # the trainer validates the final weights after the loop


def test_validation_follows_the_cadence_from_epoch_zero():
    plan = StagePlan(phases=("single",), max_epochs=12, eval_every=5, patience={"single": 5})
    events, _ = simulate(plan, lambda phase, epoch: float(epoch))
    assert [e[2] for e in events if e[0] == "valid"] == [0, 5, 10]
    assert [e[2] for e in events if e[0] == "train"] == list(range(1, 13))


def test_a_stage_without_early_stopping_trains_every_epoch_and_never_validates():
    plan = StagePlan(phases=("single",), max_epochs=4, eval_every=1, patience={"single": 1}, early_stopping=False)
    events, schedule = simulate(plan, lambda phase, epoch: 0.0)
    assert [e[0] for e in events] == ["train"] * 4 and schedule.epochs_run == 4


def test_ties_are_not_improvements():
    plan = StagePlan(phases=("single",), max_epochs=10, eval_every=1, patience={"single": 3})
    events, schedule = simulate(plan, lambda phase, epoch: 0.5)
    assert [e[3] for e in events if e[0] == "valid"] == [True, False, False, False]
    assert schedule.best_epoch == {"single": 0}


def test_the_schedule_needs_no_torch():
    code = "import sys, lwbench.training.schedule; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
