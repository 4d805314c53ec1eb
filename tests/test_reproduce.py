"""`run_bench.py reproduce` / `report`: plans, clear errors for missing methods, the real UD runs of
table3 on toy data, regeneration from records, the grids of the C2F targets, and a second study
added from outside lwbench."""
import dataclasses
import json
import math
from importlib.metadata import EntryPoint

import pandas as pd
import pytest

from lwbench.cli import main
from lwbench.grid import reproduce
from lwbench.records import load_records
from lwbench.registry import method_names
from lwbench.reports import targets
from lwbench.reports.targets import build_report, get_target
from lwbench.studies.c2f_paper.targets import C2F_OPTIONS


@pytest.mark.parametrize("target", ["table4", "fig4", "fig5", "fig6"])
def test_targets_name_their_missing_methods(target, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "method_names", lambda: ["ud"])
    assert main(["reproduce", target, "--quick", "--plan"]) == 2
    err = capsys.readouterr().err
    assert f"target {target} needs method(s) c2f, which are not registered (registered: ud)" in err


def test_budget_curve_needs_a_budgeted_method(monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "method_names", lambda: ["ud"])
    assert main(["reproduce", "budget-curve", "--quick", "--plan"]) == 2
    assert "budget-curve needs at least one budgeted method; registered: ud" in capsys.readouterr().err


def test_quick_plan_uses_synthetic_data_and_lists_missing_table3_methods(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "table3", "--quick", "--plan", "--methods", "ud", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "datasets: synthetic; seeds: 2024" in out and "[quick" in out
    assert "plan: 2 runs (0 reused" in out and "estimated: unknown for 2 runs" in out
    assert "not implemented" not in out   # every Table-3 method is registered
    assert not (tmp_path / "runs").exists()  # --plan trains nothing
    # A Table-3 method that is not registered is listed, not silently left out.
    monkeypatch.setattr("lwbench.grid.reproduce.method_names",
                        lambda: [m for m in method_names() if m != "legcf"])
    assert main(["reproduce", "table3", "--quick", "--plan", "--methods", "ud", "--out", str(tmp_path)]) == 0
    assert "not implemented (listed in the table): legcf" in capsys.readouterr().out


def test_table3_on_toy_data_then_reuse_then_report(toy_dir, tmp_path, capsys):
    out, figures = tmp_path / "results", tmp_path / "figures"
    args = ["reproduce", "table3", "--quick", "--datasets", str(toy_dir), "--methods", "ud", "--seeds", "1", "--epochs", "1",
            "--out", str(out), "--figures", str(figures), "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "plan: 2 runs (0 reused" in first
    markdown = (out / "table3.md").read_text()
    assert "| toy | UD-128 | 1 |" in markdown and "| toy | UD-64 | 1 |" in markdown
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert sorted(r["params"] for r in records) == [500 * 64, 500 * 128]
    assert all(r["epochs_run"] == 1 and r["config"]["trainer"]["eval_every"] == 1 for r in records)  # --epochs wins
    manifest = json.loads((out / "grids" / "table3.json").read_text())
    assert {row["run_id"] for row in manifest["rows"]} == {r["run_id"] for r in records}

    assert main(args) == 0  # everything exists: reused, nothing trained
    assert "plan: 2 runs (2 reused" in capsys.readouterr().out
    assert len(list((out / "runs").glob("*.json"))) == 2

    (out / "table3.md").unlink()
    assert main(["report", "--out", str(out), "--figures", str(figures)]) == 0
    assert (out / "table3.md").read_text() == markdown
    assert "ud-128" in (out / "summary.md").read_text()


def test_report_needs_records(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "runs does not exist" in capsys.readouterr().err


def test_c2f_targets_use_the_option_mapping():
    options = set(C2F_OPTIONS.values())
    fig5 = get_target("fig5").cells(["gowalla"], ["c2f"])
    *sweep, released = fig5   # one factor changed per point, and the released configuration they depart from
    assert len(sweep) == 20 and all(len(c.overrides["c2f"]) == 1 and set(c.overrides["c2f"]) <= options for c in sweep)
    assert released.coords["factor"] == "released" and not released.overrides.get("c2f")
    assert {c.overrides["c2f"]["threshold"] for c in fig5 if "threshold" in c.overrides["c2f"]} == {0.5, 1, 3, 5, 10}
    fig4 = get_target("fig4").cells(["gowalla"], ["c2f"])
    assert [c.overrides["c2f"]["ablation"] for c in fig4] == ["none", "A", "B", "C", "D"]
    fig6 = get_target("fig6").cells(["gowalla"], ["c2f"])
    fixed_coarse = [c.overrides["c2f"] for c in fig6 if c.coords["panel"] == "a"]
    assert all(o["coarse_buckets"] == 100 for o in fixed_coarse)
    assert [o["fine_buckets"] for o in fixed_coarse] == [20, 40, 60, 80, 100]
    fixed_total = [c.overrides["c2f"] for c in fig6 if c.coords["panel"] == "b"]
    assert all(o["coarse_buckets"] + o.get("fine_buckets", 0) == 200 for o in fixed_total)


def test_quick_layers_smoke_options_under_the_cell_and_set_over_all():
    """--quick starts from each method's smoke options, but a target's swept value (fig6's m^r) and the
    user's --set win over them."""
    smoke = reproduce.get_method("c2f").smoke_options
    fig6 = get_target("fig6").cells(["synthetic"], ["c2f"])
    swept = next(c for c in fig6 if "fine_buckets" in c.overrides["c2f"])
    quick = reproduce.with_user_overrides(swept, {"c2f": {"gate": 0.3}}, quick=True)
    assert quick.overrides["c2f"]["fine_buckets"] == swept.overrides["c2f"]["fine_buckets"] != smoke["fine_buckets"]
    assert quick.overrides["c2f"]["fine_components"] == smoke["fine_components"]
    assert quick.overrides["c2f"]["gate"] == 0.3
    assert quick.overrides["trainer"] == reproduce.QUICK_TRAINER
    full = reproduce.with_user_overrides(swept, {}, quick=False)
    assert full.overrides == swept.overrides   # real targets never see smoke options


def test_a_study_from_another_package_plans_runs_and_reports(toy_dir, tmp_path, monkeypatch, capsys):
    """tests/fakes.py's study, found through the ``lwbench.studies`` entry-point group as an installed
    package's would be, runs through the same commands as the paper's targets and is rebuilt by
    ``report``: adding a study needs no change to lwbench."""
    monkeypatch.setattr(targets, "_TARGETS", dict(targets.targets()))   # the registry as it was, restored after
    monkeypatch.setattr(targets, "_discovered", False)
    entry = EntryPoint(name="tiny", value="fakes:TINY_STUDY", group=targets.ENTRY_POINT_GROUP)
    monkeypatch.setattr(targets, "entry_points", lambda group: [entry] if group == targets.ENTRY_POINT_GROUP else [])
    assert {"tiny-widths", "table3", "budget-curve"} <= set(targets.targets())

    out, figures = tmp_path / "results", tmp_path / "figures"
    assert main(["reproduce", "tiny-widths", "--quick", "--datasets", str(toy_dir), "--seeds", "1", "--epochs", "1",
                 "--out", str(out), "--figures", str(figures), "--device", "cpu", "--no-progress"]) == 0
    assert "target tiny-widths: UD at two small widths" in capsys.readouterr().out
    records = {r["config"]["method"]["options"]["dim"]: r for r in load_records(out)}
    assert sorted(records) == [8, 16]

    (out / "tiny-widths.csv").unlink()
    written, errors = build_report(out, figures)
    assert errors == []
    assert {out / "tiny-widths.md", out / "tiny-widths.csv", figures / "tiny-widths.png"} <= set(written)
    data = pd.read_csv(out / "tiny-widths.csv")
    assert sorted(data["width"]) == [8, 16] and (data["seeds"] == 1).all()
    for _, row in data.iterrows():
        assert row["ndcg@20:mean"] == pytest.approx(records[row["width"]]["metrics"]["test"]["ndcg@20"])


def test_yelp2020_c2f_runs_use_the_logged_layers_per_seed():
    """The logged Yelp2020 C2F runs (docs/protocol.md §9.3): 3 layers for the coarse stage and fine seeds
    2024/2026, 4 fine layers for seed 2025; Gowalla keeps its card."""
    for name in ("table3", "table4", "fig4", "fig5", "fig6"):
        for cell in (c for c in get_target(name).cells(["yelp2020"], ["c2f"]) if c.method == "c2f"):
            assert cell.overrides_for(2024)["trainer"] == {"layers": 3} == cell.overrides_for(2026)["trainer"]
            assert cell.overrides_for(2025)["c2f"]["fine_layers"] == 4
            assert "fine_layers" not in cell.overrides_for(2024)["c2f"]
    gowalla = get_target("table4").cells(["gowalla"], ["c2f"])[0]
    assert "trainer" not in gowalla.overrides_for(2025) and "fine_layers" not in gowalla.overrides_for(2025)["c2f"]
    # --set wins over a per-seed setting as over every other
    cell = get_target("table4").cells(["yelp2020"], ["c2f"])[0]
    user = reproduce.with_user_overrides(cell, {"c2f": {"fine_layers": 2}}, quick=False)
    assert user.overrides_for(2025)["c2f"]["fine_layers"] == 2


def test_per_seed_overrides_reach_the_runs_the_plan_and_the_manifest(toy_dir, tmp_path, capsys):
    from lwbench.grid.plan import plan_grid
    from lwbench.grid.run import describe_plan
    from lwbench.grid.workers import ExecutionRequest, make_execution
    from lwbench.reports.cell import Cell
    cell = Cell(str(toy_dir), "ud", "none", {"trainer": {"layers": 3}}, {},
                seed_overrides={2025: {"trainer": {"layers": 4}, "ud": {"dim": 32}}})
    plan = plan_grid([cell], [2024, 2025, 2026])
    layers = {run.spec.seed: (run.spec.trainer.layers, run.spec.options["dim"]) for run in plan.runs}
    assert layers == {2024: (3, 128), 2025: (4, 32), 2026: (3, 128)}
    rows = {row["seed"]: row["overrides"] for row in plan.manifest_rows()}
    assert rows[2025] == {"trainer": {"layers": 4}, "ud": {"dim": 32}} and rows[2024] == {"trainer": {"layers": 3}}
    execution, how = make_execution(ExecutionRequest(), plan.unique_runs(), [])
    text = describe_plan(plan, tmp_path, [], execution, how)
    assert "seed 2025: trainer.layers=4" in text and "seed 2025: ud.dim=32" in text and "seed 2024:" not in text


def test_the_c2f_study_names_are_checked_against_the_method(monkeypatch):
    from lwbench.reports.targets import TargetError
    from lwbench.studies.c2f_paper import targets as c2f_targets
    c2f_targets.check_c2f_names.cache_clear()
    c2f_targets.check_c2f_names()                       # the shipped names agree
    monkeypatch.setattr(c2f_targets, "C2F_COARSE_STAGE", "kernel")
    c2f_targets.check_c2f_names.cache_clear()
    with pytest.raises(TargetError, match="first stage 'coarse' .*expects 'kernel'"):
        c2f_targets.c2f_cell("synthetic", {}, {})
    c2f_targets.check_c2f_names.cache_clear()


@pytest.mark.parametrize("curve, table", [("budget-curve", "table3"), ("budget-curve-storage", "table3-storage")])
def test_the_budget_curve_is_made_of_table3s_own_cells(curve, table):
    """The 500-bucket points and the UD references are Table 3's cells (C2F's comparison options and the logged
    Yelp2020 settings per seed included, the table's accounting for UD), with only the curve's coordinates
    added; the other budgets are the same cells at another budget."""
    methods = ["ud", "qr", "c2f"]
    own = get_target(table).cells(["yelp2020"], methods)
    cells = get_target(curve).cells(["yelp2020"], methods)
    for cell in own:
        if cell.method == "ud":
            expected = [dataclasses.replace(cell, coords={"reference": True})]
        else:
            expected = [dataclasses.replace(cell, budget=b, coords={"budget": b, "reference": False})
                        for b in ("1%", "2.5%", "500buckets", "6%", "10%")]
        for e in expected:
            assert cells.count(e) == 1, e
    assert len(cells) == 2 + 2 * 5
    c2f = next(c for c in cells if c.method == "c2f" and c.budget == "500buckets")
    assert c2f.overrides_for(2025)["c2f"]["fine_layers"] == 4 and c2f.overrides_for(2024)["trainer"] == {"layers": 3}


def test_budget_positions_are_shares_of_the_full_table_in_the_budgets_accounting():
    from lwbench.budget import parse_budget
    from lwbench.studies.budget_curve import budget_percent
    stats = {"n_users": 1885, "n_items": 17388}
    for accounting in ("table3", "storage"):
        params = parse_budget("2%", **stats, accounting=accounting)
        record = {"config": {"dataset": {"stats": stats}}, "budget": {"params": params, "accounting": accounting}}
        assert budget_percent(record, "2%") == 2.0
    assert budget_percent(None, "10%") == 10.0 and math.isnan(budget_percent(None, "500buckets"))


def test_reproduce_passes_the_data_options_to_the_plan(toy_dir, tmp_path, capsys):
    """--cold, --overlap, --legacy-split and --valid-from reach the plan (they were silently ignored), and the
    plan's dataset line names each of them."""
    base = ["reproduce", "table3", "--quick", "--datasets", str(toy_dir), "--methods", "ud", "--seeds", "1,2",
            "--out", str(tmp_path), "--plan"]
    assert main(base) == 0
    default = capsys.readouterr().out
    assert "--cold keep" in default and "--overlap error" in default and "--valid-from test" in default
    assert "split seed 2024" in default and "error:" not in default
    assert main([*base, "--cold", "drop", "--overlap", "drop", "--legacy-split"]) == 0
    out = capsys.readouterr().out
    assert "--cold drop" in out and "--overlap drop" in out and "--legacy-split (split by each run's seed)" in out
    # --valid-from file on a folder without valid.txt is the loader's error, not a plan that ignores it
    assert main([*base, "--valid-from", "file"]) == 2
    assert "--valid-from file needs valid.txt" in capsys.readouterr().err
