"""The shared LightGCN/BPR trainer (docs/protocol.md §3): stages, two-phase early stopping, checkpoints, resume.

One loop serves every method. A method shapes training only through its :class:`~lwbench.plugin.Stage`
list and its module's hooks, never through its name.

Schedule per stage (docs/protocol.md §3.4; the rules are :class:`lwbench.training.schedule.StagePlan`), with
patience counted in evaluations::

    for epoch in range(max_epochs):
        if epoch % eval_every == 0: validate; improvement -> save best[phase]; else bad += 1
        if bad == patience(phase): last phase -> stop; else next phase (from the current weights)
        train one epoch
    validate the final weights unless the loop just did (so no trained epoch goes unscored)

A stage whose ``max_epochs`` would end it before its later phases leaves each earlier phase (validated)
as soon as only one epoch per later phase remains, so that a short run (``--epochs 2``) still trains
every phase and hands the next stage the checkpoint of its last phase.

A run can be killed at any moment: the resume file (model, optimizer, RNG streams, schedule, results of
finished stages) is written after an epoch once ``checkpoint_seconds`` have passed since the last one,
after the first epoch of every phase but a stage's first (never at a phase switch itself), and after
every stage, and a new :class:`Trainer` on the same work folder continues from it and ends with the
same result as an uninterrupted run (the epochs since the last file are trained again, identically). What
those files hold and where they live is :mod:`lwbench.training.persistence`.

A run that diverges (non-finite loss, a loss grown :data:`DIVERGED_LOSS_FACTOR` fold over the stage's
first epoch, or every later validation :data:`DIVERGED_VALID_FACTOR` fold below the stage's epoch-0 value
after at least a full patience window of trained epochs) fails with :class:`DivergedError` instead of
recording a degenerate model. Validation is not judged sooner: propagating an untrained table through
the graph can already rank well at epoch 0, and the first epochs may dip below that before they learn,
so a run cut short by ``--epochs`` reports its best checkpoint as usual. A loss that rises
:data:`LOSS_RISE_WARN_FACTOR` fold above the stage's first epoch (too high a learning rate, short of
divergence) is a warning, logged once and kept in the record (:func:`loss_warnings`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from lwbench.budget import ParamCount
from lwbench.config import TrainerConfig
from lwbench.data.interactions import Interactions
from lwbench.environment import code_version, same_code
from lwbench.evaluate import Evaluator
from lwbench.kernels.graph import normalized_adjacency
from lwbench.plugin import BuildContext, Method, Stage, Step, check_planned_count, plan_count
from lwbench.training.model import Recommender
from lwbench.training.persistence import (
    RunFiles,
    Saved,
    plain,
    seed_everything,
    shared_stage_dirs,
    stage_config,
    stage_seed,
)
from lwbench.training.progress import StageProgress
from lwbench.training.sampler import BPRSampler
from lwbench.training.schedule import Schedule, StagePlan

logger = logging.getLogger(__name__)

DIVERGED_LOSS_FACTOR = 1e3    # a stage's loss this many times its first epoch's: diverged
DIVERGED_VALID_FACTOR = 10.0  # a stage's last validation this many times below its first: diverged
LOSS_RISE_WARN_FACTOR = 1.5   # a stage's loss this many times its first epoch's: warned (runs here peak at 1.08)
UNRECORDED_CODE = "unrecorded (a resume file from before lwbench kept code versions)"


def stage_losses(history: list[dict], stage: str) -> list[float]:
    return [h["loss"] for h in history if h["stage"] == stage and h.get("loss") is not None]


def loss_warnings(history: list[dict]) -> list[str]:
    """One warning per stage whose training loss rose :data:`LOSS_RISE_WARN_FACTOR` fold above its first
    epoch's (read from the history, so that a resumed run reports the same)."""
    warnings = []
    for stage in dict.fromkeys(h["stage"] for h in history):
        losses = stage_losses(history, stage)
        if losses and losses[0] > 0 and max(losses) > LOSS_RISE_WARN_FACTOR * losses[0]:
            peak = max(range(len(losses)), key=losses.__getitem__)
            warnings.append(f"stage {stage!r}: training loss rose from {losses[0]:.4g} (first epoch) to "
                            f"{losses[peak]:.4g} (epoch {peak + 1}); the learning rate may be too high")
    return warnings


def code_version_warnings(code_versions: list[dict]) -> list[str]:
    """One warning when more than one code version trained the run (see :meth:`Trainer._code_versions`)."""
    if len(code_versions) < 2:
        return []
    parts = "; then ".join(f"{v['code_version']} from stage {v['stage']!r} epoch {v['epoch']}" for v in code_versions)
    return [f"resumed with other code: trained by {parts}. Rerun in a fresh --out for a run of one code version"]


class DivergedError(FloatingPointError):
    """Training diverged; the message says where and which setting to change."""


@dataclass
class CheckpointResult:
    """Validation and test metrics of one best checkpoint (one stage and phase)."""

    name: str
    epoch: int
    valid: dict
    test: dict
    test_per_user: pd.DataFrame

    def to_state(self) -> dict:
        """As plain data and tensors, for a resume file (no pickled DataFrame; docs/protocol.md §3.5)."""
        frame = self.test_per_user
        return {"name": self.name, "epoch": self.epoch, "valid": plain(self.valid), "test": plain(self.test),
                "users": torch.tensor(frame.index.to_numpy()), "index_name": frame.index.name,
                "values": torch.tensor(frame.to_numpy()), "columns": list(frame.columns)}

    @classmethod
    def from_state(cls, state: dict) -> CheckpointResult:
        frame = pd.DataFrame(state["values"].numpy(), columns=state["columns"],
                             index=pd.Index(state["users"].numpy(), name=state["index_name"]))
        return cls(name=state["name"], epoch=state["epoch"], valid=state["valid"], test=state["test"],
                   test_per_user=frame)


@dataclass
class TrainResult:
    checkpoints: dict[str, CheckpointResult]
    reported: str
    schedule: Schedule
    history: list
    param_count: ParamCount
    peak_memory_bytes: int
    diagnostics: dict
    shared_stages: dict  # stage name -> folder of its shared outcome
    code_versions: list  # Trainer.code_versions: more than one entry when a resume crossed a code change

    @property
    def reported_checkpoint(self) -> CheckpointResult:
        return self.checkpoints[self.reported]


class Trainer:
    def __init__(self, method: Method, options: dict, interactions: Interactions, config: TrainerConfig, *,
                 seed: int, device: torch.device | str, work_dir: Path, cache_dir: Path,
                 label: str = "", show_progress: bool | None = None):
        self.method = method
        self.options = options
        self.data = interactions
        self.config = config
        self.seed = seed
        self.device = torch.device(device)
        self.work_dir = Path(work_dir)
        self.cache_dir = Path(cache_dir)
        self.label = label or method.name
        self.show_progress = show_progress
        self.stages = method.stages(options)
        self.history: list[dict] = []
        self.results: dict[str, CheckpointResult] = {}
        # Which code trained which part of the run: {"code_version", "stage", "epoch"} from where each took
        # over. One entry unless the run was resumed by other code than the code that wrote its resume file.
        self.code_versions: list[dict] = []

    # --- set-up ----------------------------------------------------------------------------------
    def build(self) -> None:
        """Seed everything, then build graph, module, sampler and evaluator (called by :meth:`fit`)."""
        shared_dirs = shared_stage_dirs(self.cache_dir, self.method.name, self.stages, self.config, self.seed,
                                        self.data.digest())
        seed_everything(self.stage_seed(0))
        if self.config.deterministic:
            # cuBLAS reads this when its first handle is created; without it, matmuls may differ run to run.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        graph = normalized_adjacency(self.data.train, self.device)
        ctx = BuildContext(interactions=self.data, graph=graph, device=self.device, options=self.options,
                           seed=self.stage_seed(0), cache_dir=self.cache_dir)
        self.module = self.method.build(ctx)
        check_planned_count(self.method, plan_count(self.method, self.options, self.data.stats()), self.module)
        self.model = Recommender(self.module, self.config.layers, self.config.item_bias, self.device)
        self.sampler = BPRSampler(self.data.train, self.config.n_negatives, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.stage_seed(0))
        self.evaluator = Evaluator(self.data.train, {"valid": self.data.valid, "test": self.data.test},
                                   self.config.ks, self.device, self.config.eval_chunk_elements)
        self.files = RunFiles(self.work_dir, self.stages, shared_dirs, self.model, self.module, self.generator,
                              self.device, name=f"{self.label} seed {self.seed}")

    def stage_seed(self, index: int) -> int:
        return stage_seed(self.stages, index, self.seed)

    def stage_config(self, stage: Stage) -> TrainerConfig:
        return stage_config(self.config, stage)

    # --- main loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.build()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        saved = self.files.load_resume(self.files.resume_path)
        self.code_versions = self._code_versions(saved)
        schedule, resume = self._continue(saved, Schedule())
        for index in range(schedule.stage_index, len(self.stages)):
            if index in self.files.shared_dirs and resume is None:
                schedule = self._run_shared_stage(index, schedule)
            else:
                schedule = self._run_own_stage(index, schedule, resume, self.files.resume_path)
            resume = None
        reported = self._reported_name()
        self.files.load_best(*reported.split("/"))
        return TrainResult(checkpoints=self.results, reported=reported, schedule=schedule, history=self.history,
                           param_count=self.module.param_count(), peak_memory_bytes=self._peak_memory(),
                           diagnostics=self.module.diagnostics(),
                           shared_stages={self.stages[i].name: d.name for i, d in self.files.shared_dirs.items()},
                           code_versions=self.code_versions)

    def _code_versions(self, saved: Saved | None, shared: bool = False) -> list[dict]:
        """The run's code versions, continuing those of ``saved``: its resume file, or with ``shared`` the
        outcome or progress file of a shared stage it takes over (whose history it takes over too). Resuming
        with other code than the code that wrote the file is allowed (a fix to one method need not restart every
        run of a long grid), but the epochs before that point ran the older code, so the run says so: a warning
        now, and both versions in the record. Versions that differ only in what they commit besides the code
        count as one (:func:`~lwbench.environment.same_code`). An own resume file from before lwbench kept versions
        names the earlier code :data:`UNRECORDED_CODE`; a shared stage's outcome from then is taken as it is
        (reusing it is the designed cache of shared stages)."""
        current = code_version()
        if saved is None:
            return self.code_versions if shared else [{"code_version": current, "stage": self.stages[0].name, "epoch": 0}]
        earlier = saved.code_versions
        if earlier is None:
            if shared:
                return self.code_versions
            earlier = [{"code_version": UNRECORDED_CODE, "stage": self.stages[0].name, "epoch": 0}]
        if same_code(earlier[-1]["code_version"], current):
            return earlier
        index, epoch = saved.schedule["stage_index"], saved.schedule["epoch"]
        stage = self.stages[index].name if index < len(self.stages) else "(evaluation only)"
        logger.warning("%s seed %d: resuming at stage %r, epoch %d, with code %s; its earlier epochs ran %s "
                       "(both are kept in the record's code_versions)", self.label, self.seed, stage, epoch,
                       current, earlier[-1]["code_version"])
        return earlier + [{"code_version": current, "stage": stage, "epoch": epoch}]

    def _continue(self, saved: Saved | None, schedule: Schedule) -> tuple[Schedule, dict | None]:
        """Take over a loaded resume file's position and records (``schedule`` if there is none); returns
        the schedule and, if the file was written inside a stage, the state :meth:`_restore` applies."""
        if saved is None:
            return schedule, None
        self.history = saved.history
        self.results = {name: CheckpointResult.from_state(state) for name, state in saved.results.items()}
        return Schedule(**saved.schedule), saved.inside_stage

    def _run_own_stage(self, index: int, schedule: Schedule, resume: dict | None, resume_path: Path) -> Schedule:
        if resume is None:
            schedule = dataclasses.replace(schedule, stage_index=index, epoch=0, phase_index=0, bad_evals=0,
                                           best={}, best_epoch={})
            self.start_stage(index)
        self._run_stage(self.stages[index], schedule, resume, resume_path)
        self._finish_stage(index, schedule)
        schedule = dataclasses.replace(schedule, stage_index=index + 1, epoch=0, phase_index=0, bad_evals=0,
                                       best={}, best_epoch={})
        self._save_resume(resume_path, schedule, inside_stage=False)
        return schedule

    def _run_shared_stage(self, index: int, schedule: Schedule) -> Schedule:
        """Train a shared stage once for all runs with the same stage key (continuing where an interrupted
        run left it), or take the outcome an earlier run left."""
        with self.files.shared_stage(index) as (saved, progress):
            self.code_versions = self._code_versions(saved, shared=True)
            schedule, resume = self._continue(saved, schedule)
            if progress is not None:
                schedule = self._run_own_stage(index, schedule, resume, progress)
        self._save_resume(self.files.resume_path, schedule, inside_stage=False)
        return schedule

    def start_stage(self, index: int, hand_off: bool = True) -> None:
        """Enter stage ``index``: hand-off checkpoint, start hooks, a fresh optimizer.

        ``hand_off=False`` enters the stage from the current weights even if it starts from the previous
        stage's best checkpoint (for benchmarks that time a later stage without training earlier ones)."""
        stage = self.stages[index]
        if stage.start_from_best and index > 0 and hand_off:
            self.files.load_hand_off(index - 1, self.config.allow_handoff_fallback)
        if index > 0:
            # Each stage draws from its own seed, so its outcome does not depend on how many random
            # numbers earlier stages consumed (and a shared stage is the same in every run).
            seed_everything(self.stage_seed(index))
            self.generator.manual_seed(self.stage_seed(index))
        self.model.n_layers = self.stage_config(stage).layers
        self.module.begin_stage(stage)
        self.module.begin_phase(stage, stage.phases[0])
        self.optimizer = self._make_optimizer(stage)

    def _make_optimizer(self, stage: Stage) -> torch.optim.Adam:
        """Adam as docs/protocol.md §3.2 (betas 0.9/0.999, eps 1e-8, no weight decay unless a group sets it);
        the fused kernel on CUDA, where it is the fastest exact implementation."""
        return torch.optim.Adam(self.model.param_groups(stage), lr=self.stage_config(stage).lr,
                                fused=self.device.type == "cuda")

    def _run_stage(self, stage: Stage, schedule: Schedule, resume: dict | None, resume_path: Path) -> None:
        cfg = self.stage_config(stage)
        if resume is not None:
            self._restore(stage, schedule, resume)
        progress = StageProgress(self.label, self.seed, stage.name, self.config.early_stop_metric, cfg.max_epochs,
                                 schedule.epoch, self.show_progress)
        plan = StagePlan(stage.phases, cfg.max_epochs, cfg.eval_every,
                         {phase: cfg.patience(phase) for phase in stage.phases}, stage.early_stopping)
        saved_at = time.monotonic()
        patience_ran_out = False   # then the current weights were just validated
        while plan.has_epochs_left(schedule):
            phase, new_phase, cut_short = plan.phase(schedule), False, plan.cut_short(schedule)
            if plan.validates(schedule):
                progress.validated(phase, schedule.epoch, *self._validate_and_track(stage, plan, schedule),
                                   best=schedule.best)
            if cut_short:
                logger.warning("%s: stage %r leaves its %s phase at epoch %d because only %d of its %d epochs "
                               "remain for its later phases (trainer.max_epochs / --epochs)", self.label,
                               stage.name, phase, schedule.epoch, cfg.max_epochs - schedule.epoch, cfg.max_epochs)
            if plan.leaves_phase(schedule):
                if plan.is_last_phase(schedule):
                    patience_ran_out = True
                    break
                phase, new_phase = plan.enter_next_phase(schedule), True
                self.module.begin_phase(stage, phase)
            started = time.perf_counter()
            loss, stop = self.train_epoch(stage, phase, schedule.epoch, cfg)
            seconds = time.perf_counter() - started
            plan.trained_epoch(schedule, seconds)
            stop = self.module.end_epoch(stage, schedule.epoch) or stop
            self.history.append({"stage": stage.name, "phase": phase, "epoch": schedule.epoch, "loss": loss,
                                 "seconds": seconds})
            progress.trained(phase, loss, seconds)
            self._check_loss(stage, schedule.epoch)
            if stop:
                break
            # Saved after an epoch, never at the phase switch itself: a file written there would validate
            # the switch epoch a second time on resume. The first epoch of a phase stands for its start.
            if new_phase or time.monotonic() - saved_at >= cfg.checkpoint_seconds:
                self._save_resume(resume_path, schedule, inside_stage=True)
                saved_at = time.monotonic()
        if stage.early_stopping and not patience_ran_out:
            # The epochs after the last scheduled validation could have improved on it (docs/protocol.md §3.4).
            progress.validated(plan.phase(schedule), schedule.epoch, *self._validate_and_track(stage, plan, schedule),
                               best=schedule.best)
        if stage.early_stopping:
            self._check_validation(stage)
        progress.close()
        self.module.end_stage(stage)
        if not stage.early_stopping:
            self.files.save_best(stage.name, stage.phases[-1], schedule.epoch)
            schedule.best_epoch[stage.phases[-1]] = schedule.epoch

    def train_epoch(self, stage: Stage, phase: str, epoch: int, cfg: TrainerConfig) -> tuple[float, bool]:
        """One epoch of BPR on freshly sampled triplets; returns (mean loss, whether a hook ended the stage)."""
        self.model.train()
        users, positives, negatives = self.sampler.epoch(self.generator)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        total = torch.zeros((), device=self.device)
        n_batches = 0
        stop = False
        for batch, start in enumerate(range(0, len(users), cfg.batch_size)):
            u = users[start:start + cfg.batch_size]
            p = positives[start:start + cfg.batch_size]
            n = negatives[start:start + cfg.batch_size]
            x0, propagated = self.model()
            step = Step(stage=stage, phase=phase, epoch=epoch, batch=batch, x0=x0, propagated=propagated,
                        users=u, positives=p, negatives=n)
            with torch.no_grad():
                self.module.after_forward(step)
            loss = self.model.bpr_loss(propagated, u, p, n) + self.model.l2_loss(x0, u, p, n, cfg.l2_factor)
            aux = self.module.aux_loss(step)
            if aux is not None:
                loss = loss + aux
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_value_(params, cfg.grad_clip_value)
            self.optimizer.step()
            total += loss.detach()
            n_batches += 1
            if self.module.after_step(step):
                stop = True
                break
        mean_loss = float(total) / max(1, n_batches)
        if not math.isfinite(mean_loss):
            raise DivergedError(f"{self.label}: diverged: training loss became {mean_loss} in stage "
                                f"{stage.name!r}, epoch {epoch}; lower trainer.lr (now {cfg.lr:g}) or check "
                                "the method's hooks")
        return mean_loss, stop

    def _check_loss(self, stage: Stage, epoch: int) -> None:
        """Fail as diverged when the stage's loss has grown :data:`DIVERGED_LOSS_FACTOR` fold since its first
        epoch (read from the history, so that a resumed run judges the same numbers)."""
        losses = stage_losses(self.history, stage.name)
        if losses[0] > 0 and losses[-1] > DIVERGED_LOSS_FACTOR * losses[0]:
            raise DivergedError(f"{self.label}: diverged: training loss grew from {losses[0]:.4g} to "
                                f"{losses[-1]:.4g} in stage {stage.name!r} by epoch {epoch}; lower trainer.lr "
                                f"(now {self.stage_config(stage).lr:g})")
        rise = LOSS_RISE_WARN_FACTOR * losses[0]
        if losses[0] > 0 and losses[-1] > rise and all(loss <= rise for loss in losses[:-1]):
            logger.warning("%s: training loss rose from %.4g to %.4g in stage %r by epoch %d; trainer.lr (now %g) "
                           "may be too high (kept in the record's warnings)", self.label, losses[0], losses[-1],
                           stage.name, epoch, self.stage_config(stage).lr)

    def _check_validation(self, stage: Stage) -> None:
        """Fail as diverged when every validation after epoch 0 stays :data:`DIVERGED_VALID_FACTOR` fold below
        the stage's first (epoch-0) value: training destroyed what the stage started from and never recovered.
        Judged only once the stage has trained a full patience window (``eval_every`` x the smallest patience
        of its phases): a smoke run of one epoch on real data can sit below its epoch-0 value by chance.
        The best later value is judged, not the last, so one noisy validation of a smoke run at chance level
        (a short phase just after an assignment refresh) does not fail it."""
        metric = self.config.early_stop_metric
        cfg = self.stage_config(stage)
        window = cfg.eval_every * min(cfg.patience(phase) for phase in stage.phases)
        if len(stage_losses(self.history, stage.name)) < window:
            return   # too few trained epochs to call a dip divergence: early epochs may dip before they learn
        values = [h["valid"][metric] for h in self.history if h["stage"] == stage.name and "valid" in h]
        if len(values) > 1 and max(values[1:]) * DIVERGED_VALID_FACTOR < values[0]:
            raise DivergedError(f"{self.label}: diverged: validation {metric} fell from {values[0]:.4g} at epoch "
                                f"0 to at most {max(values[1:]):.4g} for the rest of stage {stage.name!r}; lower "
                                f"trainer.lr (now {self.stage_config(stage).lr:g})")

    # --- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def propagated_tables(self):
        """(user table, item table, item bias) of the current weights, propagated in eval mode."""
        self.model.eval()
        _, propagated = self.model()
        users, items = self.model.user_item_tables(propagated)
        self.model.train()
        return users, items, self.model.item_bias

    def _evaluate(self, split: str, schedule: Schedule) -> pd.DataFrame:
        started = time.perf_counter()
        frame = self.evaluator.per_user(split, *self.propagated_tables())
        schedule.eval_seconds += time.perf_counter() - started
        return frame

    def _validate_and_track(self, stage: Stage, plan: StagePlan, schedule: Schedule) -> tuple[float, bool]:
        """Validate, tell the plan, and save a best checkpoint on improvement; returns (value, whether it
        improved on the phase's best)."""
        means = self._evaluate("valid", schedule).mean().to_dict()
        metric = self.config.early_stop_metric
        if metric not in means:
            raise KeyError(f"early_stop_metric {metric!r} is not computed; choose one of {sorted(means)}")
        value, phase = means[metric], plan.phase(schedule)
        improved = plan.record(schedule, value)
        if improved:
            self.files.save_best(stage.name, phase, schedule.epoch)
        self.history.append({"stage": stage.name, "phase": phase, "epoch": schedule.epoch, "valid": plain(means),
                             "diagnostics": plain(self.module.diagnostics(), "diagnostics()")})
        return value, improved

    def _finish_stage(self, index: int, schedule: Schedule) -> None:
        """Evaluate the stage's best checkpoints on validation and test, then restore its final weights."""
        stage = self.stages[index]
        if stage.reported:
            final = self.files.snapshot()
            for phase in stage.phases:
                if not self.files.load_best(stage.name, phase):
                    continue
                valid = self._evaluate("valid", schedule)
                test = self._evaluate("test", schedule)
                name = f"{stage.name}/{phase}"
                self.results[name] = CheckpointResult(name=name, epoch=schedule.best_epoch[phase],
                                                      valid=valid.mean().to_dict(), test=test.mean().to_dict(),
                                                      test_per_user=test)
            self.files.restore(final)

    def _reported_name(self) -> str:
        """The last phase with a checkpoint of the last reported stage."""
        for stage in reversed(self.stages):
            if not stage.reported:
                continue
            for phase in reversed(stage.phases):
                if f"{stage.name}/{phase}" in self.results:
                    if phase != stage.phases[-1]:
                        logger.warning("%s: stage %r never reached its %s phase; reporting its %s "
                                       "checkpoint", self.label, stage.name, stage.phases[-1], phase)
                    return f"{stage.name}/{phase}"
        raise RuntimeError(f"{self.label}: no reported stage produced a checkpoint")

    # --- resume ----------------------------------------------------------------------------------
    def _save_resume(self, path: Path, schedule: Schedule, inside_stage: bool) -> None:
        self.files.save_resume(path, dataclasses.asdict(schedule), self.history,
                               {name: result.to_state() for name, result in self.results.items()},
                               self.code_versions, self.optimizer if inside_stage else None)

    def _restore(self, stage: Stage, schedule: Schedule, state: dict) -> None:
        """Re-enter a stage mid-way: replay its start hooks, then overwrite with the saved state."""
        self.model.n_layers = self.stage_config(stage).layers
        self.module.begin_stage(stage)
        for phase in stage.phases[:schedule.phase_index + 1]:
            self.module.begin_phase(stage, phase)
        self.optimizer = self.files.restore_inside(state, lambda: self._make_optimizer(stage))

    def _peak_memory(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process peak RSS (Linux: KiB)
