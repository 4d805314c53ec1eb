"""Faults a careful user or an attacker meets (issue 13): short runs, planted and corrupt files, impossible
settings, divergence, concurrent commands, killed grids, unusable output folders. Each case ends in a
result or in a one-line error that names what to change."""
import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import assert_same_outcome
from test_trainer import Recorder, SharedFirstStage, TwoStageDummy

from lwbench import files
from lwbench.cli import main
from lwbench.config import TrainerConfig
from lwbench.files import OutputError, atomic_write_bytes
from lwbench.options import resolve
from lwbench.plugin import FIXED, UPDATE, Stage
from lwbench.records import RecordError, find_record, load_records
from lwbench.records import per_user as per_user_frame
from lwbench.registry import get_method, register
from lwbench.training.persistence import FORMAT, CheckpointError, atomic_torch_save
from lwbench.training.trainer import CheckpointResult, DivergedError, Trainer, loss_warnings

ROOT = Path(__file__).resolve().parents[1]
CFG = TrainerConfig(max_epochs=6, eval_every=1, patience_fixed=2, patience_update=2, batch_size=2048, lr=5e-3,
                    layers=2, checkpoint_seconds=0)


def trainer_for(method, data, folder, config=CFG, seed=5, cache=None):
    return Trainer(method, resolve(method), data, config, seed=seed, device="cpu", work_dir=folder,
                   cache_dir=cache or folder.parent / "cache", show_progress=False)


# --- 1. short runs ------------------------------------------------------------------------------------

def test_a_run_shorter_than_the_evaluation_interval_reports_trained_weights(toy, tmp_path):
    """--epochs 3 with eval_every 5: the only scheduled validation is epoch 0 (untrained); the final
    weights are validated too, and they are what the run reports."""
    config = TrainerConfig(max_epochs=3, eval_every=5, batch_size=2048, layers=2, lr=5e-3)
    result = trainer_for(get_method("ud"), toy, tmp_path / "short", config).fit()
    assert [h["epoch"] for h in result.history if "valid" in h] == [0, 3]
    assert result.reported_checkpoint.epoch == 3


# --- 2. nothing is unpickled ----------------------------------------------------------------------------

class Planted:
    """A pickle that creates ``marker`` when unpickled (what an attacker's code would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "schedule": Planted(marker)}, path)


def test_a_planted_resume_file_runs_nothing_and_is_set_aside(toy, tmp_path, caplog):
    reference = trainer_for(TwoStageDummy(), toy, tmp_path / "reference").fit()
    marker, work = tmp_path / "pwned", tmp_path / "run"
    plant(work / "last.pt", marker)
    with caplog.at_level(logging.WARNING, logger="lwbench"):
        resumed = trainer_for(TwoStageDummy(), toy, work).fit()
    assert not marker.exists()
    assert (work / "last.pt.corrupt").exists()
    assert any(str(work / "last.pt") in r.getMessage() and "set aside" in r.getMessage() for r in caplog.records)
    assert_same_outcome(resumed, reference)   # started again from scratch: the same result


def test_a_planted_best_checkpoint_runs_nothing_and_is_named(toy, tmp_path):
    trainer = trainer_for(TwoStageDummy(), toy, tmp_path / "run")
    trainer.fit()
    marker, best = tmp_path / "pwned", tmp_path / "run" / "best-main-update.pt"
    plant(best, marker)
    with pytest.raises(CheckpointError, match=str(best)):
        trainer.files.load_best("main", "update")
    assert not marker.exists()


def test_a_planted_shared_stage_outcome_runs_nothing_and_the_stage_is_trained_again(toy, tmp_path, caplog):
    method = SharedFirstStage()
    first = trainer_for(method, toy, tmp_path / "run1", seed=1).fit()
    outcome = tmp_path / "cache" / "stages" / first.shared_stages["pre"] / "outcome.pt"
    assert outcome.exists()
    marker = tmp_path / "pwned"
    plant(outcome, marker)
    with caplog.at_level(logging.WARNING, logger="lwbench"):
        again = trainer_for(method, toy, tmp_path / "run1b", seed=1).fit()
    assert not marker.exists() and outcome.with_name("outcome.pt.corrupt").exists()
    assert any(str(outcome) in r.getMessage() for r in caplog.records)
    assert_same_outcome(again, first)


def test_checkpoints_load_with_weights_only(toy, tmp_path, monkeypatch):
    """Every file the trainer writes loads under weights_only=True; results round-trip exactly."""
    written = []
    original = atomic_torch_save
    monkeypatch.setattr("lwbench.training.persistence.atomic_torch_save",
                        lambda path, obj: (written.append(Path(path)), original(path, obj)))
    result = trainer_for(TwoStageDummy(), toy, tmp_path / "run").fit()
    assert {p.name for p in written} >= {"last.pt", "best-warm-single.pt", "best-main-fixed.pt"}
    for path in set(written):
        if path.exists():
            torch.load(path, weights_only=True)
    checkpoint = result.reported_checkpoint
    back = CheckpointResult.from_state(checkpoint.to_state())
    pd.testing.assert_frame_equal(back.test_per_user, checkpoint.test_per_user, check_exact=True)


def test_a_truncated_resume_file_is_set_aside_and_the_run_restarts(toy, tmp_path):
    reference = trainer_for(TwoStageDummy(), toy, tmp_path / "reference").fit()
    work = tmp_path / "run"
    work.mkdir()
    (work / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    assert_same_outcome(trainer_for(TwoStageDummy(), toy, work).fit(), reference)
    assert (work / "last.pt.corrupt").read_bytes() == b"PK\x03\x04 truncated"


# --- 3. impossible settings and divergence ----------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["--set", "trainer.batch_size=0"], "trainer.batch_size must be at least 1"),
    (["--set", "trainer.eval_every=0"], "trainer.eval_every must be at least 1"),
    (["--set", "trainer.patience_update=0"], "trainer.patience_update must be at least 1"),
    (["--set", "trainer.lr=1e9"], "trainer.lr must be at most 1"),
    (["--set", "trainer.lr=0"], "greater than 0"),
    (["--set", "trainer.layers=-2"], "trainer.layers must be at least 0"),
    (["--set", "trainer.n_negatives=0"], "trainer.n_negatives must be at least 1"),
    (["--set", "trainer.ks=[]"], "trainer.ks must be a non-empty list"),
    (["--set", "trainer.ks=10,20"], "trainer.early_stop_metric must be one of ndcg@10"),
    (["--set", "ud.dim=0"], "ud.dim must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--split-seed", "-1"], "--split-seed must be at least 0"),
    (["--methods", ""], "--methods is empty"),
])
def test_impossible_settings_are_one_line_errors_naming_the_option(args, named, tmp_path, capsys):
    """Each is refused while the runs are planned, before any dataset is split or any run trains."""
    assert main(["--device", "cpu", "--out", str(tmp_path / "out"), "--no-progress", *args]) == 2
    error = capsys.readouterr().err
    assert named in error and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "out" / "runs").exists()


def test_a_growing_loss_fails_the_run_as_diverged(toy, tmp_path, monkeypatch):
    original = Trainer.train_epoch

    def exploding(self, stage, phase, epoch, cfg):
        loss, stop = original(self, stage, phase, epoch, cfg)
        return loss * 10.0 ** (2 * epoch), stop

    monkeypatch.setattr(Trainer, "train_epoch", exploding)
    with pytest.raises(DivergedError, match=r"diverged: training loss grew .* lower trainer.lr \(now 0.005\)"):
        trainer_for(get_method("ud"), toy, tmp_path / "run").fit()


def test_validation_collapsing_below_epoch_0_fails_the_run_as_diverged(toy, tmp_path, monkeypatch):
    original = Trainer._evaluate

    def collapsing(self, split, schedule):
        frame = original(self, split, schedule)
        return frame if schedule.epoch == 0 else frame * 0.01

    monkeypatch.setattr(Trainer, "_evaluate", collapsing)
    with pytest.raises(DivergedError, match="diverged: validation ndcg@5 fell from"):
        trainer_for(get_method("ud"), toy, tmp_path / "run").fit()


def test_one_low_last_validation_is_not_divergence(toy, tmp_path, monkeypatch):
    """A smoke run's last validation at chance level (e.g. just after an assignment refresh) is noise, not
    divergence: only a stage that never comes back within a tenth of epoch 0 fails."""
    original = Trainer._evaluate

    def last_one_low(self, split, schedule):
        frame = original(self, split, schedule)
        return frame * 0.0 if split == "valid" and schedule.epoch == CFG.max_epochs else frame

    monkeypatch.setattr(Trainer, "_evaluate", last_one_low)
    config = CFG.replace(patience_update=100)     # the stage runs to max_epochs and validates there
    result = trainer_for(get_method("ud"), toy, tmp_path / "run", config).fit()
    assert result.history[-1]["epoch"] == CFG.max_epochs and "valid" in result.history[-1]
    assert result.reported_checkpoint.epoch < CFG.max_epochs


# --- hand-off (issue 11, item 4) --------------------------------------------------------------------------

class EndsCoarseEarly(Recorder):
    """A hook that ends the first stage after one epoch, while it is still in its FIXED phase."""

    def end_epoch(self, stage, epoch):
        return stage.name == "coarse"


@register
class ShortFirstStage(TwoStageDummy):
    """A two-phase first stage that hands its best checkpoint to a second stage."""

    name = "test-short-first-stage"

    def stages(self, options):
        return [Stage("coarse", two_phase=True, reported=False), Stage("fine", start_from_best=True)]


@register
class HookEndsFirstStage(ShortFirstStage):
    name = "test-hook-ends-first-stage"

    def build(self, ctx):
        return EndsCoarseEarly(ctx)


def test_an_epoch_cap_leaves_one_epoch_to_each_later_phase(toy, tmp_path, caplog):
    config = CFG.replace(max_epochs=2, patience_fixed=10)   # patience alone would keep coarse in FIXED
    with caplog.at_level(logging.WARNING, logger="lwbench"):
        trainer = trainer_for(ShortFirstStage(), toy, tmp_path / "run", config)
        result = trainer.fit()
    trained = [entry["phase"] for entry in result.history if entry["stage"] == "coarse" and "loss" in entry]
    assert trained == [FIXED, UPDATE]
    validations = [entry for entry in result.history if "valid" in entry]
    last_coarse = [entry for entry in validations if entry["stage"] == "coarse"][-1]
    first_fine = [entry for entry in validations if entry["stage"] == "fine"][0]
    assert last_coarse["phase"] == UPDATE and first_fine["valid"] == last_coarse["valid"]  # handed on from UPDATE
    assert any("leaves its fixed phase at epoch 1" in r.getMessage() for r in caplog.records)


def test_a_hand_off_from_a_phase_never_reached_is_an_error_unless_allowed(toy, tmp_path, caplog):
    with pytest.raises(RuntimeError, match=r"stage 'coarse' saved no checkpoint of its update phase \(.*"
                                           r"best-coarse-update.pt\).*allow_handoff_fallback"):
        trainer_for(HookEndsFirstStage(), toy, tmp_path / "strict").fit()
    with caplog.at_level(logging.WARNING, logger="lwbench"):
        result = trainer_for(HookEndsFirstStage(), toy, tmp_path / "lenient",
                             CFG.replace(allow_handoff_fallback=True)).fit()
    assert "fine/single" in result.checkpoints
    assert any("never reached its update phase" in r.getMessage() and FIXED in r.getMessage()
               for r in caplog.records)


def test_reproduce_quick_allows_the_hand_off_fallback_in_every_planned_run():
    """Three quick epochs rarely reach C2F's UPDATE phase, so every quick run may hand on its FIXED best;
    full runs may not."""
    from lwbench.grid.plan import plan_grid
    from lwbench.grid.reproduce import with_user_overrides
    from lwbench.reports.targets import get_target
    cells = get_target("table4").cells(["synthetic"], ["c2f"])
    for quick in (True, False):
        runs = plan_grid([with_user_overrides(c, {}, quick) for c in cells], [2024]).unique_runs()
        assert runs and all(run.spec.trainer.allow_handoff_fallback is quick for run in runs)


# --- 5. locks, temp files, corrupt state, killed grids ----------------------------------------------------

def test_concurrent_writers_of_one_checkpoint_never_collide(tmp_path):
    path, errors = tmp_path / "last.pt", []
    state = {"model": {"w": torch.randn(64, 64)}}

    def write():
        try:
            for _ in range(30):
                atomic_torch_save(path, state)
        except Exception as exc:   # the fixed temp name lost races: FileNotFoundError on os.replace
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and torch.load(path, weights_only=True)["format"] == FORMAT
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]   # no temp file left


def run_command(toy_dir, out, *extra):
    return [sys.executable, str(ROOT / "run_bench.py"), "--dataset", str(toy_dir), "--methods", "ud",
            "--set", "ud.dim=8", "--epochs", "3", "--set", "trainer.batch_size=2048", "--device", "cpu",
            "--threads", "1", "--no-progress", "--out", str(out), *extra]


def test_two_identical_commands_on_one_out_train_the_run_once(toy_dir, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, LWBENCH_OFFLINE="1")
    processes = [subprocess.Popen(run_command(toy_dir, out), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    (run_id,) = [p.stem for p in (out / "runs").glob("*.json")]
    assert (out / "logs" / f"{run_id}.log").read_text().count("training ") == 1
    waited = [err for _, err in outputs if "record exists" in err]
    assert len(waited) == 1 and run_id in waited[0]


WORKER_SCRIPT = """
import os, sys, time
from joblib import Parallel, delayed, parallel_config
from lwbench.grid.workers import exit_with_parent

def task(folder, parent):
    exit_with_parent(parent, interval=0.1)
    open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(120)

with parallel_config(backend="loky"):
    Parallel(n_jobs=2)(delayed(task)(sys.argv[1], os.getpid()) for _ in range(4))
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()


def test_killing_a_grid_leaves_no_worker_running(tmp_path):
    folder = tmp_path / "pids"
    folder.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(folder)], cwd=ROOT)
    deadline = time.time() + 120
    while len(list(folder.iterdir())) < 2:
        assert time.time() < deadline and parent.poll() is None
        time.sleep(0.05)
    workers = [int(p.name) for p in folder.iterdir()]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    assert len(list(folder.iterdir())) == 2   # no queued task started after the kill


def test_a_missing_or_truncated_per_user_file_reruns_the_run_and_report_names_it(toy_dir, tmp_path, caplog):
    out = tmp_path / "out"
    args = ["--dataset", str(toy_dir), "--set", "ud.dim=8", "--epochs", "1", "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert main(args) == 0
    (record,) = load_records(out)
    per_user = out / "runs" / record["per_user_file"]
    per_user.write_bytes(per_user.read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="lwbench"):
        assert find_record(out, record["run_id"], record["config_hash"]) is None
    assert any(str(per_user) in r.getMessage() for r in caplog.records)
    with pytest.raises(RecordError, match=f"{per_user}: per-user file missing or unreadable"):
        per_user_frame(out, record)   # what report reads: the error names the file
    per_user.unlink()
    assert main(args) == 0
    assert find_record(out, record["run_id"], record["config_hash"]) is not None


# --- 6. output folders ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_out", [
    lambda tmp: (tmp / "a-file").write_text("x") and tmp / "a-file",
    lambda tmp: tmp / ("x" * 300),
])
def test_an_unusable_out_is_a_one_line_error_naming_it(make_out, tmp_path, capsys):
    out = make_out(tmp_path)
    assert main(["--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(out) in error and len(error.strip().splitlines()) == 1, error


def test_a_read_only_out_is_a_one_line_error_naming_it(tmp_path, capsys, monkeypatch):
    """(Simulated: the tests may run as root, whom a read-only mode does not stop.)"""
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    out = tmp_path / "shared"
    assert main(["--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"cannot write {out}: Permission denied" in error and len(error.strip().splitlines()) == 1, error


def test_a_full_disk_is_an_error_naming_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'record.json'}: No space left on device"):
        atomic_write_bytes(tmp_path / "record.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_written_files_respect_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "UMASK", 0o022)
    atomic_write_bytes(tmp_path / "record.json", b"{}")
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o644


def test_a_dip_below_epoch_0_within_the_first_patience_window_is_not_divergence(toy, tmp_path, monkeypatch):
    """One trained epoch below the epoch-0 validation is how a real smoke run starts (propagating untrained
    meta-embeddings already ranks well): the run reports its best checkpoint, it does not fail."""
    original = Trainer._evaluate

    def dipping(self, split, schedule):
        frame = original(self, split, schedule)
        return frame if schedule.epoch == 0 else frame * 0.01

    monkeypatch.setattr(Trainer, "_evaluate", dipping)
    result = trainer_for(get_method("ud"), toy, tmp_path / "run", CFG.replace(max_epochs=1)).fit()
    assert result.reported_checkpoint.epoch == 0


def test_a_rising_loss_is_warned_about_and_recorded(toy, tmp_path, monkeypatch, caplog):
    original = Trainer.train_epoch

    def rising(self, stage, phase, epoch, cfg):
        loss, stop = original(self, stage, phase, epoch, cfg)
        return loss * (1 + epoch), stop    # doubles by the second epoch: short of divergence

    monkeypatch.setattr(Trainer, "train_epoch", rising)
    with caplog.at_level(logging.WARNING):
        result = trainer_for(get_method("ud"), toy, tmp_path / "run", CFG.replace(patience_update=100)).fit()
    assert caplog.text.count("training loss rose from") == 1
    warnings = loss_warnings(result.history)
    assert len(warnings) == 1 and "stage 'train'" in warnings[0] and "learning rate may be too high" in warnings[0]
    assert loss_warnings([{"stage": "s", "loss": 1.0}, {"stage": "s", "loss": 1.4}]) == []


SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "lastfm").is_dir(), reason="lastfm is not in ../shared/datasets")
def test_a_one_epoch_smoke_run_of_c2f_on_real_data_is_not_divergence(tmp_path, capsys):
    """The real case: on Last.fm the untrained coarse meta-embeddings, propagated, rank better at epoch 0
    (ndcg@5 0.0022) than after one epoch at the official learning rate (0.0001); with --epochs 1 the run
    reports its best checkpoint instead of failing as diverged."""
    assert main(["--methods", "c2f", "--dataset", "lastfm", "--data-dir", str(SHARED), "--epochs", "1",
                 "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    (record,) = load_records(tmp_path / "out")
    coarse = [h["valid"]["ndcg@5"] for h in record["history"] if h["stage"] == "coarse" and "valid" in h]
    assert len(coarse) >= 2 and max(coarse[1:]) * 10 < coarse[0]   # the dip the old rule called divergence


# --- issue 20: interrupts, planted log links ------------------------------------------------------------

def test_ctrl_c_prints_one_line_naming_the_run_and_epoch_and_exits_130(tmp_path):
    """SIGINT (Ctrl-C) to a short synthetic run once it has trained an epoch: no traceback, one line saying
    where it stopped and that the same command resumes it, exit status 130."""
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "run_bench.py"), "--methods", "ud", "--epochs", "50", "--out", str(out),
               "--no-progress", "--device", "cpu", "--threads", "1", "--set", "trainer.eval_every=1",
               "--set", "trainer.checkpoint_seconds=0"]
    # As a terminal's Ctrl-C reaches it: with SIGINT's default disposition, even where the suite itself runs
    # with SIGINT ignored (a shell's background job), which the child would otherwise inherit.
    process = subprocess.Popen(command, env=dict(os.environ, LWBENCH_OFFLINE="1"), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            line = process.stderr.readline()
            assert line, f"the run ended before its first epoch: {''.join(seen)}"
            seen.append(line)
            if "epoch 1: loss" in line:   # validated after its first trained epoch
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    err = "".join(seen) + rest
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    (run_id,) = [p.name for p in (out / "work").iterdir()]
    assert last.startswith(f"run_bench.py: interrupted in run {run_id}, stage train after epoch "), last
    assert "of at most 50; the same command resumes it from its last checkpoint" in last
    assert str(out / "work" / run_id / "last.pt") in last and (out / "work" / run_id / "last.pt").exists()


def test_a_symlink_planted_as_a_run_log_is_refused_and_its_target_untouched(toy_dir, tmp_path, capsys):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    args = ["--dataset", str(toy_dir), "--set", "ud.dim=8", "--epochs", "1", "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert main([*args, "--plan", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    link = out / "logs" / f"{run['run_id']}.log"
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    assert main(args) == 2
    error = capsys.readouterr().err
    (line,) = [line for line in error.splitlines() if "error:" in line]   # after the plan, one line
    assert f"{link} is a symbolic link (to {victim})" in line and "remove it" in line
    assert line == error.strip().splitlines()[-1] and "Traceback" not in error
    assert victim.read_text() == "keep me\n" and link.is_symlink()
    assert not (out / "runs" / f"{run['run_id']}.json").exists()
