"""Where grid runs execute: devices and the number of runs at once, per-run locks, GPU slots, the
worker task, and the joblib backends (local processes, dask, ray).

Locally the GPUs are shared out round-robin over ``jobs`` device slots (slot ``k`` is GPU ``k mod #GPUs``):
a task takes a free slot for as long as it trains, so no GPU ever holds more than ``ceil(jobs / #GPUs)``
runs, however long each run takes. A task holds an exclusive lock on ``<out>/locks/<run_id>.lock``
while it runs (released by the kernel even on ``kill -9``), so a rerun started while workers of a killed
grid are still finishing waits for them instead of training the same run twice. Every command that trains
goes through :func:`execute_task`, so two identical commands on one output folder train the run once: the
second waits for the lock, then finds the record. A local worker process ends itself when the grid
process that started it dies (:func:`exit_with_parent`), so a killed grid leaves no worker training.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from joblib import parallel_config

from lwbench.environment import keep_freed_memory, resolve_device
from lwbench.files import exclusive_lock
from lwbench.grid import BACKENDS
from lwbench.grid.plan import GridRun
from lwbench.grid.runner import run_or_record_failure
from lwbench.logs import run_log
from lwbench.records import failure_path, find_record
from lwbench.training import progress
from lwbench.training.persistence import RESUME_FILE

logger = logging.getLogger(__name__)

MAX_RUNS_PER_GPU = 4   # beyond a few, runs on one GPU compete for its compute, not its memory (--runs-per-gpu)


class GridError(RuntimeError):
    """The grid cannot be executed as asked (missing backend, no such GPU, ...)."""


@dataclass(frozen=True)
class Execution:
    """Where and how many runs at once. ``devices`` are dealt out round-robin to local tasks; remote
    (dask/ray) workers resolve ``remote_device`` themselves."""

    jobs: int = 1
    devices: tuple[str, ...] = ("cpu",)
    backend: str = "local"
    scheduler: str | None = None
    remote_device: str = "auto"
    gpus_per_run: float = 1.0
    threads: int | None = None       # torch CPU threads per local run (None: the cores shared out by jobs)


@dataclass(frozen=True)
class ExecutionRequest:
    """What the command line asked for; :func:`make_execution` turns it into an :class:`Execution`."""

    jobs: int | None = None          # None: one per GPU x runs per GPU (locally), every worker (remote)
    device: str = "auto"
    gpus: str | None = None          # "0,1"; None: every visible GPU
    backend: str = "local"
    scheduler: str | None = None     # dask scheduler / ray cluster address; None: a local cluster
    runs_per_gpu: int | None = None  # None: from measured peak memory, else 1
    threads: int | None = None       # torch CPU threads per local run


def make_execution(request: ExecutionRequest, runs: list[GridRun], records: list[dict]) -> tuple[Execution, str]:
    """The execution for a request, with a line saying how the number of parallel runs was chosen."""
    if request.backend not in BACKENDS:
        raise GridError(f"unknown backend {request.backend!r}; choose one of {', '.join(BACKENDS)}")
    if request.jobs is not None and request.jobs < 1:
        raise GridError(f"--jobs must be at least 1, got {request.jobs}")
    if request.backend != "local":
        if request.gpus:
            raise GridError("--gpus applies to local runs; on a dask/ray cluster each worker uses its own GPU "
                            "(start one worker per GPU, e.g. with dask-cuda)")
        per_gpu = request.runs_per_gpu or 1
        jobs = request.jobs or (-1 if request.scheduler else (os.cpu_count() or 1))
        return (Execution(jobs=jobs, devices=(), backend=request.backend, scheduler=request.scheduler,
                          remote_device=request.device, gpus_per_run=1 / per_gpu),
                f"{request.backend} backend, {'all workers' if jobs == -1 else f'{jobs} workers'}")
    devices = resolve_devices(request.device, request.gpus)
    if request.runs_per_gpu:
        per_gpu, why = request.runs_per_gpu, "--runs-per-gpu"
    elif not devices[0].startswith("cuda"):
        per_gpu, why = cpu_runs(request.threads)
    else:
        per_gpu, why = runs_per_gpu(runs, records, devices)
    if request.jobs:
        jobs, why = request.jobs, "--jobs"
    else:
        jobs = len(devices) * per_gpu
        finished = {record.get("run_id") for record in records}
        to_train = [run for run in runs if run.run_id not in finished] or runs   # all finished: --force
        if len(to_train) < jobs:   # a single run then trains in this process, with its own progress bar
            jobs, why = max(1, len(to_train)), f"{why}; no more than the {len(to_train)} run(s) to train"
    return (Execution(jobs=jobs, devices=devices, threads=request.threads),
            f"{jobs} parallel run(s) on {', '.join(devices)} ({why})")


def resolve_devices(device: str, gpus: str | None) -> tuple[str, ...]:
    """``--device`` and ``--gpus`` -> the devices local tasks are dealt: the listed GPUs, or every
    visible GPU when the device is a GPU (``auto`` with GPUs, ``cuda``), else the CPU."""
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        if gpus:
            raise GridError(f"--gpus {gpus} needs a GPU device, but --device {device} resolved to {resolved}")
        return (str(resolved),)
    visible = torch.cuda.device_count()
    if gpus:
        try:
            ids = [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise GridError(f"--gpus {gpus!r}: expected comma-separated GPU indices, e.g. 0,1") from None
        missing = [g for g in ids if not 0 <= g < visible]
        if missing or not ids:
            raise GridError(f"--gpus {gpus}: GPU(s) {missing or ids} are not visible ({visible} visible)")
        return tuple(f"cuda:{g}" for g in ids)
    if resolved.index is not None:
        return (str(resolved),)
    return tuple(f"cuda:{g}" for g in range(visible))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow), or
    every core where the platform does not say."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def cpu_runs(threads: int | None) -> tuple[int, str]:
    """How many CPU runs at once: one using every core, or with ``--threads T`` as many as the cores hold
    (a run's kernels scale poorly beyond a few threads, so on a grid, T=1 runs side by side finish sooner;
    ``--jobs 1`` keeps one run at a time)."""
    cores = available_cores()
    if not threads:
        return 1, "CPU runs: one at a time uses every core"
    return max(1, cores // threads), f"CPU runs: {cores} cores / --threads {threads}"


def runs_per_gpu(runs: list[GridRun], records: list[dict], devices: tuple[str, ...]) -> tuple[int, str]:
    """How many runs fit on one GPU at once, from the peak memory measured in existing records of
    the same dataset and method (1 when any planned run has no measurement); with the reason."""
    peaks = {}
    for record in records:
        if str(record.get("device", "")).startswith("cuda"):
            key = (record["dataset"], record["method"])
            peaks[key] = max(peaks.get(key, 0), int(record.get("peak_memory_bytes", 0)))
    needed = {(r.dataset_name, r.spec.method) for r in runs}
    unknown = needed - set(peaks)
    if unknown or not needed:
        return 1, "no measured peak memory for " + ", ".join(f"{d}/{m}" for d, m in sorted(unknown))
    total = min(torch.cuda.get_device_properties(torch.device(d)).total_memory for d in devices)
    peak = max(peaks[key] for key in needed)
    fit = max(1, min(int(0.9 * total // max(peak, 1)), max(1, (os.cpu_count() or 1) // len(devices)),
                     MAX_RUNS_PER_GPU))
    return fit, f"measured peak {peak / 2**30:.1f} GiB of {total / 2**30:.0f} GiB per GPU"


def run_lock_path(out: Path, run_id: str) -> Path:
    """``<out>/locks/<run_id>.lock``: held (blocking) by whoever trains the run; the kernel drops it when
    the process dies, so a rerun after ``kill -9`` waits only for workers that are still alive."""
    return Path(out) / "locks" / f"{run_id}.lock"


def is_running(out: Path, run_id: str) -> bool:
    path = run_lock_path(out, run_id)
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def device_slot(out: Path, devices: tuple[str, ...], slots: int) -> Iterator[str]:
    """Hold the first free of ``slots`` slot locks and yield its device (slot ``k`` -> ``devices[k mod n]``).
    At most ``slots`` tasks of one grid run at once, so one is normally free; when other processes on the
    same output folder (workers of a killed grid, a second command) hold them all, wait for whichever is
    released first. ``slots=0`` (remote workers, which own their device): ``devices[0]``, no lock."""
    if slots == 0:
        yield devices[0]
        return
    folder = Path(out) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    k, handle = _acquire_slot(folder, slots)
    try:
        yield devices[k % len(devices)]
    finally:
        handle.close()  # closing the file releases its lock


def _acquire_slot(folder: Path, slots: int, poll_seconds: float = 1.0):
    said = False
    while True:
        for k in range(slots):
            handle = open(folder / f"slot-{k}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return k, handle
            except BlockingIOError:
                handle.close()
        if not said:   # a wait that could last hours must not look like a hang
            logger.warning("all %d run slot(s) of %s are held by another process on this output folder (a second "
                           "command, or workers of a killed grid); waiting for one to come free", slots, folder.parent)
            said = True
        time.sleep(poll_seconds)


_watched_parent: int | None = None


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """In a worker process that ``parent_pid`` (the grid process) started: watch, from a daemon thread
    (one per process), for the parent's death (the worker is then re-parented) and end this process at
    once, so that neither its current run nor queued ones go on training unowned. Nothing happens in the
    grid process itself, nor in a worker it did not start directly (dask/ray workers have their own)."""
    global _watched_parent
    if os.getpid() == parent_pid or os.getppid() != parent_pid or _watched_parent == parent_pid:
        return
    _watched_parent = parent_pid

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="lwbench-exit-with-parent", daemon=True).start()


def run_log_path(out: Path, run_id: str) -> Path:
    """Where a run's worker logs its progress (every epoch's line) and its failure."""
    return Path(out) / "logs" / f"{run_id}.log"


def execute_task(run: GridRun, out: str, devices: tuple[str, ...], slots: int, threads: int | None,
                 force: bool, show_progress: bool | None = False, parent_pid: int | None = None) -> dict:
    """One grid task (in a worker, or in this process when one run goes at a time): lock the run, skip
    it if done, else take a device slot, train and record (or record the failure), logging to the run's
    log file. ``parent_pid``: the grid process, whose death ends a local worker (:func:`exit_with_parent`)."""
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    out = Path(out)
    with exclusive_lock(run_lock_path(out, run.run_id)):
        existing = None if force else find_record(out, run.run_id, run.spec.config_hash)
        if existing is not None:   # another process finished it while this one waited for the lock
            return {"run_id": run.run_id, "record": existing, "reused": True}
        with device_slot(out, devices, slots) as device, run_log(run_log_path(out, run.run_id)), \
                progress.running(run.run_id, str(out / "work" / run.run_id / RESUME_FILE)):
            logger.info("training %s on %s (pid %d)", run.run_id, device, os.getpid())
            started = time.perf_counter()
            record, failure = run_or_record_failure(run.spec, run.dataset.load(), out, resolve_device(device),
                                                    show_progress=show_progress)
            if failure is None:
                logger.info("%s: done in %.1f s", run.run_id, time.perf_counter() - started)
            else:
                logger.warning("%s: FAILED: %s (traceback in %s)", run.run_id, failure["error"],
                               failure_path(out, run.run_id))
    return {"run_id": run.run_id, "record": record, "failure": failure}


@contextlib.contextmanager
def joblib_backend(execution: Execution) -> Iterator[str]:
    """Configure joblib for the execution backend; yields the ``return_as`` the backend supports."""
    if execution.backend == "local":
        with parallel_config(backend="loky"):
            yield "generator_unordered"
    elif execution.backend == "dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GridError("--backend dask needs dask.distributed: pip install 'lwbench[dask]'") from None
        with contextlib.ExitStack() as stack:
            target = execution.scheduler or stack.enter_context(
                LocalCluster(n_workers=max(1, execution.jobs), threads_per_worker=1, processes=True,
                             dashboard_address=None))
            stack.enter_context(Client(target))
            stack.enter_context(parallel_config(backend="dask"))
            yield "generator_unordered"
    elif execution.backend == "ray":
        try:
            import ray
            from ray.util.joblib import register_ray
        except ImportError:
            raise GridError("--backend ray needs ray: pip install 'lwbench[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=execution.scheduler)
        register_ray()
        remote = {"num_gpus": execution.gpus_per_run} if execution.remote_device.startswith("cuda") else {}
        with parallel_config(backend="ray", ray_remote_args=remote):
            yield "list"  # joblib's ray backend returns results only at the end
    else:
        raise GridError(f"unknown backend {execution.backend!r}; choose one of {', '.join(BACKENDS)}")
