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
    result = run(["--methods", "ud,toyhash", "--dataset", str(toy_dir), "--budget", "1000", "--plan"],
                 tmp_path, plugin_dir)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    by_method = {r["method"]: r for r in plan["runs"]}
    assert by_method["toyhash"]["options"]["rows"] == 125
    assert by_method["toyhash"]["params"]["table3"] == 1000 and by_method["toyhash"]["budget_fraction"] == 1.0
    assert by_method["ud"]["budget"]["applies"] is False and "ignores the budget" in by_method["ud"]["budget"]["note"]


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


@pytest.mark.parametrize("flag", ["--datasets", "--methods", "--budgets"])
def test_a_grid_with_an_empty_axis_is_an_error(tmp_path, run, flag):
    result = run(["grid", flag, " ,", "--plan"], tmp_path)
    assert result.returncode == 2 and f"{flag} is empty" in result.stderr
