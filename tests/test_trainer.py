"""The shared trainer: learning happens, the two-phase schedule and stage hooks behave as
docs/protocol.md §3.4 says, and a run killed at any epoch resumes to the identical result."""
import logging
import re

import numpy as np
import pytest
import torch
from conftest import assert_resumes_identically, count_stage_epochs, crash_and_resume
from torch import nn

from lwbench.budget import ParamCount
from lwbench.config import TrainerConfig
from lwbench.data.cards import load_dataset
from lwbench.evaluate import Evaluator
from lwbench.options import resolve
from lwbench.plugin import FIXED, UPDATE, EmbeddingModule, Method, Stage
from lwbench.registry import get_method, register
from lwbench.training.trainer import Trainer


class Recorder(EmbeddingModule):
    """A full table that records what the trainer told it (phases, refresh batches)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.table = nn.Parameter(torch.randn(self.n_entities, 16) * 0.1)
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))
        self.events = []

    def layer0(self):
        return self.table

    def begin_stage(self, stage):
        self.events.append(("stage", stage.name))

    def begin_phase(self, stage, phase):
        self.events.append(("phase", stage.name, phase))

    def after_forward(self, step):
        if step.phase == UPDATE and step.batch == 0:
            self.refreshes += 1
            self.table.mul_(0.999)  # a state change the resume must reproduce

    def diagnostics(self):
        return {"refreshes": int(self.refreshes)}

    def param_count(self):
        return ParamCount(table3=self.table.numel(), float_values=self.table.numel())


@register
class TwoStageDummy(Method):
    name = "test-two-stage"
    budgeted = False
    options = {}

    def stages(self, options):
        return [Stage("warm", early_stopping=False, reported=False, trainer={"max_epochs": 2}),
                Stage("main", two_phase=True)]

    def planned_count(self, options, stats):
        return ParamCount(table3=stats.n_entities * 16, float_values=stats.n_entities * 16)

    def build(self, ctx):
        return Recorder(ctx)


CFG = TrainerConfig(max_epochs=40, eval_every=1, patience_fixed=3, patience_update=2, batch_size=2048,
                    lr=5e-3, layers=2, checkpoint_seconds=0)  # a resume file after every epoch: crashes hit each


def make_trainer(method, data, tmp_path, name, seed=5, config=CFG, show_progress=False):
    return Trainer(method, resolve(method), data, config, seed=seed, device="cpu",
                   work_dir=tmp_path / name, cache_dir=tmp_path / "cache", show_progress=show_progress)


def test_training_runs_without_autograd_anomaly_detection(toy, tmp_path, monkeypatch):
    """Anomaly detection makes every backward many times slower (the official code leaves it on,
    docs/protocol.md §12): it must be off in every epoch, whatever imports or hooks ran before."""
    seen = []
    original = Trainer.train_epoch

    def recording(self, *args, **kwargs):
        seen.append(torch.is_anomaly_enabled())
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "train_epoch", recording)
    make_trainer(TwoStageDummy(), toy, tmp_path, "run", config=CFG.replace(max_epochs=3)).fit()
    assert seen and not any(seen)


def test_two_phase_schedule_and_hooks(toy, tmp_path):
    trainer = make_trainer(TwoStageDummy(), toy, tmp_path, "run")
    result = trainer.fit()
    events = trainer.module.events
    assert events[:2] == [("stage", "warm"), ("phase", "warm", "single")]
    assert ("phase", "main", FIXED) in events and ("phase", "main", UPDATE) in events
    assert set(result.checkpoints) == {"main/fixed", "main/update"}  # the warm stage is not reported
    assert result.reported == "main/update"
    # Refreshes happen once per UPDATE epoch (batch 0) and never in FIXED epochs.
    update_epochs = [h for h in result.history if h.get("phase") == UPDATE and "loss" in h]
    assert int(trainer.module.refreshes) <= len(update_epochs) and len(update_epochs) > 0
    valid_events = [h for h in result.history if "valid" in h and h["stage"] == "main"]
    assert [h["epoch"] % CFG.eval_every for h in valid_events] == [0] * len(valid_events)
    # Patience is counted in evaluations: each phase ends after `patience` evaluations without gain.
    fixed = [h["valid"][CFG.early_stop_metric] for h in valid_events if h["phase"] == FIXED]
    best_at = int(np.argmax(fixed))
    assert len(fixed) - 1 - best_at == CFG.patience_fixed or result.schedule.epoch == CFG.max_epochs


def test_resume_after_a_crash_equals_an_uninterrupted_run(toy, tmp_path, monkeypatch):
    method = TwoStageDummy()
    reference = make_trainer(method, toy, tmp_path, "reference").fit()
    assert_resumes_identically(   # crashes in the warm stage, early in main, in main's UPDATE phase
        reference, lambda name: make_trainer(method, toy, tmp_path, name), (1, 6, 31), monkeypatch)

VALIDATION_LINE = re.compile(r"(?P<run>\S+) seed (?P<seed>\d+): stage (?P<stage>\S+), phase (?P<phase>\S+), "
                             r"epoch (?P<epoch>\d+): loss (?P<loss>\S+), valid (?P<metric>\S+) (?P<value>[\d.]+) "
                             r"\((?P<gain>improved|no gain|best of this phase; below the earlier phase's best "
                             r"[\d.]+)\), (?P<seconds>\S+) s/epoch")


def validation_lines(caplog, level):
    return [VALIDATION_LINE.fullmatch(r.getMessage()) for r in caplog.records
            if r.name.startswith("lwbench.") and r.levelno == level and " valid " in r.getMessage()]


def test_without_a_bar_every_validation_logs_one_line(toy, tmp_path, caplog):
    """Without a terminal the bar is off; each validation then reports epoch, phase, loss, validation value
    and seconds per epoch at INFO, so that a long run is not silent until it ends."""
    caplog.set_level(logging.INFO, logger="lwbench")
    config = CFG.replace(max_epochs=8, eval_every=2, patience_fixed=1, patience_update=1)
    result = make_trainer(TwoStageDummy(), toy, tmp_path, "logged", config=config).fit()
    lines = validation_lines(caplog, logging.INFO)
    validations = [h for h in result.history if "valid" in h]
    assert len(lines) == len(validations) > 2 and all(lines)
    best = {}
    for line, entry in zip(lines, validations):
        earlier = [v for (stage, phase), v in best.items() if stage == entry["stage"] and phase != entry["phase"]]
        trained = [h for h in result.history if "loss" in h and h["stage"] == entry["stage"]
                   and entry["epoch"] - config.eval_every < h["epoch"] <= entry["epoch"]]
        value = entry["valid"][config.early_stop_metric]
        improved = value > best.get((entry["stage"], entry["phase"]), -1.0)
        best[entry["stage"], entry["phase"]] = max(value, best.get((entry["stage"], entry["phase"]), -1.0))
        assert line["run"] == "test-two-stage" and line["seed"] == "5"
        assert (line["stage"], line["phase"], int(line["epoch"])) == (entry["stage"], entry["phase"], entry["epoch"])
        assert line["metric"] == config.early_stop_metric and line["value"] == f"{value:.4f}"
        if not improved:
            assert line["gain"] == "no gain"
        elif earlier and value <= max(earlier):   # the best of its phase, below an earlier phase's best
            assert line["gain"] == f"best of this phase; below the earlier phase's best {max(earlier):.4f}"
        else:
            assert line["gain"] == "improved"
        if trained:   # the loss of the last trained epoch, the mean time of those since the last validation
            assert line["loss"] == f"{trained[-1]['loss']:.4f}"
            assert line["seconds"] == f"{np.mean([h['seconds'] for h in trained]):.2f}"
        else:         # the stage's first validation, before any epoch of it
            assert entry["epoch"] == 0 and line["loss"] == line["seconds"] == "-"
    assert {line["phase"] for line in lines} == {FIXED, UPDATE}


def test_with_a_bar_the_validation_lines_stay_at_info(toy, tmp_path, caplog):
    """With the bar shown the lines are still logged at INFO: the terminal handler writes them above the bar
    (tqdm.write), so the trajectory stays on the terminal (tests/test_cli.py checks it in a pseudo-terminal)."""
    caplog.set_level(logging.DEBUG, logger="lwbench")
    result = make_trainer(get_method("ud"), toy, tmp_path, "bar", config=CFG.replace(max_epochs=2),
                          show_progress=True).fit()
    lines = validation_lines(caplog, logging.INFO)
    # epochs 0 and 1 on schedule (eval_every=1), then the final weights after epoch 2 (docs/protocol.md §3.4)
    assert len(lines) == len([h for h in result.history if "valid" in h]) == 3 and all(lines)


def test_the_first_validation_of_a_phase_below_an_earlier_phase_is_not_called_improved(caplog):
    """Early stopping keeps one best per phase, so UPDATE's first validation is its phase's best even where it
    fell below FIXED's best: the line then says so instead of "(improved)"."""
    from lwbench.training.progress import StageProgress
    caplog.set_level(logging.INFO, logger="lwbench")
    progress = StageProgress("c2f", 1, "coarse", "ndcg@5", 10, 0, show=False)
    progress.validated(FIXED, 0, 0.20, True, best={FIXED: 0.20})
    progress.validated(UPDATE, 5, 0.15, True, best={FIXED: 0.20, UPDATE: 0.15})   # fell at the switch
    progress.validated(UPDATE, 6, 0.25, True, best={FIXED: 0.20, UPDATE: 0.25})   # above every earlier best
    progress.validated(UPDATE, 7, 0.24, False, best={FIXED: 0.20, UPDATE: 0.25})
    progress.close()
    gains = [VALIDATION_LINE.fullmatch(r.getMessage())["gain"] for r in caplog.records]
    assert gains == ["improved", "best of this phase; below the earlier phase's best 0.2000", "improved", "no gain"]


def test_same_seed_same_metrics_different_seed_differs(toy, tmp_path):
    method = get_method("ud")
    config = TrainerConfig(max_epochs=4, eval_every=2, layers=2, batch_size=2048)
    a = make_trainer(method, toy, tmp_path, "a", config=config).fit()
    b = make_trainer(method, toy, tmp_path, "b", config=config).fit()
    c = make_trainer(method, toy, tmp_path, "c", seed=6, config=config).fit()
    assert a.reported_checkpoint.test == b.reported_checkpoint.test
    assert a.reported_checkpoint.test != c.reported_checkpoint.test


def test_ud_learns_on_synthetic_and_beats_random_embeddings(tmp_path):
    data = load_dataset("synthetic").interactions
    method = get_method("ud")
    config = TrainerConfig(max_epochs=8, eval_every=4, layers=3, lr=3e-3)   # learns within 8 epochs
    result = make_trainer(method, data, tmp_path, "ud", seed=2024, config=config).fit()
    trained = result.reported_checkpoint.test["ndcg@20"]
    # Random-embedding baseline: the same architecture scored with untrained N(0, 0.1^2) tables.
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(data.n_users, 128, generator=generator) * 0.1
    items = torch.randn(data.n_items, 128, generator=generator) * 0.1
    random_ndcg = Evaluator(data.train, {"test": data.test}).per_user("test", users, items, None)["ndcg@20"].mean()
    assert trained > 3 * random_ndcg and trained > random_ndcg + 0.1, (trained, random_ndcg)


class SharedFirstStage(TwoStageDummy):
    """A first stage with a fixed seed that all runs share (the C2F coarse-stage pattern)."""

    name = "test-shared"

    def stages(self, options):
        return [Stage("pre", seed=11, shared={"width": 16}, trainer={"max_epochs": 3}),
                Stage("main", start_from_best=True, trainer={"max_epochs": 3})]


register(SharedFirstStage)


def shared_trainer(data, tmp_path, seed, config=CFG):
    method = SharedFirstStage()
    return Trainer(method, {}, data, config, seed=seed, device="cpu", work_dir=tmp_path / f"run{seed}",
                   cache_dir=tmp_path / "cache", show_progress=False)


def test_shared_stage_is_trained_once_and_reused(toy, tmp_path, monkeypatch):
    trained = count_stage_epochs(monkeypatch)
    first = shared_trainer(toy, tmp_path, seed=1).fit()
    second = shared_trainer(toy, tmp_path, seed=2).fit()
    assert [s for s, stage in trained if stage == "pre"] == [1, 1, 1]  # run 2 reused run 1's stage
    assert [s for s, stage in trained if stage == "main"] == [1, 1, 1, 2, 2, 2]
    assert first.checkpoints["pre/single"].test == second.checkpoints["pre/single"].test
    assert first.checkpoints["main/single"].test != second.checkpoints["main/single"].test
    assert first.shared_stages == second.shared_stages and "pre" in first.shared_stages
    # The shared stage does not depend on the run seed: a fresh cache reproduces it under seed 3.
    third = Trainer(SharedFirstStage(), {}, toy, CFG, seed=3, device="cpu", work_dir=tmp_path / "run3",
                    cache_dir=tmp_path / "other-cache", show_progress=False).fit()
    assert third.checkpoints["pre/single"].test == first.checkpoints["pre/single"].test


def test_shared_stage_interrupted_in_one_run_is_continued_by_another(toy, tmp_path, monkeypatch):
    reference = shared_trainer(toy, tmp_path / "ref", seed=1).fit()
    original = Trainer.train_epoch

    def crash_in_second_epoch(self, stage, phase, epoch, cfg):
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return original(self, stage, phase, epoch, cfg)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        shared_trainer(toy, tmp_path, seed=1).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    trained = count_stage_epochs(monkeypatch)
    other = shared_trainer(toy, tmp_path, seed=2).fit()
    assert [e for e in trained if e[1] == "pre"] == [(2, "pre"), (2, "pre")]  # continued from epoch 1
    assert other.checkpoints["pre/single"].test == reference.checkpoints["pre/single"].test


def test_module_is_built_from_the_first_stage_seed_and_a_stage_can_start_without_hand_off(toy, tmp_path):
    """A shared first stage with a fixed seed must not depend on the run seed, and neither may the module's
    initialisation it starts from (e.g. LEGCF/C2F's seeded METIS): ``BuildContext.seed`` is that stage's seed."""
    seen = []

    class SeedRecorder(SharedFirstStage):
        def build(self, ctx):
            seen.append(ctx.seed)
            return super().build(ctx)

    for seed in (1, 2):
        trainer = Trainer(SeedRecorder(), {}, toy, CFG, seed=seed, device="cpu", work_dir=tmp_path / f"r{seed}",
                          cache_dir=tmp_path / "cache", show_progress=False)
        trainer.build()
    assert seen == [11, 11]
    # Benchmarks enter a later stage from the current weights: no previous checkpoint is needed.
    trainer.start_stage(1, hand_off=False)
    assert trainer.module.events[-2:] == [("stage", "main"), ("phase", "main", "single")]
    with pytest.raises(RuntimeError, match="saved no checkpoint"):
        trainer.start_stage(1)


class HandoffRecorder(Recorder):
    """Records the table each stage starts from."""

    def begin_stage(self, stage):
        super().begin_stage(stage)
        self.started = getattr(self, "started", {})
        self.started[stage.name] = self.table.detach().clone()


@register
class UnreportedWarmStart(Method):
    name = "test-unreported-warm-start"
    budgeted = False
    options = {}

    def stages(self, options):
        return [Stage("dense", reported=False, trainer={"max_epochs": 8}),
                Stage("main", start_from_best=True, trainer={"max_epochs": 1})]

    def planned_count(self, options, stats):
        return ParamCount(table3=stats.n_entities * 16, float_values=stats.n_entities * 16)

    def build(self, ctx):
        return HandoffRecorder(ctx)


def test_start_from_best_of_an_unreported_stage(toy, tmp_path):
    """A stage that is not reported (e.g. an over-budget dense pre-training) still hands its best
    checkpoint, not its last weights, to a start_from_best stage."""
    config = TrainerConfig(max_epochs=8, eval_every=1, patience_update=100, batch_size=2048, lr=5e-2, layers=2)
    trainer = make_trainer(UnreportedWarmStart(), toy, tmp_path, "handoff", config=config)
    result = trainer.fit()
    assert set(result.checkpoints) == {"main/single"}
    best = torch.load(tmp_path / "handoff" / "best-dense-single.pt", weights_only=False)
    assert torch.equal(trainer.module.started["main"], best["model"]["embedding.table"])
    last_dense_epoch = max(h["epoch"] for h in result.history if h["stage"] == "dense" and "loss" in h)
    assert best["epoch"] < last_dense_epoch  # the hand-off is the best checkpoint, not the last weights


def test_resume_files_are_time_based_and_a_crash_after_unsaved_epochs_still_resumes_identically(
        toy, tmp_path, monkeypatch):
    """With ``checkpoint_seconds`` longer than the run, a resume file is written only after the first epoch
    of each phase and at stage ends, not after every epoch; a crash several epochs after the last one
    trains those epochs again and ends as the uninterrupted run does."""
    from lwbench.training.persistence import RunFiles
    config = CFG.replace(checkpoint_seconds=3600)
    method = TwoStageDummy()
    writes = []
    original_save = RunFiles.save_resume

    def counting(self, path, schedule, *args, **kwargs):
        writes.append((schedule["stage_index"], schedule["epoch"]))
        return original_save(self, path, schedule, *args, **kwargs)

    monkeypatch.setattr(RunFiles, "save_resume", counting)
    reference = make_trainer(method, toy, tmp_path, "reference", config=config).fit()
    epochs = reference.schedule.epochs_run
    # after warm (stage end), main's first UPDATE epoch, main's end
    assert [stage for stage, _ in writes] == [1, 1, 2] and len(writes) < epochs, (writes, epochs)
    update_start = writes[1][1]
    crash_after = 2 + update_start // 2   # in main's FIXED phase: all of main's epochs so far unsaved
    assert update_start // 2 >= 3
    writes.clear()
    assert_resumes_identically(reference, lambda name: make_trainer(method, toy, tmp_path, name, config=config),
                               (crash_after,), monkeypatch)
    # the crashed run wrote only the file at the end of warm; the next is the resumed run's
    assert writes[:2] == [(1, 0), (1, update_start)]


def test_a_run_resumed_by_other_code_names_both_versions_and_where_the_newer_took_over(
        toy, tmp_path, monkeypatch, caplog):
    """Resuming with other code than the code that wrote the resume file is allowed, but the earlier epochs
    ran the older code: the result keeps both, from where each took over (here after warm's 2 epochs and 4
    of main's), and the resume warns. The same code throughout keeps one entry."""
    from lwbench.training import trainer as trainer_module
    method = TwoStageDummy()
    monkeypatch.setattr(trainer_module, "code_version", lambda: "old")
    reference = make_trainer(method, toy, tmp_path, "reference").fit()
    assert reference.code_versions == [{"code_version": "old", "stage": "warm", "epoch": 0}]
    same = crash_and_resume(lambda name: make_trainer(method, toy, tmp_path, name), "same", 6, monkeypatch)
    assert same.code_versions == reference.code_versions

    versions = iter(["old", "new"])

    def make(name):
        version = next(versions)
        monkeypatch.setattr(trainer_module, "code_version", lambda: version)
        return make_trainer(method, toy, tmp_path, name)

    caplog.set_level(logging.WARNING, logger="lwbench")
    crossed = crash_and_resume(make, "crossed", 6, monkeypatch)
    assert crossed.code_versions == [{"code_version": "old", "stage": "warm", "epoch": 0},
                                     {"code_version": "new", "stage": "main", "epoch": 4}]
    assert any("resuming at stage 'main', epoch 4, with code new; its earlier epochs ran old" in r.getMessage()
               for r in caplog.records)
    assert crossed.reported == reference.reported and crossed.schedule.epochs_run == reference.schedule.epochs_run


def test_a_resume_file_without_code_versions_names_the_earlier_code_unrecorded(toy, tmp_path, monkeypatch):
    """Files written before lwbench kept code versions still resume; the earlier code is then unknown."""
    from lwbench.training import trainer as trainer_module
    from lwbench.training.persistence import RESUME_FILE, atomic_torch_save, torch_load
    method = TwoStageDummy()
    original = Trainer.train_epoch
    calls = {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(method, toy, tmp_path, "old-file").fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    path = tmp_path / "old-file" / RESUME_FILE
    state = torch_load(path)
    del state["code_versions"]
    atomic_torch_save(path, state)
    monkeypatch.setattr(trainer_module, "code_version", lambda: "new")
    resumed = make_trainer(method, toy, tmp_path, "old-file").fit()
    assert resumed.code_versions == [{"code_version": trainer_module.UNRECORDED_CODE, "stage": "warm", "epoch": 0},
                                     {"code_version": "new", "stage": "main", "epoch": 1}]


def test_a_shared_stage_trained_by_other_code_is_named_in_the_reusing_runs_versions(toy, tmp_path, monkeypatch):
    """A run that takes over a shared stage's outcome takes over its code versions, as it takes over its history:
    a stage trained by other code is named, from where this run's code took over (the next stage). Reused by the
    same code, nothing is added."""
    from lwbench.training import trainer as trainer_module
    monkeypatch.setattr(trainer_module, "code_version", lambda: "old")
    first = shared_trainer(toy, tmp_path, seed=1).fit()
    assert first.code_versions == [{"code_version": "old", "stage": "pre", "epoch": 0}]
    assert shared_trainer(toy, tmp_path, seed=2).fit().code_versions == first.code_versions
    monkeypatch.setattr(trainer_module, "code_version", lambda: "new")
    reusing = shared_trainer(toy, tmp_path, seed=3).fit()
    assert reusing.code_versions == [{"code_version": "old", "stage": "pre", "epoch": 0},
                                     {"code_version": "new", "stage": "main", "epoch": 0}]


def test_versions_that_differ_only_in_what_else_they_commit_are_one_code():
    """Two commits of this checkout between which only results or docs changed are the same code; a commit that
    changed the code, a dirty tree, unknown commits and other strings are not."""
    import subprocess

    from lwbench.environment import CODE_PATHS, PACKAGE_DIR, same_code

    def git(*args):
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.split() if done.returncode == 0 else []

    recent = git("log", "--format=%H", "-n", "300")
    code = git("log", "--format=%H", "-n", "300", "--", *CODE_PATHS)
    pairs = [(c, p[0]) for c in recent if (p := git("rev-parse", "--verify", "-q", f"{c}~1"))]
    same = [(c, p) for c, p in pairs if c not in code]
    changed = [(c, p) for c, p in pairs if c in code]
    if not same or not changed:
        pytest.skip("needs a git checkout with history: a commit of results alone and one of code")
    assert same_code(*same[0]) and same_code("old", "old")
    assert not same_code(*changed[0])
    assert not same_code(same[0][0] + "+dirty", same[0][1]) and not same_code("old", "new")
    assert not same_code("0" * 40, same[0][1])
