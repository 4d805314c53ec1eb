"""The shared LightGCN/BPR trainer (methods.md 1): stages, two-phase early stopping, checkpoints, resume.

One loop serves every method. A method shapes training only through its :class:`~lwbench.plugin.Stage`
list and its module's hooks, never through its name.

Schedule per stage (methods.md 1.7), with patience counted in evaluations::

    for epoch in range(max_epochs):
        if epoch % eval_every == 0: validate; improvement -> save best[phase]; else bad += 1
        if bad == patience(phase): last phase -> stop; else next phase (from the current weights)
        train one epoch

A run can be killed at any moment: ``last.pt`` (model, optimizer, RNG streams, schedule, results of
finished stages) is written atomically after every epoch, and a new :class:`Trainer` on the same
work folder continues from it and ends with the same result as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from lwbench.budget import ParamCount
from lwbench.files import exclusive_lock
from lwbench.training.persistence import atomic_torch_save, capture_rng, restore_rng, seed_everything, torch_load
from lwbench.config import TrainerConfig, config_hash
from lwbench.data.interactions import Interactions
from lwbench.evaluate import Evaluator
from lwbench.training.graph import normalized_adjacency
from lwbench.training.model import Recommender
from lwbench.plugin import BuildContext, Method, Stage, Step
from lwbench.training.sampler import BPRSampler


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


@dataclass
class CheckpointResult:
    """Validation and test metrics of one best checkpoint (one stage and phase)."""

    name: str
    epoch: int
    valid: dict
    test: dict
    test_per_user: pd.DataFrame


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

    @property
    def reported_checkpoint(self) -> CheckpointResult:
        return self.checkpoints[self.reported]


class Trainer:
    def __init__(self, method: Method, options: dict, interactions: Interactions, config: TrainerConfig, *,
                 seed: int, device: torch.device | str, work_dir: Path, cache_dir: Path,
                 label: str = "", show_progress: bool | None = None, log: Callable[[str], None] | None = None):
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
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.stages = method.stages(options)
        self.history: list[dict] = []
        self.results: dict[str, CheckpointResult] = {}

    # --- set-up ----------------------------------------------------------------------------------
    def build(self) -> None:
        """Seed everything, then build graph, module, sampler and evaluator (called by :meth:`fit`)."""
        self.shared_dirs = self._shared_stage_dirs()
        seed_everything(self.stage_seed(0))
        if self.config.deterministic:
            # cuBLAS reads this when its first handle is created; without it, matmuls may differ run to run.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        graph = normalized_adjacency(self.data.train, self.device)
        ctx = BuildContext(interactions=self.data, graph=graph, device=self.device, options=self.options,
                           seed=self.stage_seed(0), cache_dir=self.cache_dir)
        self.module = self.method.build(ctx)
        self.model = Recommender(self.module, self.config.layers, self.config.item_bias, self.device)
        self.sampler = BPRSampler(self.data.train, self.config.n_negatives, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.stage_seed(0))
        self.evaluator = Evaluator(self.data.train, {"valid": self.data.valid, "test": self.data.test},
                                   self.config.ks, self.device, self.config.eval_chunk_elements)

    def stage_seed(self, index: int) -> int:
        """The seed stage ``index`` draws from: its own ``Stage.seed``, else the run's seed for the first
        stage and a seed derived from (run seed, index) for later ones, so that no later stage replays
        the random stream the module's initialization drew (e.g. PEP's fresh re-initialization)."""
        seed = self.stages[index].seed
        if seed is not None:
            return seed
        if index == 0:
            return self.seed
        digest = hashlib.sha256(f"lwbench-stage/{self.seed}/{index}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def _shared_stage_dirs(self) -> dict[int, Path]:
        """Folders of the stages whose outcome is shared between runs (``Stage.shared``), keyed by a
        hash of everything that determines the stage: method, stage definition and the options it
        declares, trainer settings, seed, the data (train/valid/test) and the stages before it."""
        dirs, previous = {}, None
        for index, stage in enumerate(self.stages):
            if stage.shared is None:
                continue
            if index != len(dirs):
                raise ValueError(f"{self.method.name}: stage {stage.name!r} is shared but an earlier stage is "
                                 "not; only a prefix of the stages can be shared between runs")
            # The seed enters as the one the stage draws from, so a stage seeded by the run (``seed=None``)
            # and one given that seed explicitly share an outcome.
            material = {"method": self.method.name, "stage": {**dataclasses.asdict(stage), "seed": None},
                        "trainer": dataclasses.asdict(self.stage_config(stage)), "seed": self.stage_seed(index),
                        "data": self.data.digest(), "previous": previous}
            previous = config_hash(material)
            dirs[index] = self.cache_dir / "stages" / f"{self.method.name}-{stage.name}-{previous[:16]}"
        return dirs

    def stage_config(self, stage: Stage) -> TrainerConfig:
        """The run's settings with the stage's changes; a stage may shorten ``max_epochs``, never extend
        it, so ``--epochs`` caps every stage."""
        config = self.config.replace(**stage.trainer)
        return config.replace(max_epochs=min(config.max_epochs, self.config.max_epochs))

    # --- main loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.build()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        schedule, resume = self._load_resume(self.work_dir / "last.pt")
        for index in range(schedule.stage_index, len(self.stages)):
            if index in self.shared_dirs and resume is None:
                schedule = self._run_shared_stage(index, schedule)
            else:
                schedule = self._run_own_stage(index, schedule, resume, self.work_dir / "last.pt")
            resume = None
        reported = self._reported_name()
        self._load_checkpoint(self._best_path(*reported.split("/")))
        return TrainResult(checkpoints=self.results, reported=reported, schedule=schedule, history=self.history,
                           param_count=self.module.param_count(), peak_memory_bytes=self._peak_memory(),
                           diagnostics=self.module.diagnostics(),
                           shared_stages={self.stages[i].name: d.name for i, d in self.shared_dirs.items()})

    def _run_own_stage(self, index: int, schedule: Schedule, resume: dict | None, resume_path: Path) -> Schedule:
        if resume is None:
            schedule = dataclasses.replace(schedule, stage_index=index, epoch=0, phase_index=0, bad_evals=0,
                                           best={}, best_epoch={})
            self.start_stage(index)
        self._run_stage(self.stages[index], schedule, resume, resume_path)
        self._finish_stage(index, schedule)
        schedule = dataclasses.replace(schedule, stage_index=index + 1, epoch=0, phase_index=0, bad_evals=0,
                                       best={}, best_epoch={})
        self._save_resume(resume_path, schedule, stage_done=True)
        return schedule

    def _run_shared_stage(self, index: int, schedule: Schedule) -> Schedule:
        """Train a shared stage once for all runs with the same stage key, or load its outcome.

        The lock makes concurrent runs (a parallel grid) wait for the one that trains it; the stage's
        own resume file lives in the shared folder, so whichever run comes next continues it."""
        folder = self.shared_dirs[index]
        outcome, progress = folder / "outcome.pt", folder / "last.pt"
        with exclusive_lock(folder / ".lock"):
            if outcome.exists():
                self.log(f"lwbench: {self.label} seed {self.seed}: reusing stage {self.stages[index].name!r} "
                         f"from {folder}")
                schedule, _ = self._load_resume(outcome, announce=False)
            else:
                if progress.exists():
                    schedule, resume = self._load_resume(progress)
                else:
                    resume = None
                schedule = self._run_own_stage(index, schedule, resume, progress)
                os.replace(progress, outcome)
        self._save_resume(self.work_dir / "last.pt", schedule, stage_done=True)
        return schedule

    def start_stage(self, index: int, hand_off: bool = True) -> None:
        """Enter stage ``index``: hand-off checkpoint, start hooks, a fresh optimizer.

        ``hand_off=False`` enters the stage from the current weights even if it starts from the previous
        stage's best checkpoint (for benchmarks that time a later stage without training earlier ones)."""
        stage = self.stages[index]
        if stage.start_from_best and index > 0 and hand_off:
            self._load_checkpoint(self._handoff_path(index - 1))
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
        """Adam as methods.md 1.4 (betas 0.9/0.999, eps 1e-8, no weight decay unless a group sets it);
        the fused kernel on CUDA, where it is the fastest exact implementation."""
        return torch.optim.Adam(self.model.param_groups(stage), lr=self.stage_config(stage).lr,
                                fused=self.device.type == "cuda")

    def _run_stage(self, stage: Stage, schedule: Schedule, resume: dict | None, resume_path: Path) -> None:
        cfg = self.stage_config(stage)
        if resume is not None:
            self._restore(stage, schedule, resume)
        bar = tqdm(total=cfg.max_epochs, initial=schedule.epoch, desc=f"{self.label} s{self.seed} {stage.name}",
                   disable=None if self.show_progress is None else not self.show_progress,  # None: off if not a TTY
                   leave=False, dynamic_ncols=True)
        last_valid = math.nan
        while schedule.epoch < cfg.max_epochs:
            phase = stage.phases[schedule.phase_index]
            if stage.early_stopping and schedule.epoch % cfg.eval_every == 0:
                last_valid = self._validate_and_track(stage, phase, schedule)
            if stage.early_stopping and schedule.bad_evals >= cfg.patience(phase):
                if schedule.phase_index == len(stage.phases) - 1:
                    break
                schedule.phase_index += 1
                schedule.bad_evals = 0
                self.module.begin_phase(stage, stage.phases[schedule.phase_index])
                phase = stage.phases[schedule.phase_index]
            started = time.perf_counter()
            loss, stop = self.train_epoch(stage, phase, schedule.epoch, cfg)
            seconds = time.perf_counter() - started
            schedule.train_seconds += seconds
            schedule.epoch += 1
            schedule.epochs_run += 1
            stop = self.module.end_epoch(stage, schedule.epoch) or stop
            self.history.append({"stage": stage.name, "phase": phase, "epoch": schedule.epoch, "loss": loss,
                                 "seconds": seconds})
            bar.update(1)
            bar.set_postfix(phase=phase, loss=f"{loss:.4f}", valid=f"{last_valid:.4f}", s_per_epoch=f"{seconds:.2f}")
            if stop:
                break
            if schedule.epoch % cfg.checkpoint_every == 0:
                self._save_resume(resume_path, schedule)
        bar.close()
        self.module.end_stage(stage)
        if not stage.early_stopping:
            self._save_checkpoint(self._best_path(stage.name, stage.phases[-1]), schedule.epoch)
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
            raise FloatingPointError(f"{self.label}: training loss became {mean_loss} in stage {stage.name!r}, "
                                     f"epoch {epoch}; lower the learning rate or check the method's hooks")
        return mean_loss, stop

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

    def _validate_and_track(self, stage: Stage, phase: str, schedule: Schedule) -> float:
        means = self._evaluate("valid", schedule).mean().to_dict()
        metric = self.config.early_stop_metric
        if metric not in means:
            raise KeyError(f"early_stop_metric {metric!r} is not computed; choose one of {sorted(means)}")
        value = means[metric]
        best = schedule.best.get(phase)
        if best is None or value > best:
            schedule.best[phase] = value
            schedule.best_epoch[phase] = schedule.epoch
            schedule.bad_evals = 0
            self._save_checkpoint(self._best_path(stage.name, phase), schedule.epoch)
        else:
            schedule.bad_evals += 1
        self.history.append({"stage": stage.name, "phase": phase, "epoch": schedule.epoch, "valid": means,
                             "diagnostics": self.module.diagnostics()})
        return value

    def _finish_stage(self, index: int, schedule: Schedule) -> None:
        """Evaluate the stage's best checkpoints on validation and test, then restore its final weights."""
        stage = self.stages[index]
        if stage.reported:
            final = self._snapshot()
            for phase in stage.phases:
                path = self._best_path(stage.name, phase)
                if not path.exists():
                    continue
                self._load_checkpoint(path)
                valid = self._evaluate("valid", schedule)
                test = self._evaluate("test", schedule)
                name = f"{stage.name}/{phase}"
                self.results[name] = CheckpointResult(name=name, epoch=schedule.best_epoch[phase],
                                                      valid=valid.mean().to_dict(), test=test.mean().to_dict(),
                                                      test_per_user=test)
            self._restore_snapshot(final)

    def _handoff_path(self, index: int) -> Path:
        """The best checkpoint of stage ``index`` (its last phase that saved one), reported or not:
        e.g. a dense pre-training stage that is over budget hands its best weights to the next stage."""
        stage = self.stages[index]
        for phase in reversed(stage.phases):
            path = self._best_path(stage.name, phase)
            if path.exists():
                return path
        raise RuntimeError(f"{self.label}: stage {stage.name!r} saved no checkpoint to start the next stage from")

    def _reported_name(self) -> str:
        """The last phase with a checkpoint of the last reported stage."""
        for stage in reversed(self.stages):
            if not stage.reported:
                continue
            for phase in reversed(stage.phases):
                if f"{stage.name}/{phase}" in self.results:
                    if phase != stage.phases[-1]:
                        self.log(f"lwbench: {self.label}: stage {stage.name!r} never reached its "
                                 f"{stage.phases[-1]} phase; reporting its {phase} checkpoint")
                    return f"{stage.name}/{phase}"
        raise RuntimeError(f"{self.label}: no reported stage produced a checkpoint")

    # --- checkpoints -----------------------------------------------------------------------------
    def _best_path(self, stage: str, phase: str) -> Path:
        index = next(i for i, s in enumerate(self.stages) if s.name == stage)
        return self.shared_dirs.get(index, self.work_dir) / f"best-{stage}-{phase}.pt"

    def _snapshot(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "extra": self.module.extra_state()}

    def _restore_snapshot(self, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.module.load_extra_state(snapshot["extra"])
        self.module.after_load()

    def _save_checkpoint(self, path: Path, epoch: int) -> None:
        atomic_torch_save(path, {**self._snapshot(), "epoch": epoch})

    def _load_checkpoint(self, path: Path) -> None:
        state = torch_load(path)
        self._restore_snapshot({"model": {k: v.to(self.device) for k, v in state["model"].items()},
                                "extra": state["extra"]})

    def _save_resume(self, path: Path, schedule: Schedule, stage_done: bool = False) -> None:
        atomic_torch_save(path, {
            "schedule": dataclasses.asdict(schedule), "stage_done": stage_done, **self._snapshot(),
            "optimizer": None if stage_done else self.optimizer.state_dict(),
            "rng": capture_rng(self.generator), "history": self.history, "results": self.results})

    def _load_resume(self, path: Path, announce: bool = True) -> tuple[Schedule, dict | None]:
        """Restore what ``path`` holds: between stages, the state is applied here and ``None`` returned;
        inside a stage, the state is returned for :meth:`_restore` once the stage's hooks have run."""
        if not path.exists():
            return Schedule(), None
        state = torch_load(path)
        schedule = Schedule(**state["schedule"])
        self.history = state["history"]
        self.results = state["results"]
        if announce:
            self.log(f"lwbench: {self.label} seed {self.seed}: resuming from {path} "
                     f"(stage {schedule.stage_index}, epoch {schedule.epoch})")
        if state["stage_done"]:
            # Between stages: the next stage starts normally from the restored weights and RNG.
            self._restore_snapshot(self._to_device(state))
            restore_rng(state["rng"], self.generator)
            return schedule, None
        return schedule, state

    def _to_device(self, state: dict) -> dict:
        return {"model": {k: v.to(self.device) for k, v in state["model"].items()}, "extra": state["extra"]}

    def _restore(self, stage: Stage, schedule: Schedule, state: dict) -> None:
        """Re-enter a stage mid-way: replay its start hooks, then overwrite with the saved state."""
        self.model.n_layers = self.stage_config(stage).layers
        self.module.begin_stage(stage)
        for phase in stage.phases[:schedule.phase_index + 1]:
            self.module.begin_phase(stage, phase)
        self._restore_snapshot(self._to_device(state))
        self.optimizer = self._make_optimizer(stage)
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], self.generator)

    def _peak_memory(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process peak RSS (Linux: KiB)
