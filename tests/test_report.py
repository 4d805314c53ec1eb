"""Tables and figures of the reproduction targets, from fabricated records (tests/fakes.py)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import fake_target
from scipy import stats as sps

from lwbench.budget import ParamCount
from lwbench.plugin import Method
from lwbench.records import per_user, points, read_manifests
from lwbench.registry import register
from lwbench.reports.stats import holm
from lwbench.reports.targets import build_report, build_target
from lwbench.studies.c2f_paper import reference
from lwbench.studies.c2f_paper.targets import C2F_COARSE_STAGE

COARSE = f"{C2F_COARSE_STAGE}/update"

TABLE3_METHODS = ["ud", "qr", "legcf", "c2f"]
METRIC_COLUMNS = {"ndcg@10": "N@10", "recall@10": "R@10", "ndcg@20": "N@20", "recall@20": "R@20"}


def table3_level(cell, seed, checkpoint):
    """Known levels: UD highest (but unbudgeted), then legcf/c2f close, qr low; seeds jitter them."""
    base = {"ud": 0.30, "qr": 0.05, "legcf": 0.20, "c2f": 0.21}[cell.method]
    if cell.method == "ud" and cell.overrides["ud"]["dim"] == 64:
        base = 0.28
    return base + 0.01 * ((seed * 7919 + len(cell.dataset)) % 5)


@pytest.fixture
def table3_out(tmp_path):
    out = tmp_path / "out"
    fake_target(out, "table3", ["gowalla", "synthetic"], TABLE3_METHODS, [1, 2, 3], table3_level)
    return out


def test_table3_rows_paper_values_and_bold_best(table3_out, tmp_path):
    written = build_target("table3", table3_out, tmp_path / "figs", "two-sided")
    assert {p.name for p in written} == {f"{name}.{ext}" for name in ("table3", "table3-stats")
                                         for ext in ("md", "tex", "csv")}
    data = pd.read_csv(table3_out / "table3.csv")
    pts = points(table3_out, read_manifests(table3_out)["table3"])
    for (dataset, metric), block in data.groupby(["dataset", "metric"]):
        # Independent best: mean over seeds of each budgeted method straight from the records.
        means = {}
        for _, p in pts[pts["dataset"] == dataset].iterrows():
            if p["record"]["budget"]["applies"]:
                means.setdefault(p["label"], []).append(p["record"]["metrics"]["test"][metric])
        best = max(means, key=lambda label: np.mean(means[label]))
        flagged = block[block["best_lightweight"]]
        assert list(flagged["method"]) == [reference.paper_row(best, {})], (dataset, metric)
        assert flagged["mean"].iloc[0] == pytest.approx(np.mean(means[best]))
        assert not block[block["method"].str.startswith("UD")]["best_lightweight"].any()
    gowalla_legcf = data[(data["dataset"] == "gowalla") & (data["method"] == "LEGCF") & (data["metric"] == "ndcg@20")]
    assert gowalla_legcf["paper"].iloc[0] == 0.0988
    assert gowalla_legcf["diff"].iloc[0] == pytest.approx(gowalla_legcf["mean"].iloc[0] - 0.0988)
    markdown = (table3_out / "table3.md").read_text()
    for name in ("UD-128", "UD-64", "QR", "LEGCF", "C2F"):
        assert f"| gowalla | {name} | 3 |" in markdown
    shown = [line.split(" | ")[1] for line in markdown.splitlines() if line.startswith("| gowalla |")]
    assert shown == ["UD-128", "UD-64", "C2F", "LEGCF", "QR"]   # references, then methods by name, not run order
    c2f_row = next(line for line in markdown.splitlines() if line.startswith("| gowalla | C2F |"))
    assert c2f_row.count("**") == 2 * 4 and "0.0880" in c2f_row  # bold on all 4 metrics, paper value beside
    assert "Not implemented (no registered method): pep" in markdown
    # A block is a dataset at one budget, and the statistics table's first column says so.
    assert pd.read_csv(table3_out / "table3-stats.csv").columns[0] == "dataset, budget"
    assert (table3_out / "table3-stats.md").read_text().split("\n\n")[1].startswith("| dataset, budget | protocol |")
    latex = (table3_out / "table3.tex").read_text()
    assert r"\textbf{" in latex and r"\begin{tabular}" in latex and "$\\pm$" in latex


def test_missing_runs_are_reported_not_dropped(tmp_path):
    out = tmp_path / "out"
    rows = fake_target(out, "table3", ["synthetic"], ["ud", "qr"], [1, 2], table3_level)
    (out / "runs" / f"{rows[-1]['run_id']}.json").unlink()
    build_target("table3", out, tmp_path / "figs", "two-sided")
    markdown = (out / "table3.md").read_text()
    assert "| synthetic | QR | 1 |" in markdown
    assert f"not run yet or unfinished: {rows[-1]['run_id']}" in markdown
    (out / "runs" / f"{rows[-2]['run_id']}.json").unlink()          # no QR run has finished: a row of dashes
    build_target("table3", out, tmp_path / "figs", "two-sided")
    markdown = (out / "table3.md").read_text()
    assert "| synthetic | QR | 0 |" in markdown and rows[-2]["run_id"] in markdown


def test_a_run_that_warned_is_named_under_the_table(tmp_path):
    """A run whose record carries warnings (e.g. resumed with other code) stays in its row, and the table
    names it with its warning; a table of runs without warnings has no such note."""
    out = tmp_path / "out"
    rows = fake_target(out, "table3", ["synthetic"], ["ud", "qr"], [1, 2], table3_level)
    build_target("table3", out, tmp_path / "figs", "two-sided")
    assert "warned while training" not in (out / "table3.md").read_text()
    path = out / "runs" / f"{rows[-1]['run_id']}.json"
    record = json.loads(path.read_text())
    record["warnings"] = ["resumed with other code: trained by a from stage 'train' epoch 0; then b from stage "
                          "'train' epoch 3. Rerun in a fresh --out for a run of one code version"]
    path.write_text(json.dumps(record))
    build_target("table3", out, tmp_path / "figs", "two-sided")
    markdown = (out / "table3.md").read_text()
    assert f"1 run(s) warned while training (their records' warnings): {rows[-1]['run_id']}: resumed with other code" \
        in markdown
    assert "| synthetic | QR | 2 |" in markdown


def table4_level(cell, seed, checkpoint):
    return 0.10 if checkpoint == COARSE else 0.11 + 0.002 * (seed % 3)


def test_table4_protocols_against_scipy(tmp_path):
    out = tmp_path / "out"
    fake_target(out, "table4", ["gowalla"], ["c2f"], [2024, 2025, 2026], table4_level,
                checkpoints=(COARSE, "fine/update"))
    build_target("table4", out, tmp_path / "figs", "two-sided")
    pts = points(out, read_manifests(out)["table4"])
    records = {int(p["seed"]): p["record"] for _, p in pts.iterrows()}
    data = pd.read_csv(out / "table4.csv")
    cutoffs = [5, 10, 20, 50]
    for seed, record in records.items():
        fine = [record["checkpoints"]["fine/update"]["test"][f"ndcg@{k}"] for k in cutoffs]
        coarse = [record["checkpoints"][COARSE]["test"][f"ndcg@{k}"] for k in cutoffs]
        row = data[(data["seed"] == seed) & (data["metric"] == "ndcg@10")].iloc[0]
        assert row["p_paper_protocol"] == pytest.approx(sps.ttest_rel(fine, coarse).pvalue)
        assert row["improvement_pct"] == pytest.approx(100 * (fine[1] - coarse[1]) / coarse[1])
    markdown = (out / "table4.md").read_text()
    assert "@5, @10, @20, @50" in markdown and "@1, @5, @10, @20" in markdown  # corrected headers + note
    assert "| gowalla | improvement % | 2024 |" in markdown and "| gowalla | paper: C2F | 2024 |" in markdown
    paper_row = next(line for line in markdown.splitlines() if line.startswith("| gowalla | paper: C2F | 2024 |"))
    assert "0.00025 (logs: 0.000258)" in paper_row and "0.00778 (logs: 0.00779)" in paper_row

    stats = pd.read_csv(out / "table4-stats.csv")
    seeds_t = stats[(stats["protocol"] == "across seeds") & (stats["comparison"] == "recall@20")
                    & (stats["test"] == "paired t-test")].iloc[0]
    a = [records[s]["checkpoints"]["fine/update"]["test"]["recall@20"] for s in sorted(records)]
    b = [records[s]["checkpoints"][COARSE]["test"]["recall@20"] for s in sorted(records)]
    assert seeds_t["pvalue"] == pytest.approx(sps.ttest_rel(a, b).pvalue) and seeds_t["n"] == 3
    users_w = stats[(stats["protocol"] == "across users") & (stats["comparison"] == "ndcg@20 (seed 2025)")
                    & (stats["test"] == "Wilcoxon signed-rank")].iloc[0]
    fine_users = per_user(out, records[2025])["ndcg@20"]
    coarse_users = per_user(out, records[2025], COARSE)["ndcg@20"].reindex(fine_users.index)
    assert users_w["pvalue"] == pytest.approx(sps.wilcoxon(fine_users - coarse_users).pvalue)
    assert users_w["n"] == len(fine_users) and "two-sided" in users_w["hypothesis"]
    family = stats[(stats["protocol"] == "across users") & (stats["test"] == "Wilcoxon signed-rank")]
    assert len(family) == 8 * 3
    assert np.allclose(family["p_holm"], holm(family["pvalue"].to_numpy()))


def test_table4_refuses_runs_without_the_coarse_checkpoint(tmp_path):
    out = tmp_path / "out"
    fake_target(out, "table4", ["gowalla"], ["c2f"], [2024, 2025], table4_level, checkpoints=("fine/update",))
    with pytest.raises(RuntimeError, match="cannot build table4 from the records .* no checkpoint of stage 'coarse'"):
        build_target("table4", out, tmp_path / "figs", "two-sided")
    fake_target(out, "table3", ["synthetic"], ["ud"], [1], table3_level)
    written, errors = build_report(out, tmp_path / "figs")  # one bad target, others go on
    assert len(errors) == 1 and errors[0].startswith("table4: cannot build") and "stage 'coarse'" in errors[0]
    assert out / "table3.md" in written


def test_table4_uses_the_fixed_coarse_checkpoint_of_a_short_run_and_says_so(tmp_path):
    out = tmp_path / "out"
    fake_target(out, "table4", ["gowalla"], ["c2f"], [2024, 2025], lambda c, s, name: 0.1 if "coarse" in name else 0.2,
                checkpoints=("coarse/fixed", "fine/update"))
    build_target("table4", out, tmp_path / "figs", "two-sided")
    data = pd.read_csv(out / "table4.csv")
    pts = points(out, read_manifests(out)["table4"])
    record = pts[pts["seed"] == 2024]["record"].iloc[0]
    row = data[(data["seed"] == 2024) & (data["metric"] == "recall@50")].iloc[0]
    assert row["coarse"] == pytest.approx(record["checkpoints"]["coarse/fixed"]["test"]["recall@50"])
    assert "never reached its UPDATE phase" in (out / "table4.md").read_text()


def c2f_level(cell, seed, checkpoint):
    coords = cell.coords
    if checkpoint == COARSE:
        return 0.08
    if "case" in coords:
        return {"Full": 0.10, "A": 0.09, "B": 0.095, "C": 0.085, "D": 0.092}[coords["case"]]
    if "factor" in coords:   # the released configuration's value is NaN (it changes no factor)
        return 0.09 + (0 if math.isnan(float(coords["value"])) else 0.001 * float(coords["value"]))
    return 0.09 + 0.0001 * coords.get("fine", 0) + 0.01 * coords.get("rho", 0)


@register
class FakeLightweight(Method):
    """Only for the budget-curve cell list (budgeted); never trained here."""
    name = "test-lightweight"
    options = {}

    def configure(self, options, budget, stats):
        return dict(options)

    def planned_count(self, options, stats):
        return ParamCount(table3=1, float_values=1)


@pytest.mark.parametrize("target, methods, expected_rows", [
    ("fig4", ["c2f"], 2 * (5 + 1)),               # 2 datasets x (Full, A-D + the coarse reference)
    ("fig5", ["c2f"], 2 * (4 * 5 + 1)),           # 2 datasets x (4 factors x 5 values + the released one)
    ("fig6", ["c2f"], 5 + 6 + 6),                 # (a) 5 ratios; (b) before and after at 6 fine sizes
    ("budget-curve", ["ud", "test-lightweight"], 2 * (5 + 2)),   # 5 budgets, UD-128 and UD-64
])
def test_figures_and_their_tables(tmp_path, target, methods, expected_rows):
    out = tmp_path / "out"
    datasets = ["gowalla"] if target == "fig6" else ["gowalla", "yelp2020"]
    fake_target(out, target, datasets, methods, [1, 2], c2f_level, checkpoints=(COARSE, "fine/update"))
    written = build_target(target, out, tmp_path / "figs", "two-sided")
    for ext in ("png", "pdf"):
        figure = tmp_path / "figs" / f"{target}.{ext}"
        assert figure in written and figure.stat().st_size > 5000
    assert (tmp_path / "figs" / f"{target}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = pd.read_csv(out / f"{target}.csv")
    assert len(data) == expected_rows
    assert (data["seeds"] == 2).all()
    if target == "fig4":   # each case named once, as the rows name it
        assert "Cases: A: random E^r selection; B: no SparsePCA;" in (out / "fig4.md").read_text()
    if target == "fig5":
        lam = data[(data["dataset"] == "gowalla") & (data["factor"] == "λ")].sort_values("value")
        assert list(lam["value"]) == [0.5, 1, 3, 5, 10]
        assert np.allclose(lam["ndcg@5:mean"].diff().dropna(), 0.001 * np.diff([0.5, 1, 3, 5, 10]), atol=0.02)
        assert (lam["nonzero_fraction:mean"] == 0.5).all()  # numeric diagnostics are carried, text ones not
        assert "phase:mean" not in data
    if target == "fig6":
        before = data[data["panel"].str.contains("before")]
        after = data[data["panel"].str.contains("after fine") & data["panel"].str.startswith("b")]
        zero_before = before[before["m^r"] == 0]["recall@20:mean"].iloc[0]
        assert after[after["m^r"] == 0]["recall@20:mean"].iloc[0] == pytest.approx(zero_before)
        assert ((data["m^c"] + data["m^r"] == 200) | data["panel"].str.startswith("a")).all()
        assert data["m^c"].dtype.kind == "i" and data["m^r"].dtype.kind == "i"   # counts, written as 100 not 100.0
        panel_a = data[data["panel"].str.startswith("a")]
        assert np.allclose(panel_a["m^r"], 100 * panel_a["ρ"]) and data["ρ"].isna().sum() == len(data) - len(panel_a)


def test_report_regenerates_everything_without_training(tmp_path):
    out = tmp_path / "out"
    fake_target(out, "table3", ["synthetic"], ["ud", "qr"], [1, 2], table3_level)
    fake_target(out, "fig4", ["synthetic"], ["c2f"], [1, 2], c2f_level, checkpoints=(COARSE, "fine/update"))
    written, errors = build_report(out, tmp_path / "figs")
    assert errors == []
    names = {p.name for p in written}
    assert {"table3.md", "fig4.csv", "fig4.png", "fig4.pdf", "summary.md", "summary.tex", "summary.csv"} <= names
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 3 + 5  # ud-128, ud-64, qr, and c2f with its 5 ablation settings told apart
    assert set(summary[summary["method"] == "c2f"]["ablation"]) == set("none A B C D".split())
    assert json.loads((out / "grids" / "fig4.json").read_text())["target"] == "fig4"
    assert not math.isnan(summary["ndcg@10:mean"].iloc[0])
    stats = pd.read_csv(out / "summary-stats.csv")   # each block a dataset at one budget
    assert stats.columns[0] == "dataset, budget"
    assert set(stats["dataset, budget"]) == {"synthetic, unbudgeted", "synthetic, 500buckets"}


def test_building_reports_imports_no_torch(tmp_path):
    """Every built-in study's tables and figures, rebuilt in a fresh interpreter, without torch."""
    out = tmp_path / "out"
    fake_target(out, "table3", ["synthetic"], ["ud", "qr"], [1, 2], table3_level)
    fake_target(out, "table4", ["gowalla"], ["c2f"], [2024, 2025], table4_level, checkpoints=(COARSE, "fine/update"))
    fake_target(out, "fig6", ["gowalla"], ["c2f"], [1], c2f_level, checkpoints=(COARSE, "fine/update"))
    fake_target(out, "budget-curve", ["gowalla"], ["ud", "test-lightweight"], [1], c2f_level)
    code = ("import sys\n"
            "from lwbench.reports.targets import build_report\n"
            f"written, errors = build_report({str(out)!r}, {str(tmp_path / 'figs')!r})\n"
            "assert errors == [], errors\n"
            "print(f'written={len(written)}')\n"
            "assert 'torch' not in sys.modules, 'building reports imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "table4-stats.csv").exists() and (tmp_path / "figs" / "budget-curve.png").exists()
    # table3 (one budgeted row: nothing to test), table4(+stats), fig6(+stats: each m^r against its coarse
    # stage), budget-curve(+stats: UD-128 against UD-64), summary(+stats: C2F's variants)
    assert int(result.stdout.split("written=")[1]) == 3 + 2 * 3 + (2 * 3 + 2) + (2 * 3 + 2) + 2 * 3
    assert all(path.read_text(encoding="utf-8").isascii() for path in out.glob("*.tex"))   # any engine takes them


def test_table4_says_whether_the_seeds_shared_one_coarse_stage():
    """Per dataset (each dataset's shared stage has its own key), and only where there are finished runs."""
    from lwbench.studies.c2f_paper.tables import coarse_sharing_notes

    def run(stage, seed=2025):
        return {"shared_stages": {"coarse": stage}, "seed": seed,
                "config": {"method": {"options": {"coarse_seed": 2024}}}}

    shared = pd.DataFrame({"dataset": ["gowalla"] * 2 + ["yelp2020"] * 2,
                           "record": [run("g"), run("g", 2026), run("y"), run("y", 2026)]})
    notes = coarse_sharing_notes(shared, "coarse", compared=True)
    assert notes == [f"Every C2F seed ({d}) started from the same coarse stage (c2f.coarse_seed=2024), the one it "
                     "is compared with." for d in ("gowalla", "yelp2020")]
    own = pd.DataFrame({"dataset": ["gowalla"] * 2, "record": [run("a"), run("b")]})
    assert coarse_sharing_notes(own, "coarse", compared=True) == [
        "Each C2F run is compared with the coarse stage it started from."]
    assert coarse_sharing_notes(own, "coarse", compared=False) == []
    assert coarse_sharing_notes(pd.DataFrame({"dataset": ["gowalla"], "record": [None]}), "coarse", compared=True) == []


def test_an_unreadable_per_user_file_is_named_and_the_other_targets_are_still_built(tmp_path):
    out = tmp_path / "out"
    fake_target(out, "table3", ["synthetic"], ["ud", "qr"], [1], table3_level)
    rows = fake_target(out, "table4", ["gowalla"], ["c2f"], [2024, 2025], table4_level,
                       checkpoints=(COARSE, "fine/update"))
    damaged = out / "runs" / f"{rows[0]['run_id']}.peruser.npz"
    damaged.write_bytes(damaged.read_bytes()[:40])
    written, errors = build_report(out, tmp_path / "figs")
    assert len(errors) == 1 and errors[0].startswith("table4: ") and str(damaged) in errors[0]
    assert "table3.md" in {p.name for p in written}


def test_table3_marks_a_row_that_no_test_could_decide(tmp_path):
    out = tmp_path / "out"
    rows = fake_target(out, "table3", ["synthetic"], ["ud", "qr", "legcf"], [1], table3_level)
    qr = next(r for r in rows if r["label"] == "qr")
    (out / "runs" / f"{qr['run_id']}.peruser.npz").unlink()
    build_target("table3", out, tmp_path / "figs", "two-sided")
    markdown = (out / "table3.md").read_text()
    qr_row = next(line for line in markdown.splitlines() if line.startswith("| synthetic | QR |"))
    assert qr_row.count("?") == 4 and "†" not in qr_row
    assert "?: not tested" in markdown
    data = pd.read_csv(out / "table3.csv")
    assert data[data["method"] == "QR"]["not_tested"].all() and not data[data["method"] != "QR"]["not_tested"].any()


@pytest.mark.parametrize("base", ["table3", "table3-storage", "table4", "budget-curve"])
def test_a_tuned_target_names_its_own_statistics_table(tmp_path, base):
    """A tune study's tables over a target's cells name tuned-<study>-stats in their notes, not the untuned
    target's statistics table."""
    from lwbench.records import write_manifest
    out = tmp_path / "out"
    methods = {"table4": ["c2f"], "budget-curve": ["ud", "test-lightweight"]}.get(base, ["ud", "qr", "legcf"])
    level = table4_level if base == "table4" else c2f_level if base == "budget-curve" else table3_level
    rows = fake_target(out, base, ["gowalla"], methods, [2024, 2025, 2026], level,
                       checkpoints=(COARSE, "fine/update") if base == "table4" else ("train/single",))
    write_manifest(out, "tuned-s", rows, target="tuned", study="s", base_target=base, seeds=[2024, 2025, 2026])
    written = {p.name for p in build_target("tuned-s", out, tmp_path / "figs", "two-sided")}
    assert {"tuned-s.md", "tuned-s-stats.md"} <= written and not any(name.startswith(base) for name in written)
    markdown = (out / "tuned-s.md").read_text()
    assert "tuned-s-stats" in markdown and f"{base}-stats" not in markdown


def test_a_diagnostic_equal_on_every_row_is_a_note_not_a_column():
    """A sweep's table shows the diagnostics that move with the parameter; one that never moves (e.g. C2F's
    coarse refresh count under a fine-stage sweep) is said once in a note, and the CSV keeps it."""
    from lwbench.reports.summaries import series_table

    summary = pd.DataFrame({"dataset": ["d"] * 3, "value": [1, 2, 3], "seeds": [1, 1, 0],
                            "ndcg@20:mean": [0.1, 0.2, math.nan], "ndcg@20:std": [math.nan] * 3,
                            "fine_nonzeros:mean": [10.0, 20.0, math.nan], "refreshes:mean": [270.0, 270.0, math.nan],
                            "params:mean": [80257.4, 81093.0, math.nan]})
    table = series_table("sweep", "t", summary, ["dataset", "value"], ["ndcg@20"],
                         diagnostics=["fine_nonzeros", "refreshes", "params"])
    assert table.columns == ["dataset", "value", "seeds", "N@20", "fine_nonzeros", "params"]
    assert [row[-2:] for row in table.rows] == [["10", "80,257"], ["20", "81,093"], ["–", "–"]]
    assert "Diagnostics with one value (as shown) on every row that has them: refreshes = 270." in table.notes
    assert "refreshes:mean" in table.data.columns
    single = series_table("sweep", "t", summary.iloc[:1], ["dataset", "value"], ["ndcg@20"],
                          diagnostics=["fine_nonzeros", "refreshes"])
    assert single.columns[-2:] == ["fine_nonzeros", "refreshes"]   # one row: nothing to call constant


def test_c2f_study_tables_say_which_c2f_they_show_and_what_each_factor_is():
    """Figures 4-5 and Table 4 keep C2F's released sizes, which store less than the budget Table 3's C2F fills:
    their notes say so from the records, name each swept factor's option and released value, and show a coarse
    stage that every seed shared once (not as three identical seeds)."""
    from lwbench.studies.c2f_paper.tables import coarse_seed
    from lwbench.studies.c2f_paper.targets import factors_note, one_per_coarse_stage, sizes_note

    options = {"coarse_buckets": 300, "fine_buckets": 100, "fine_components": 80, "threshold": 1.0, "gate": 0.2,
               "fine_topk": 4, "coarse_seed": 2024}

    def run(seed, fraction, stage="coarse-key"):
        return {"run_id": f"c2f-{seed}", "config": {"method": {"options": options}},
                "budget": {"text": "500buckets", "applies": True, "fraction": fraction},
                "shared_stages": {C2F_COARSE_STAGE: stage}}

    pts = pd.DataFrame({"status": ["done"] * 3 + ["missing"],
                        "record": [run(2024, 0.8868), run(2025, 0.8871), run(2026, 0.8869, "own-key"), None]})
    (note,) = sizes_note(pts)
    assert "m^c = 300 coarse and m^r = 100 fine meta-embeddings" in note and "stores 88.7% of the 500buckets" in note
    unsaid = pts.assign(record=[{**r, "budget": {"text": "500buckets", "applies": True, "fraction": None}}
                                if r else None for r in pts["record"]])
    (note,) = sizes_note(unsaid)   # a record that does not say its share: the sizes, no share
    assert "m^r = 100 fine meta-embeddings (Table 3's C2F" in note and "stores" not in note
    (factors,) = factors_note(pts.iloc[:1])
    assert factors == "Factors (c2f option, released value): d^r: fine_components, 80; λ: threshold, 1; " \
                      "w_cr: gate, 0.2; t^r: fine_topk, 4."
    kept = one_per_coarse_stage(pts)
    assert [r["run_id"] if r else None for r in kept["record"]] == ["c2f-2024", "c2f-2026", None]
    assert coarse_seed(run(2025, 0.9), 2025) == 2024
    assert coarse_seed({"config": {"method": {"options": {**options, "coarse_seed": -1}}}}, 2025) == 2025


def test_latex_tables_spell_every_symbol_the_reports_write_in_ascii():
    """A paper's pdflatex stops at a symbol it has no font for (α in the significance notes): every non-ASCII
    character in the report and study sources comes out of the LaTeX writer as ASCII."""
    from lwbench.reports.tables import latex_escape
    root = Path(__file__).resolve().parent.parent / "lwbench"
    sources = [*(root / "reports").rglob("*.py"), *(root / "studies").rglob("*.py"), *(root / "tuning").rglob("*.py")]
    symbols = {ch for path in sources for ch in path.read_text(encoding="utf-8") if ord(ch) > 127}
    assert {"†", "α", "±", "ρ"} <= symbols
    assert {ch: latex_escape(ch) for ch in symbols if not latex_escape(ch).isascii()} == {}
