"""End-to-end: the command line as a user types it, on a toy dataset folder. The commands run in-process
through ``lwbench.cli.main`` (fast); one smoke test runs ``run_bench.py`` as a separate process."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lwbench import registry
from lwbench.cli import main
from lwbench.openmp import apply_wait_policy_default

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
from torch import nn
import torch
from lwbench.budget import BudgetError, ParamCount
from lwbench.options import TO_BUDGET, Option
from lwbench.plugin import EmbeddingModule, InferenceState, Method
from lwbench.registry import register


class Hashed(EmbeddingModule):
    def __init__(self, ctx, rows):
        super().__init__(ctx)
        self.rows = rows
        self.table = nn.Parameter(torch.randn(rows, 8) * 0.1)

    def layer0(self):
        return self.table[torch.arange(self.n_entities) % self.rows]

    def inference_state(self):
        return InferenceState(values={"table": self.table})


@register
class ToyHash(Method):
    name = "toyhash"
    options = {"rows": Option(0, min=1, special=TO_BUDGET, help="rows of the shared table")}

    def configure(self, options, budget, stats):
        rows = budget // 8
        if rows < 4:
            raise BudgetError(f"toyhash needs a budget of at least 32 parameters, got {budget}")
        return {**options, "rows": min(rows, stats.n_entities)}

    def planned_count(self, options, stats):
        return ParamCount(table3=options["rows"] * 8, float_values=options["rows"] * 8,
                          value_bytes=4 * options["rows"] * 8, index_bytes=0)

    def build(self, ctx):
        return Hashed(ctx, ctx.options["rows"])
'''


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toyhash.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def run(capsys, monkeypatch, isolated_registry):
    """``run(args, cwd, plugins=None)``: ``main(args)`` in this process, as ``run_bench.py`` would run it."""
    def invoke(args, cwd, plugins=None):
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("LWBENCH_OFFLINE", "1")
        monkeypatch.setattr(sys, "argv", ["run_bench.py"])
        if plugins:
            monkeypatch.setenv("LWBENCH_PLUGINS", str(plugins))
            monkeypatch.setattr(registry, "_discovered", False)
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return invoke


def test_run_bench_py_runs_as_a_separate_process(tmp_path, toy_dir):
    """The one subprocess smoke test: the checkout's entry script, a fresh interpreter, one epoch."""
    result = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "--methods", "ud", "--dataset",
                             str(toy_dir), "--epochs", "1", "--device", "cpu", "--set", "ud.dim=8",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True,
                            env=dict(os.environ, LWBENCH_OFFLINE="1"), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "ud-8" in result.stdout and len(list((tmp_path / "out" / "runs").glob("*.json"))) == 1
    assert "run_bench.py: " in result.stderr     # messages carry the name the tool was invoked by


def test_the_wait_policy_default_leaves_what_the_user_set():
    default = {"GOMP_SPINCOUNT": "1000", "OMP_WAIT_POLICY": "PASSIVE"}
    assert apply_wait_policy_default(environ := {"PATH": "/bin"}) == default and environ == {"PATH": "/bin", **default}
    for user in ({"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "300000"}, {"KMP_BLOCKTIME": "0"}):
        assert apply_wait_policy_default(environ := dict(user)) == {} and environ == user


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_the_command_sets_the_wait_policy_for_the_processes_it_starts(tmp_path, toy_dir, run, monkeypatch, user):
    """Grid workers (loky, a local dask cluster) inherit this process's environment."""
    for name in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    if user is not None:
        monkeypatch.setenv("OMP_WAIT_POLICY", user)
    assert run(["--methods", "ud", "--dataset", str(toy_dir), "--plan"], tmp_path).returncode == 0
    assert os.environ["OMP_WAIT_POLICY"] == (user or "PASSIVE")
    assert os.environ.get("GOMP_SPINCOUNT") == (None if user else "1000")


@pytest.mark.parametrize("user, spin_count", [({}, "1000"), ({"OMP_WAIT_POLICY": "passive"}, "0"),
                                              ({"GOMP_SPINCOUNT": "300000"}, "300000")])
def test_the_openmp_runtime_of_a_command_sees_the_wait_policy(tmp_path, toy_dir, user, spin_count):
    """Set before torch loads the OpenMP runtime, which reads it once: libgomp reports what it read."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    result = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "--methods", "ud", "--dataset", str(toy_dir),
                             "--plan"], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
                            env={**env, **user, "OMP_DISPLAY_ENV": "verbose", "LWBENCH_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    if "GOMP_SPINCOUNT = " not in result.stderr:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp")
    assert f"GOMP_SPINCOUNT = '{spin_count}'" in result.stderr


def test_end_to_end_run_writes_records_and_skips_repeats(tmp_path, toy_dir, run):
    args = ["--methods", "ud", "--dataset", str(toy_dir), "--seeds", "1,2", "--epochs", "3", "--device", "cpu",
            "--out", str(tmp_path / "out"), "--set", "trainer.eval_every=1", "--set", "ud.dim=16"]
    first = run(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "ud-16" in first.stdout and "ndcg@20" in first.stdout
    records = sorted((tmp_path / "out" / "runs").glob("*.json"))
    assert len(records) == 2
    record = json.loads(records[0].read_text())
    for key in ("method", "dataset", "seed", "budget", "params", "bytes", "metrics", "config", "config_hash",
                "epochs_run", "train_seconds", "eval_seconds", "peak_memory_bytes", "versions", "device_name",
                "code_version"):
        assert key in record, key
    stats = record["config"]["dataset"]["stats"]
    assert record["params"] == (stats["n_users"] + stats["n_items"]) * 16
    assert set(record["metrics"]["test"]) >= {"ndcg@20", "recall@20", "ndcg@1", "recall@50"}
    assert record["config"]["trainer"]["max_epochs"] == 3 and record["config"]["method"]["options"]["dim"] == 16
    assert record["epochs_run"] == 3 and record["warnings"] == []   # nothing to warn about (e.g. no loss rise)
    assert (tmp_path / "out" / "runs" / record["per_user_file"]).exists()
    second = run(args, tmp_path)
    assert second.returncode == 0
    assert second.stderr.count("record exists (same config hash), skipping") == 2


def test_plan_prints_knobs_params_and_budget(tmp_path, toy_dir, plugin_dir, run):
    result = run(["--methods", "ud,toyhash", "--dataset", str(toy_dir), "--budget", "1000", "--plan", "--json"],
                 tmp_path, plugin_dir)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    by_method = {r["method"]: r for r in plan["runs"]}
    assert by_method["toyhash"]["options"]["rows"] == 125
    assert by_method["toyhash"]["params"]["table3"] == 1000 and by_method["toyhash"]["budget_fraction"] == 1.0
    assert by_method["ud"]["budget"]["applies"] is False and "ignores the budget" in by_method["ud"]["budget"]["note"]


def test_plan_prints_one_line_per_run(tmp_path, toy_dir, plugin_dir, run):
    """Without --json: a header, then per run its id, label, seed, options, #params, budget use and stages."""
    result = run(["--methods", "ud,toyhash", "--dataset", str(toy_dir), "--budget", "1000", "--seeds", "1,2",
                  "--plan"], tmp_path, plugin_dir)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.strip().splitlines()
    assert header.startswith("4 run(s) on toy, device cpu, records to results/toy/runs") and "--plan --json" in header
    assert len(lines) == 4
    toyhash = next(line for line in lines if " toyhash " in line and " seed 2 " in line)
    assert toyhash.split()[0].startswith("toy-toyhash-s2-") and "rows=125" in toyhash
    assert "1,000 params" in toyhash and "budget 1000: 100.0% used" in toyhash
    assert "stages: train (at most 1000 epochs)" in toyhash
    ud = next(line for line in lines if " ud-128 " in line)
    assert "not applied (unbudgeted)" in ud and "dim=128" in ud


def test_the_default_out_is_named_after_the_dataset_and_the_command_says_where_records_went(tmp_path, toy_dir, run):
    result = run(["--dataset", str(toy_dir), "--set", "ud.dim=8", "--epochs", "1", "--device", "cpu",
                  "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "results" / "toy" / "runs").glob("*.json"))) == 1
    assert "records: results/toy/runs (1 run(s), 0 failed)" in result.stdout
    assert "report --out results/toy" in result.stdout


def test_the_cold_and_overlap_choices_are_those_of_the_data_module():
    from lwbench import cli
    from lwbench.data import interactions
    assert (cli.COLD_MODES, cli.OVERLAP_MODES, cli.VALID_MODES) == (interactions.COLD_MODES, interactions.OVERLAP_MODES,
                                                                  interactions.VALID_MODES)


@pytest.mark.parametrize("args", [["--help"], ["report", "--help"], ["compare", "--help"]])
def test_help_imports_neither_torch_nor_the_data_stack(args):
    """--help answers at once (bench/startup.py times it): no torch, numpy, pandas, scipy or methods."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['run_bench.py', *{args!r}]\n"
            "try:\n"
            f"    runpy.run_path({str(ROOT / 'run_bench.py')!r}, run_name='__main__')\n"
            "except SystemExit as done:\n"
            "    assert done.code in (0, None), done.code\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'pandas', 'scipy', 'lwbench.methods') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_reproduce_help_still_lists_the_targets(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    targets = capsys.readouterr().out.split("\ntargets:\n", 1)[1]
    assert "  table3        every method at the 500-bucket budget (Table 3)" in targets


def test_list_shows_every_method_with_its_description_including_plugins(tmp_path, plugin_dir, run):
    result = run(["--list"], tmp_path, plugin_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    from lwbench.registry import get_method, method_names
    for name in [*(n for n in method_names() if not n.startswith("test-")), "toyhash"]:  # test-*: in-process fixtures
        assert any(line.split()[:1] == [name] for line in lines), name
    described = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert get_method("qr").description in described["qr"] and "[unbudgeted]" in described["ud"]
    assert "datasets: amazon-beauty, amazon-book, gowalla, lastfm, synthetic, yelp2020" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--methods", "nosuch"], "unknown method 'nosuch'; registered methods: "),
    (["--budget", "lots"], "cannot parse budget 'lots'; accepted forms"),
    (["--methods", "toyhash", "--budget", "20"], "toyhash needs a budget of at least 32"),
    (["--set", "ud.width=3"], "ud has no option 'width'; its options are: dim, init_std"),
    (["--set", "trainer.lr=fast"], "trainer.lr expects a number"),
    (["--seeds", "a,b"], "--seeds 'a,b': expected comma-separated integers"),
    (["--device", "cuda:3"], None),
    (["--device", "tpu"], "--device 'tpu' is not a device lwbench can use; expected auto, cpu, cuda or cuda:N"),
    (["--device", ""], "--device '' is not a device lwbench can use; expected auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "--device 'cuda:x' is not a device lwbench can use"),
])
def test_bad_input_gives_a_clear_error(tmp_path, toy_dir, plugin_dir, args, message, run):
    result = run(["--dataset", str(toy_dir), "--plan", *args], tmp_path, plugin_dir)
    if message is None:  # only an error when no such GPU exists
        import torch
        if torch.cuda.device_count() > 3:
            pytest.skip("this machine has that GPU")
        message = "no CUDA GPU is visible"
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_plugin_folder_is_an_error_naming_it(tmp_path, run):
    result = run(["--list"], tmp_path, tmp_path / "no-such-folder")
    assert result.returncode == 2
    assert f"plugin folder {tmp_path / 'no-such-folder'} (from LWBENCH_PLUGINS) does not exist" in result.stderr


def test_code_version_outside_a_checkout_is_the_installed_version(tmp_path, monkeypatch):
    from importlib.metadata import version

    from lwbench import environment
    assert environment.code_version().split("+")[0].isalnum()     # here: the checkout's commit
    monkeypatch.setattr(environment, "PACKAGE_DIR", tmp_path / "site-packages" / "lwbench")
    environment.code_version.cache_clear()
    try:
        assert environment.code_version() == f"lwbench {version('lwbench')} (installed)"
    finally:
        environment.code_version.cache_clear()


def test_code_version_is_dirty_for_changed_code_not_for_results_written_into_the_checkout(tmp_path, monkeypatch):
    from lwbench import environment

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)
    (tmp_path / "lwbench").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "lwbench" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    monkeypatch.setattr(environment, "PACKAGE_DIR", tmp_path / "lwbench")
    try:
        versions = []
        for changed in ("results/table.md", "lwbench/code.py"):
            (tmp_path / changed).write_text("changed\n")
            environment.code_version.cache_clear()
            versions.append(environment.code_version())
        assert not versions[0].endswith("+dirty") and versions[1].endswith("+dirty")
    finally:
        environment.code_version.cache_clear()


def test_list_verbose_shows_every_option_with_its_default_and_choices(tmp_path, run):
    result = run(["--list", "--verbose"], tmp_path)
    assert result.returncode == 0, result.stderr
    from lwbench.registry import get_method, method_names
    for name in method_names():
        for option in get_method(name).options:
            assert f"      {option} (" in result.stdout, (name, option)
    assert "mode (str, default 'vq', one of vq, sx)" in result.stdout
    assert "dim (int, default 128, at least 1)" in result.stdout


def test_list_verbose_shows_the_trainer_options_with_type_default_and_range(tmp_path, run):
    from dataclasses import fields

    from lwbench.config import TrainerConfig
    result = run(["--list", "--verbose"], tmp_path)
    assert result.returncode == 0, result.stderr
    trainer = result.stdout.split("trainer options (--set trainer.option=value", 1)[1]
    for name in (f.name for f in fields(TrainerConfig)):
        assert f"      {name} (" in trainer, name
    (lr,) = [line for line in trainer.splitlines() if line.startswith("      lr (")]
    assert lr.startswith("      lr (float, default 0.001, at most 1 and greater than 0)") and "Adam learning rate" in lr
    assert "batch_size (int, default 8192, at least 1): " in trainer
    assert "layers (int, default 3, at least 0 and at most 16): " in trainer
    assert "patience_fixed (int, default 5, at least 1): " in trainer
    brief = run(["--list"], tmp_path).stdout
    assert "trainer options (--set trainer.option=value): lr, batch_size, max_epochs" in brief


@pytest.mark.parametrize("flag", ["--datasets", "--methods", "--budgets"])
def test_a_grid_with_an_empty_axis_is_an_error(tmp_path, run, flag):
    result = run(["grid", flag, " ,", "--plan"], tmp_path)
    assert result.returncode == 2 and f"{flag} is empty" in result.stderr


def test_on_a_terminal_every_validation_stays_on_screen_beside_the_bar(tmp_path):
    """Under a pseudo-terminal the trainer shows its bar (leave=False: gone at the stage's end) and still
    writes one line per validation above it, so loss and validation stay in the scrollback."""
    import fcntl
    import pty
    import re
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))   # rows, columns
    command = [sys.executable, str(ROOT / "run_bench.py"), "--methods", "ud", "--epochs", "3", "--set",
               "trainer.eval_every=1", "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "out")]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                               env=dict(os.environ, LWBENCH_OFFLINE="1", TERM="xterm"))
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:        # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    screen = b"".join(chunks).decode(errors="replace")
    assert re.search(r"ud-128 s2024 train: +\d+%", screen), screen      # the bar was drawn on the terminal
    epochs = re.findall(r"ud-128 seed 2024: stage train, phase single, epoch (\d+): loss \S+, valid ndcg@5 "
                        r"[\d.]+ \((?:improved|no gain)\), \S+ s/epoch", screen)
    assert sorted(map(int, epochs)) == [0, 1, 2, 3], screen                # one line per validation


def test_the_plan_marks_a_record_as_existing_only_where_the_run_would_reuse_it(toy_dir, tmp_path, capsys):
    """--plan's "[record exists]" is the run's own check (same configuration hash, usable per-user file), not the
    record file's existence."""
    args = ["--dataset", str(toy_dir), "--set", "ud.dim=8", "--epochs", "1", "--device", "cpu", "--no-progress",
            "--threads", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--plan"]) == 0
    assert "[record exists]" in capsys.readouterr().out
    (per_user,) = (tmp_path / "runs").glob("*.peruser.npz")
    per_user.unlink()                          # the record can no longer be used: the run would train again
    assert main([*args, "--plan"]) == 0
    assert "[record exists]" not in capsys.readouterr().out


@pytest.mark.parametrize("command, patched, said", [
    (["report"], "lwbench.records.per_user_problems", "interrupted; the records are untouched"),
    (["compare", "a", "b"], "lwbench.reports.compare.compare", "interrupted; nothing was written (compare only"),
    (["prepare", "in.csv"], "lwbench.data.prepare.prepare", "interrupted; nothing was written (prepare removes"),
])
def test_ctrl_c_in_a_command_that_trains_nothing_says_what_it_left(command, patched, said, tmp_path, monkeypatch,
                                                                   capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(patched, interrupted)
    assert main([*command, "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert said in err and "checkpoint" not in err and "finished runs" not in err
