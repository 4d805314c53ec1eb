"""Training state on disk, so that a run killed at any moment continues to the result it would have had.

:class:`RunFiles` owns one run's files: the resume file ``last.pt`` in its work folder, the best checkpoint
of every stage and phase, and the folders of the stages whose outcome several runs share (trained once,
under a file lock, then reused). Writes are atomic, so a kill never leaves a half-written file behind.
The trainer decides *when* to save and load; this module decides *what* a file holds and where it lives.

Every file holds tensors and plain data only (dicts, lists, tuples, numbers, strings) and is read with
``torch.load(weights_only=True)``, so a file planted in an output folder cannot run code (docs/protocol.md
§3.5). A resume file that cannot be read is set aside as ``*.corrupt`` and the run starts again from the
last good state; a best checkpoint that cannot be read is an error naming it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lwbench.config import TrainerConfig, config_hash
from lwbench.files import atomic_write_bytes, exclusive_lock
from lwbench.plugin import EmbeddingModule, Stage

logger = logging.getLogger(__name__)

RESUME_FILE = "last.pt"
OUTCOME_FILE = "outcome.pt"   # a shared stage's resume file once the stage is finished
FORMAT = "lwbench-checkpoint/2"   # /2: tensors and plain data only (weights_only=True)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read (truncated, not written by lwbench, or holding code)."""


def atomic_torch_save(path: Path, obj: dict) -> None:
    """Write ``obj`` (tensors and plain data) through a temporary file unique to this writer."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **obj}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def torch_load(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True``: objects other than tensors and plain data (a crafted
    pickle) are refused, never constructed. Any failure is a :class:`CheckpointError` naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # truncated zip, refused pickle, ...: each torch error has its own type
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable lwbench checkpoint ({type(exc).__name__}: "
                              f"{reason[:160]}); delete {Path(path).parent} to train it again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lwbench checkpoint of format {FORMAT}; "
                              f"delete {Path(path).parent} to train it again")
    return state


def plain(value: Any, where: str = "value") -> Any:
    """``value`` as plain data a checkpoint may hold: numpy scalars become Python numbers, containers are
    converted recursively; anything else (an object that would need unpickling) is a TypeError."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold tensors and plain data only "
                    "(numbers, strings, lists, dicts)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator) -> dict:
    name, keys, *position = np.random.get_state()   # the key array as a tensor: no numpy object in the file
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *position),
             "torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, *position = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *position))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def stage_seed(stages: list[Stage], index: int, run_seed: int) -> int:
    """The seed stage ``index`` draws from: its own ``Stage.seed``, else the run's seed for the first stage and
    a seed derived from (run seed, index) for later ones, so that no later stage replays the random stream the
    module's initialization drew (e.g. PEP's fresh re-initialization)."""
    seed = stages[index].seed
    if seed is not None:
        return seed
    if index == 0:
        return run_seed
    digest = hashlib.sha256(f"lwbench-stage/{run_seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def stage_config(config: TrainerConfig, stage: Stage) -> TrainerConfig:
    """The run's settings with the stage's changes; a stage may shorten ``max_epochs``, never extend it, so
    ``--epochs`` caps every stage."""
    staged = config.replace(**stage.trainer)
    return staged.replace(max_epochs=min(staged.max_epochs, config.max_epochs))


def shared_stage_dirs(cache_dir: Path, method: str, stages: list[Stage], config: TrainerConfig, run_seed: int,
                      data_digest: str) -> dict[int, Path]:
    """Folders of the stages whose outcome is shared between runs (``Stage.shared``), by stage index, each
    named by a hash of everything that determines the stage: method, stage definition and the options it
    declares, its trainer settings and seed (:func:`stage_config`, :func:`stage_seed`), the data, and the
    stages before it. A pure function of the run's definition, so a plan can tell which stages it will reuse."""
    dirs, previous = {}, None
    for index, stage in enumerate(stages):
        if stage.shared is None:
            continue
        if index != len(dirs):
            raise ValueError(f"{method}: stage {stage.name!r} is shared but an earlier stage is "
                             "not; only a prefix of the stages can be shared between runs")
        # The seed enters as the one the stage draws from, so a stage seeded by the run (``seed=None``)
        # and one given that seed explicitly share an outcome.
        material = {"method": method, "stage": {**dataclasses.asdict(stage), "seed": None},
                    "trainer": dataclasses.asdict(stage_config(config, stage)),
                    "seed": stage_seed(stages, index, run_seed),
                    "data": data_digest, "previous": previous}
        previous = config_hash(material)
        dirs[index] = Path(cache_dir) / "stages" / f"{method}-{stage.name}-{previous[:16]}"
    return dirs


def shared_stage_finished(folder: Path) -> bool:
    """Whether a run has finished the shared stage of this folder (:func:`shared_stage_dirs`)."""
    return (Path(folder) / OUTCOME_FILE).exists()


@dataclass
class Saved:
    """A resume file as loaded: the loop's position and records, and, if it was written inside a stage,
    the state to apply once that stage's start hooks have run again (see :meth:`RunFiles.restore_inside`)."""

    schedule: dict
    history: list
    results: dict
    inside_stage: dict | None
    code_versions: list | None   # see Trainer.code_versions; None in a file written before they were kept


class RunFiles:
    """One run's training state on disk, and in memory the snapshot (weights and the module's extra state)
    that every file holds. ``name`` (label and seed) identifies the run in messages."""

    def __init__(self, work_dir: Path, stages: list[Stage], shared_dirs: dict[int, Path], model: torch.nn.Module,
                 module: EmbeddingModule, generator: torch.Generator, device: torch.device, name: str):
        self.work_dir = Path(work_dir)
        self.resume_path = self.work_dir / RESUME_FILE
        self.stages = stages
        self.shared_dirs = shared_dirs
        self.model = model
        self.module = module
        self.generator = generator
        self.device = device
        self.name = name

    # --- snapshots -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "extra": plain(self.module.extra_state(), "extra_state()")}

    def restore(self, snapshot: dict) -> None:
        self.model.load_state_dict({k: v.to(self.device) for k, v in snapshot["model"].items()})
        self.module.load_extra_state(snapshot["extra"])
        self.module.after_load()

    # --- best checkpoints ------------------------------------------------------------------------
    def best_path(self, stage: str, phase: str) -> Path:
        """A shared stage keeps its checkpoints in its shared folder, every other stage in the work folder."""
        index = next(i for i, s in enumerate(self.stages) if s.name == stage)
        return self.shared_dirs.get(index, self.work_dir) / f"best-{stage}-{phase}.pt"

    def save_best(self, stage: str, phase: str, epoch: int) -> None:
        atomic_torch_save(self.best_path(stage, phase), {**self.snapshot(), "epoch": epoch})

    def load_best(self, stage: str, phase: str) -> bool:
        """Restore the best checkpoint of ``stage``/``phase``; False if that phase saved none."""
        path = self.best_path(stage, phase)
        if not path.exists():
            return False
        self.restore(torch_load(path))
        return True

    def load_hand_off(self, index: int, allow_fallback: bool = False) -> None:
        """Restore the best checkpoint of the last phase of stage ``index``, reported or not: e.g. a dense
        pre-training stage that is over budget hands its best weights to the next stage. A stage that never
        reached its last phase hands nothing: that is an error naming the missing file, unless
        ``allow_fallback`` (``trainer.allow_handoff_fallback``, for smoke tests) lets its latest earlier
        phase stand in, with a warning (docs/protocol.md §3.4)."""
        stage = self.stages[index]
        last = stage.phases[-1]
        if self.load_best(stage.name, last):
            return
        earlier = [phase for phase in reversed(stage.phases[:-1]) if self.best_path(stage.name, phase).exists()]
        if earlier and allow_fallback:
            logger.warning("%s: stage %r never reached its %s phase; the next stage starts from its %s "
                           "checkpoint (trainer.allow_handoff_fallback)", self.name, stage.name, last, earlier[0])
            self.load_best(stage.name, earlier[0])
            return
        why = (f"it never reached that phase; give it more epochs, or set trainer.allow_handoff_fallback=true "
               f"to start from its {earlier[0]} checkpoint" if earlier else "it trained no epoch")
        raise RuntimeError(f"{self.name}: stage {stage.name!r} saved no checkpoint of its {last} phase "
                           f"({self.best_path(stage.name, last)}) to start the next stage from: {why}")

    # --- resume files ----------------------------------------------------------------------------
    def save_resume(self, path: Path, schedule: dict, history: list, results: dict, code_versions: list,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
        """Write everything a run needs to continue: with ``optimizer``, a point inside a stage; without,
        the point between two stages (the next stage builds its own optimizer). ``results`` are the finished
        checkpoints' results as plain data; :func:`plain` refuses anything else here, at save time, rather
        than leaving a file that ``weights_only`` loading would refuse at resume time."""
        atomic_torch_save(path, plain({
            "schedule": schedule, "stage_done": optimizer is None, **self.snapshot(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "rng": capture_rng(self.generator), "history": history, "results": results,
            "code_versions": code_versions}, "resume state"))

    def load_resume(self, path: Path, announce: bool = True) -> Saved | None:
        """Load ``path`` if it exists. Saved between stages, its weights and RNG streams are restored here;
        saved inside a stage, they are returned in ``inside_stage`` for :meth:`restore_inside`. A file that
        cannot be read is renamed ``<name>.corrupt`` (kept for inspection) and counts as absent, so the run
        starts again from the last good state instead of failing on every rerun."""
        if not path.exists():
            return None
        try:
            state = torch_load(path)
        except CheckpointError as exc:
            corrupt = path.with_name(path.name + ".corrupt")
            os.replace(path, corrupt)
            logger.warning("%s: %s; set aside as %s, starting again from the last good state",
                           self.name, str(exc).split("; delete")[0], corrupt)
            return None
        if announce:
            logger.info("%s: resuming from %s (stage %d, epoch %d)", self.name, path,
                        state["schedule"]["stage_index"], state["schedule"]["epoch"])
        saved = Saved(state["schedule"], state["history"], state["results"], None if state["stage_done"] else state,
                      state.get("code_versions"))
        if state["stage_done"]:
            self.restore(state)
            restore_rng(state["rng"], self.generator)
        return saved

    def restore_inside(self, state: dict, make_optimizer: Callable[[], torch.optim.Optimizer]
                       ) -> torch.optim.Optimizer:
        """Apply a state saved inside a stage (after the stage's start hooks ran again): weights, then
        ``make_optimizer()`` with the saved optimizer state, then the RNG streams. The optimizer is made
        only then, so that its parameter groups see the module as it was when the file was written."""
        self.restore(state)
        optimizer = make_optimizer()
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], self.generator)
        return optimizer

    # --- shared stages ---------------------------------------------------------------------------
    @contextmanager
    def shared_stage(self, index: int) -> Iterator[tuple[Saved | None, Path | None]]:
        """Hold the lock of shared stage ``index``, so that concurrent runs (a parallel grid) wait for the
        one that trains it. Yields ``(saved, progress)``: an earlier run finished the stage -> its outcome,
        already restored, and ``None``; else what an interrupted run left (or ``None``) and the progress
        file to train with, which becomes the outcome when the block ends. The progress file lives in
        the shared folder, so whichever run comes next continues an interrupted stage."""
        folder = self.shared_dirs[index]
        outcome, progress = folder / OUTCOME_FILE, folder / RESUME_FILE
        with exclusive_lock(folder / ".lock"):
            saved = self.load_resume(outcome, announce=False)   # None too when unreadable (set aside)
            if saved is not None:
                logger.info("%s: reusing stage %r from %s", self.name, self.stages[index].name, folder)
                yield saved, None
            else:
                yield self.load_resume(progress), progress
                os.replace(progress, outcome)
