"""The grid runner: expansion, failures that do not stop the grid, parallel = sequential, resume after
kill -9, progress states, plan estimates, and the dask backend (when installed)."""
import dataclasses
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lwbench.config import config_hash
from lwbench.environment import keep_freed_memory
from lwbench.files import exclusive_lock
from lwbench.grid import workers
from lwbench.grid.plan import expand, parse_sweeps, plan_grid
from lwbench.grid.run import (
    GridProgress,
    configuration_twins,
    describe_plan,
    estimate_seconds,
    run_grid,
    spread_shared_stages,
    summarize_failures,
)
from lwbench.grid.runner import shared_stages
from lwbench.grid.workers import (
    Execution,
    ExecutionRequest,
    device_slot,
    is_running,
    make_execution,
    run_lock_path,
    runs_per_gpu,
)
from lwbench.plugin import BuildContext, Method
from lwbench.records import load_records
from lwbench.registry import get_method, register
from lwbench.reports.cell import Cell
from lwbench.training.persistence import OUTCOME_FILE

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [1, 2]
TRAINER = {"max_epochs": 20, "eval_every": 5, "batch_size": 1024, "checkpoint_seconds": 0}  # resume file per epoch
QUIET = dict(show_progress=False)


def toy_cells(toy_dir, method="ud"):
    return expand([str(toy_dir)], [method], ["500buckets"], overrides={"ud": {"dim": 8}, "trainer": TRAINER})


def comparable(record):
    """What must not depend on how the grid was executed (timings, pids and dates may)."""
    losses = [entry["loss"] for entry in record["history"] if "loss" in entry]
    return {k: record[k] for k in ("run_id", "config_hash", "metrics", "checkpoints", "epochs_run", "params")} | \
        {"losses": losses}


@pytest.fixture(scope="module")
def reference(toy_dir, tmp_path_factory):
    """The grid run sequentially, in this process, with one CPU thread per run."""
    out = tmp_path_factory.mktemp("reference")
    plan = plan_grid(toy_cells(toy_dir), SEEDS)
    outcome = run_grid(plan, out, Execution(jobs=1, threads=1), **QUIET)
    assert not outcome.failures and len(outcome.records) == 2
    return {run_id: comparable(record) for run_id, record in outcome.records.items()}


def test_expand_multiplies_sweeps_only_for_their_owner():
    cells = expand(["a", "b"], ["ud", "c2f"], ["1%", "2%"], overrides={"ud": {"dim": 64}, "c2f": {"gate": 0.1}},
                   sweeps=parse_sweeps(["c2f.threshold=0.5,1,3", "trainer.lr=1e-3,3e-3"]))
    ud = [c for c in cells if c.method == "ud"]
    c2f = [c for c in cells if c.method == "c2f"]
    assert len(ud) == 2 * 2 * 2 and len(c2f) == 2 * 2 * 3 * 2
    assert all(c.overrides["ud"] == {"dim": 64} and "c2f" not in c.overrides for c in ud)
    assert {c.coords["c2f.threshold"] for c in c2f} == {0.5, 1, 3}
    assert all(c.overrides["c2f"]["gate"] == 0.1 and c.overrides["trainer"]["lr"] in (1e-3, 3e-3) for c in c2f)
    with pytest.raises(ValueError, match="expected OWNER.OPTION=V1,V2"):
        parse_sweeps(["threshold=1,2"])
    with pytest.raises(ValueError, match="name qr, which is neither 'trainer' nor one of the grid's methods"):
        expand(["a"], ["ud"], ["1%"], overrides={"qr": {"x": 1}})


@register
class FailsOnSeedTwo(Method):
    """UD, except that seed 2 fails while building (a run that crashes mid-grid)."""
    name = "test-fails-on-seed-2"
    budgeted = False
    options = {"dim": 8, "init_std": 0.1}

    def planned_count(self, options, stats):
        return get_method("ud").planned_count(options, stats)

    def build(self, ctx: BuildContext):
        if ctx.seed == 2:
            raise RuntimeError("simulated failure of seed 2")
        return get_method("ud").build(ctx)


def test_a_failing_run_does_not_stop_the_grid(toy_dir, tmp_path, caplog, monkeypatch):
    tuned = []
    monkeypatch.setattr(workers, "keep_freed_memory", lambda: tuned.append(True))
    plan = plan_grid(expand([str(toy_dir)], ["test-fails-on-seed-2"], ["none"],
                            overrides={"trainer": {**TRAINER, "max_epochs": 2}}), [1, 2, 3])
    with caplog.at_level(logging.INFO, logger="lwbench"):
        outcome = run_grid(plan, tmp_path, Execution(jobs=1, threads=1), show_progress=False)
    assert len(tuned) == 3      # every task sets the allocator of the process it trains in
    messages = [record.getMessage() for record in caplog.records]
    assert sorted(r["seed"] for r in outcome.records.values()) == [1, 3]
    (run_id, failure), = outcome.failures.items()
    assert "seed 2" in failure["error"] and "Traceback" in failure["traceback"]
    on_disk = json.loads((tmp_path / "runs" / f"{run_id}.failed.json").read_text())
    assert on_disk["error"] == failure["error"]
    assert run_id in summarize_failures(outcome.failures, tmp_path) and "FAILED" in summarize_failures(outcome.failures, tmp_path)
    assert any(m.startswith("grid: failed") and run_id in m for m in messages)
    assert not any(m.startswith("grid: started") for m in messages)   # one at a time: the run says so itself
    assert "simulated failure" in (tmp_path / "logs" / f"{run_id}.log").read_text()
    # every done or failed line says how far the grid is (a log file has no bar)
    finished = [m for m in messages if m.startswith(("grid: done", "grid: failed"))]
    assert [re.search(r"(\d+/\d+) finished", m)[1] for m in finished] == ["1/3", "2/3", "3/3"]
    assert ", about " in finished[0] and " left)" in finished[0] and finished[-1].endswith("3/3 finished)")


def test_parallel_workers_give_the_sequential_records(toy_dir, tmp_path, reference):
    plan = plan_grid(toy_cells(toy_dir), SEEDS)
    outcome = run_grid(plan, tmp_path, Execution(jobs=2, threads=1), **QUIET)
    assert {run_id: comparable(r) for run_id, r in outcome.records.items()} == reference
    pids = {(tmp_path / "logs" / f"{run_id}.log").read_text().split("pid ")[1].split(")")[0] for run_id in reference}
    assert str(os.getpid()) not in pids  # the runs went to worker processes
    again = run_grid(plan, tmp_path, Execution(jobs=2, threads=1), **QUIET)
    assert again.reused == 2 and not again.failures


def test_a_record_resumed_by_other_code_names_both_versions_and_warns(toy_dir, tmp_path, monkeypatch, reference):
    """A run killed under one code version and finished under another keeps its metrics, and its record says
    which code trained which epochs (``code_versions``) and warns; ``code_version`` is the finishing code."""
    from lwbench.grid import runner
    from lwbench.training import trainer as trainer_module
    from lwbench.training.trainer import Trainer

    def use_code(version):
        for module in (runner, trainer_module):
            monkeypatch.setattr(module, "code_version", lambda: version)

    plan = plan_grid(toy_cells(toy_dir), SEEDS[:1])
    original, calls = Trainer.train_epoch, {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    use_code("old")
    monkeypatch.setattr(Trainer, "train_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_grid(plan, tmp_path, Execution(jobs=1, threads=1), **QUIET)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    use_code("new")
    (run_id, record), = run_grid(plan, tmp_path, Execution(jobs=1, threads=1), **QUIET).records.items()
    assert comparable(record) == reference[run_id]
    assert record["code_version"] == "new"
    assert record["code_versions"] == [{"code_version": "old", "stage": "train", "epoch": 0},
                                       {"code_version": "new", "stage": "train", "epoch": 3}]
    assert ("resumed with other code: trained by old from stage 'train' epoch 0; then new from stage 'train' "
            "epoch 3. Rerun in a fresh --out for a run of one code version") in record["warnings"]
    assert json.loads((tmp_path / "runs" / f"{run_id}.json").read_text())["code_versions"] == record["code_versions"]


def grid_command(toy_dir, out):
    return [sys.executable, str(ROOT / "run_bench.py"), "grid", "--datasets", str(toy_dir), "--methods", "ud",
            "--seeds", ",".join(map(str, SEEDS)), "--set", "ud.dim=8", "--device", "cpu", "--jobs", "1",
            "--threads", "1", "--no-progress", "--out", str(out)] + \
        [arg for key, value in TRAINER.items() for arg in ("--set", f"trainer.{key}={value}")]


def test_kill_9_mid_grid_then_rerun_gives_the_uninterrupted_records(toy_dir, tmp_path, reference):
    out = tmp_path / "out"
    env = dict(os.environ, LWBENCH_OFFLINE="1")
    second = next(run_id for run_id in reference if "-s2-" in run_id)
    process = subprocess.Popen(grid_command(toy_dir, out), env=env, cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resume_file = out / "work" / second / "last.pt"
    deadline = time.time() + 300
    while not resume_file.exists():  # the second run is under way: its first epochs are saved
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline, "the grid never reached its second run"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "runs" / f"{second}.json").exists(), "killed too late: the run had finished"
    rerun = subprocess.run(grid_command(toy_dir, out), env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 reused" in rerun.stderr
    assert "resuming from" in (out / "logs" / f"{second}.log").read_text()
    records = {p.stem: comparable(json.loads(p.read_text())) for p in (out / "runs").glob("*.json")}
    assert records == reference


def test_progress_sees_done_failed_and_running(tmp_path, caplog):
    class Run:
        def __init__(self, run_id):
            self.run_id = run_id
    runs = [Run(name) for name in ("done", "failed", "running", "pending")]
    progress = GridProgress(runs, tmp_path, jobs=2, show=False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "done.json").write_text("{}")
    (tmp_path / "runs" / "failed.failed.json").write_text("{}")
    held, release = threading.Event(), threading.Event()

    def hold():
        with exclusive_lock(run_lock_path(tmp_path, "running")):
            held.set()
            release.wait(10)
    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(10)
    with caplog.at_level(logging.INFO, logger="lwbench"):
        progress.poll()
        progress.poll()
    assert progress.state == {"done": "done", "failed": "failed", "running": "running", "pending": "pending"}
    # Once, for a log file, which has no bar: the run that started and where its epochs are logged.
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("grid: started")]
    assert started == [f"grid: started running (its progress: {tmp_path / 'logs' / 'running.log'})"]
    release.set()
    worker.join()
    assert not is_running(tmp_path, "running")
    progress.bar.close()


def test_time_left_follows_each_runs_estimate_not_the_throughput(tmp_path, monkeypatch):
    """A run that finished early (e.g. resumed near its end) does not shorten the time left of long runs ahead:
    with an estimate for every run, the time left is the unfinished runs' estimates (a running one's less the
    time it has run) shared by the workers; without, the throughput so far."""
    class Run:
        def __init__(self, run_id):
            self.run_id = run_id
    runs = [Run(name) for name in ("resumed", "running", "pending")]
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    estimates = {"resumed": 100.0, "running": 300.0, "pending": 500.0}
    progress = GridProgress(runs, tmp_path, jobs=2, show=False, estimates=estimates)
    throughput = GridProgress(runs, tmp_path, jobs=2, show=False)
    for monitor in (progress, throughput):
        monitor.state.update(resumed="done", running="running")
        monitor.running_since["running"] = 1000.0
    clock[0] += 10.0                                              # the resumed run finished after 10 s
    assert progress.time_left(1) == pytest.approx((300.0 - 10.0 + 500.0) / 2)
    assert throughput.time_left(1) == pytest.approx(10.0 * 2)    # 10 s a run, two runs to go
    clock[0] += 1000.0                                            # the running run overran its estimate
    assert progress.time_left(1) == pytest.approx(500.0 / 2)
    assert GridProgress(runs, tmp_path, jobs=2, show=False).time_left(0) is None
    for monitor in (progress, throughput):
        monitor.bar.close()


def test_device_slots_share_gpus_round_robin_by_occupancy(tmp_path):
    gpus = ("cuda:0", "cuda:1")
    with device_slot(tmp_path, gpus, 4) as a, device_slot(tmp_path, gpus, 4) as b:
        assert (a, b) == ("cuda:0", "cuda:1")
        with device_slot(tmp_path, gpus, 4) as c:
            assert c == "cuda:0"
        with device_slot(tmp_path, gpus, 4) as c, device_slot(tmp_path, gpus, 4) as d:
            assert (c, d) == ("cuda:0", "cuda:1")   # never three runs on one GPU while the other has one
    with device_slot(tmp_path, ("cuda:3",), 0) as remote:
        assert remote == "cuda:3"  # a remote worker owns its device: no slot


def test_a_task_waits_for_whichever_slot_is_released_first(tmp_path, caplog):
    """All slots held (e.g. by a second command on the same folder): the waiting task says so once and takes
    the first one released, not one chosen in advance."""
    devices = ("cpu",)
    got = []
    with device_slot(tmp_path, devices, 2):                     # slot 0, held throughout
        with device_slot(tmp_path, devices, 2):                 # slot 1
            waiter = threading.Thread(target=lambda: got.append(workers._acquire_slot(tmp_path / "locks", 2,
                                                                                        poll_seconds=0.05)))
            waiter.start()
            time.sleep(0.3)
            assert not got                                      # both held: it waits
        waiter.join(timeout=5)
        assert got and got[0][0] == 1                           # slot 1 came free first
        got[0][1].close()
    waits = [r.getMessage() for r in caplog.records if "waiting for one to come free" in r.getMessage()]
    assert waits == [f"all 2 run slot(s) of {tmp_path} are held by another process on this output folder (a "
                     "second command, or workers of a killed grid); waiting for one to come free"]


def fake_record(dataset, method, device, epochs, seconds, cap=100, peak=0):
    return {"dataset": dataset, "method": method, "device": device, "epochs_run": epochs,
            "train_seconds": seconds * 0.75, "eval_seconds": seconds * 0.25, "config": {"trainer": {"max_epochs": cap}},
            "peak_memory_bytes": peak}


def test_estimates_from_measured_epochs(toy_dir):
    plan = plan_grid(toy_cells(toy_dir), SEEDS)
    dataset = plan.runs[0].spec.config["dataset"]["name"]
    cap = TRAINER["max_epochs"]
    records = [fake_record(dataset, "ud", "cpu", 10, 20.0, cap), fake_record(dataset, "ud", "cpu", 30, 30.0, cap),
               fake_record(dataset, "ud", "cuda:0", 10, 1.0, cap), fake_record(dataset, "qr", "cpu", 10, 99.0, cap)]
    seconds, unknown = estimate_seconds(plan.runs, records, "cpu")
    # median seconds per epoch (2.0, 1.0) = 1.5, median epochs (10, 30) = 20, two runs
    assert unknown == 0 and seconds == pytest.approx(2 * 1.5 * 20)
    seconds, unknown = estimate_seconds(plan.runs, records[:1], "cuda")
    assert unknown == 2 and seconds == 0


def test_a_shared_stage_is_estimated_once(toy_dir, tmp_path):
    """Two C2F runs that differ only in a fine-stage option share the coarse stage: the second costs only its fine
    stage's share of the records' time, and neither costs the coarse stage once it is finished in the cache."""
    cells = [Cell(str(toy_dir), "c2f", overrides={"trainer": TRAINER, "c2f": {"gate": gate}}) for gate in (0.3, 0.5)]
    plan = plan_grid(cells, [1])
    first, second = plan.runs
    coarse = shared_stages(first.spec, first.dataset.load(), tmp_path)
    assert list(coarse) == ["coarse"] and coarse == shared_stages(second.spec, second.dataset.load(), tmp_path)
    record = {**fake_record(first.dataset_name, "c2f", "cpu", 40, 40.0, TRAINER["max_epochs"]),
              "history": [{"stage": "coarse", "seconds": 3.0}] * 10 + [{"stage": "fine", "seconds": 1.0}] * 10}
    assert estimate_seconds(plan.runs, [record], "cpu") == (80.0, 0)               # without out: two whole runs
    assert estimate_seconds(plan.runs, [record], "cpu", tmp_path) == (40.0 + 10.0, 0)
    coarse["coarse"].mkdir(parents=True)
    (coarse["coarse"] / OUTCOME_FILE).write_bytes(b"")
    assert estimate_seconds(plan.runs, [record], "cpu", tmp_path) == (20.0, 0)


def test_runs_of_one_untrained_shared_stage_start_after_the_first_run_of_every_other(toy_dir, tmp_path):
    """Two C2F configurations (their own coarse stages) on two seeds each (one shared coarse stage per
    configuration): the two coarse stages start first, side by side, instead of a worker waiting for the
    other's; a stage finished in the cache orders nothing; a run without a shared stage keeps its place."""
    cells = [Cell(str(toy_dir), "c2f", overrides={"trainer": {**TRAINER, "lr": lr}, "c2f": {"coarse_seed": 1}})
             for lr in (1e-3, 2e-3)] + [Cell(str(toy_dir), "ud", overrides={"trainer": TRAINER})]
    plan = plan_grid(cells, [1, 2])
    a1, a2, b1, b2, u1, u2 = plan.unique_runs()
    assert [r.spec.method for r in (a1, a2, b1, b2, u1, u2)] == ["c2f"] * 4 + ["ud"] * 2
    assert spread_shared_stages([a1, a2, b1, b2, u1, u2], tmp_path) == [a1, b1, u1, u2, a2, b2]
    coarse = shared_stages(a1.spec, a1.dataset.load(), tmp_path)["coarse"]
    assert coarse == shared_stages(a2.spec, a2.dataset.load(), tmp_path)["coarse"]
    coarse.mkdir(parents=True)
    (coarse / OUTCOME_FILE).write_bytes(b"")   # a's coarse stage is trained: its runs need not wait
    assert spread_shared_stages([a1, a2, b1, b2, u1, u2], tmp_path) == [a1, a2, b1, u1, u2, b2]


def test_runs_per_gpu_from_measured_peak_memory(toy_dir, monkeypatch):
    plan = plan_grid(toy_cells(toy_dir), SEEDS)
    dataset = plan.runs[0].spec.config["dataset"]["name"]

    class Properties:
        total_memory = 80 * 2**30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    devices = ("cuda:0", "cuda:1")
    records = [fake_record(dataset, "ud", "cuda:0", 10, 1.0, peak=20 * 2**30)]
    assert runs_per_gpu(plan.runs, records, devices)[0] == 3      # floor(0.9 * 80 / 20)
    assert runs_per_gpu(plan.runs, [], devices)[0] == 1           # nothing measured: one per GPU
    small = [fake_record(dataset, "ud", "cuda:0", 10, 1.0, peak=2**30)]
    assert runs_per_gpu(plan.runs, small, devices)[0] == 4        # memory would allow 72: capped
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert runs_per_gpu(plan.runs, records, devices)[0] == 2      # but not more processes than cores per GPU


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_keep_freed_memory_applies_on_glibc():
    assert keep_freed_memory()


def test_cpu_runs_at_once_follow_threads_per_run(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 8)
    runs = [SimpleNamespace(run_id=f"run-{i}") for i in range(10)]
    assert make_execution(ExecutionRequest(device="cpu"), runs, [])[0].jobs == 1          # one run, all cores
    execution, how = make_execution(ExecutionRequest(device="cpu", threads=2), runs, [])
    assert execution.jobs == 4 and execution.threads == 2 and "8 cores / --threads 2" in how
    assert make_execution(ExecutionRequest(device="cpu", threads=16), runs, [])[0].jobs == 1
    assert make_execution(ExecutionRequest(device="cpu", threads=1, jobs=3), runs, [])[0].jobs == 3  # --jobs wins
    execution, how = make_execution(ExecutionRequest(device="cpu", threads=1), runs[:1], [])
    assert execution.jobs == 1 and "1 run(s) to train" in how  # one run trains in this process, not a worker
    finished = [{"run_id": f"run-{i}"} for i in range(9)]       # a resumed grid with one run left
    assert make_execution(ExecutionRequest(device="cpu", threads=1), runs, finished)[0].jobs == 1


def test_execution_requests_are_checked(toy_dir):
    execution, how = make_execution(ExecutionRequest(device="cpu", jobs=3), [], [])
    assert execution.jobs == 3 and execution.devices == ("cpu",) and "--jobs" in how
    with pytest.raises(RuntimeError, match="--gpus"):
        make_execution(ExecutionRequest(device="cpu", gpus="0"), [], [])
    with pytest.raises(RuntimeError, match="--gpus applies to local runs"):
        make_execution(ExecutionRequest(backend="dask", gpus="0"), [], [])
    with pytest.raises(RuntimeError, match="--jobs must be at least 1"):
        make_execution(ExecutionRequest(jobs=0), [], [])


# backend -> (the module it needs, the extra that installs it)
DISTRIBUTED = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}


@pytest.mark.parametrize("backend", DISTRIBUTED)
def test_distributed_backend_gives_the_sequential_records(backend, toy_dir, tmp_path, reference):
    module, extra = DISTRIBUTED[backend]
    pytest.importorskip(module, reason=f"{module} is an optional extra (lwbench[{extra}])")
    plan = plan_grid(toy_cells(toy_dir), SEEDS)
    outcome = run_grid(plan, tmp_path, Execution(jobs=2, backend=backend, remote_device="cpu", threads=1, devices=()),
                       **QUIET)
    assert {run_id: comparable(r) for run_id, r in outcome.records.items()} == reference


@pytest.mark.parametrize("backend", DISTRIBUTED)
def test_missing_backend_is_a_clear_error(backend, toy_dir, tmp_path, monkeypatch):
    module, extra = DISTRIBUTED[backend]
    monkeypatch.setitem(sys.modules, module, None)   # import fails as if it were not installed
    plan = plan_grid(toy_cells(toy_dir), [1])
    with pytest.raises(RuntimeError, match=rf"pip install 'lwbench\[{extra}\]'"):
        run_grid(plan, tmp_path, Execution(jobs=1, backend=backend, devices=()), **QUIET)


def test_cell_overrides_reach_the_run(toy_dir):
    plan = plan_grid([Cell(str(toy_dir), "ud", "none", {"ud": {"dim": 16}})], [5])
    (run,) = plan.runs
    assert run.spec.options["dim"] == 16 and run.spec.seed == 5 and run.cell.budget == "none"


def test_an_unbudgeted_run_under_another_budget_is_copied_not_trained(toy_dir, tmp_path, reference, monkeypatch):
    """UD ignores the budget: its runs under another budget or accounting reuse the record it has (the same
    numbers, the run's own budget, ``adopted_from`` naming the source); another trainer setting is not a twin."""
    plan = plan_grid(toy_cells(toy_dir), SEEDS)
    first = run_grid(plan, tmp_path, Execution(jobs=1, threads=1), **QUIET)
    trained = []
    real = workers.execute_task
    monkeypatch.setattr("lwbench.grid.run.execute_task", lambda run, *a, **k: trained.append(run.run_id) or real(run, *a, **k))
    other = [dataclasses.replace(cell, budget="2%", accounting="storage") for cell in toy_cells(toy_dir)]
    plan = plan_grid(other, SEEDS)
    assert {r.run_id for r in plan.unique_runs()}.isdisjoint(first.records)   # other configurations...
    outcome = run_grid(plan, tmp_path, Execution(jobs=1, threads=1), **QUIET)
    assert trained == [] and outcome.reused == 2 and not outcome.failures   # ...but nothing trained
    for run in plan.unique_runs():
        record = outcome.records[run.run_id]
        source = first.records[record["adopted_from"]["run_id"]]
        assert record["seed"] == source["seed"] and record["metrics"] == source["metrics"]
        assert config_hash(record["config"]) == record["config_hash"] == run.spec.config_hash
        assert record["budget"]["text"] == "2%" and record["budget"]["accounting"] == "storage"
        assert not record["budget"]["applies"] and record["budget"]["fraction"] is None
        assert (tmp_path / "runs" / record["per_user_file"]).is_file()
    other_lr = plan_grid(expand([str(toy_dir)], ["ud"], ["2%"], overrides={"ud": {"dim": 8},
                                                                         "trainer": {**TRAINER, "lr": 0.01}}), SEEDS)
    assert configuration_twins(other_lr.unique_runs(), tmp_path) == {}


def test_a_budgeted_run_whose_options_resolve_alike_under_another_budget_is_copied(toy_dir, tmp_path, monkeypatch):
    """QR stores float32 values only, so at 10% of the parameters and at 10% of the float32 bytes both budgets
    resolve to the same buckets: the second is copied (with its own budget and the share of it stored), while QR
    at 20%, other buckets, is not a twin."""
    cells = expand([str(toy_dir)], ["qr"], ["10%"], overrides={"trainer": {**TRAINER, "max_epochs": 2}})
    first = run_grid(plan_grid(cells, SEEDS[:1]), tmp_path, Execution(jobs=1, threads=1), **QUIET)
    (source,) = first.records.values()
    trained = []
    real = workers.execute_task
    monkeypatch.setattr("lwbench.grid.run.execute_task", lambda run, *a, **k: trained.append(run.run_id) or real(run, *a, **k))
    storage = plan_grid([dataclasses.replace(cell, accounting="storage") for cell in cells], SEEDS[:1])
    (run,) = storage.unique_runs()
    assert run.spec.options == source["config"]["method"]["options"] and run.run_id != source["run_id"]
    plan_text = describe_plan(storage, tmp_path, load_records(tmp_path), Execution(jobs=1, threads=1))
    assert "plan: 1 runs (1 reused from" in plan_text and "0 to train" in plan_text   # --plan counts the copy
    (record,) = run_grid(storage, tmp_path, Execution(jobs=1, threads=1), **QUIET).records.values()
    assert trained == [] and record["metrics"] == source["metrics"]
    assert record["adopted_from"]["run_id"] == source["run_id"] and "resolves qr's options alike" in \
        record["adopted_from"]["why"]
    assert record["budget"]["accounting"] == "storage" and record["budget"]["applies"] and record["within_budget"]
    assert record["budget"]["fraction"] == source["param_count"]["storage_bytes"] / run.spec.budget.limit <= 1
    larger = plan_grid(expand([str(toy_dir)], ["qr"], ["20%"], overrides={"trainer": {**TRAINER, "max_epochs": 2}}),
                       SEEDS[:1])
    assert len(larger.unique_runs()) == 1 and configuration_twins(larger.unique_runs(), tmp_path) == {}
