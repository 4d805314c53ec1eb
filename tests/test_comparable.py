"""Which runs are averaged as seeds, significance against the best in every comparison table, and the
``compare`` command: from fabricated records whose values the tests choose (tests/fakes.py)."""
import logging
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from fakes import per_user_frame, write_record
from scipy import stats as sps

from lwbench.cli import main
from lwbench.records import load_records
from lwbench.reports import comparable, significance
from lwbench.reports.stats import holm
from lwbench.reports.summaries import summary_table


def record(out, label, seed, level, **kwargs):
    run_id = kwargs.pop("run_id", f"toy-{label}-s{seed}-{abs(hash((label, seed, str(kwargs)))) % 10**8}")
    frame = per_user_frame(level, seed=seed + 31 * len(label))
    return write_record(out, run_id=run_id, dataset="toy", method=label, label=label, seed=seed,
                        options=kwargs.pop("options", {}), per_user={"train/single": frame}, reported="train/single",
                        **kwargs)


def summary(out):
    tables = summary_table(load_records(out), out)
    return tables[0], (tables[1] if len(tables) > 1 else None)


def test_runs_that_differ_in_a_trainer_setting_are_never_averaged(tmp_path):
    record(tmp_path, "ud", 2024, 0.20, trainer={"max_epochs": 1})
    record(tmp_path, "ud", 2024, 0.30, trainer={"max_epochs": 10})
    table, _ = summary(tmp_path)
    assert "trainer.max_epochs" in table.columns
    data = table.data.sort_values("trainer.max_epochs")
    assert list(data["seeds"]) == [1, 1]
    assert list(data["trainer.max_epochs"]) == ["1", "10"]


def test_a_learning_rate_sweep_gives_one_row_per_rate(tmp_path):
    for lr in (1e-3, 3e-3):
        for seed in (1, 2):
            record(tmp_path, "qr", seed, 0.1 + lr, trainer={"lr": lr})
    table, _ = summary(tmp_path)
    assert sorted(table.data["trainer.lr"]) == ["0.001", "0.003"] and list(table.data["seeds"]) == [2, 2]


def test_a_row_is_named_by_the_settings_that_vary_within_its_own_key(tmp_path):
    """A learning-rate sweep of QR does not name UD's rows by a learning rate, nor QR's by UD's dimension."""
    for lr in (1e-3, 3e-3):
        record(tmp_path, "qr", 1, 0.1, trainer={"lr": lr})
    for dim in (128, 64):
        record(tmp_path, "ud", 1, 0.2, options={"dim": dim})
    records = load_records(tmp_path)
    rows = {(label,): [r for r in records if r["label"] == label] for label in ("qr", "ud")}
    named, varying = comparable.configuration_rows(rows)
    assert set(varying) == {"trainer.lr", "method.options.dim"}   # a table's columns: all of them
    assert [name for key, _, name in named] == ["trainer.lr=0.001", "trainer.lr=0.003", "dim=64", "dim=128"]
    # Keyed by device too (the inference profile), a configuration keeps its name on a device where it is alone.
    on_devices = {("qr", "gpu"): rows[("qr",)], ("qr", "cpu"): rows[("qr",)][:1]}
    named, _ = comparable.configuration_rows(on_devices, named_among=lambda key: key[:1])
    assert [name for key, _, name in named if key[1] == "cpu"] == [comparable.settings_label(
        rows[("qr",)][0], ["trainer.lr"])]


def test_result_neutral_settings_do_not_split_rows(tmp_path):
    record(tmp_path, "ud", 1, 0.2, trainer={"checkpoint_seconds": 60, "eval_chunk_elements": 2**26})
    record(tmp_path, "ud", 2, 0.2, trainer={"checkpoint_seconds": 0, "eval_chunk_elements": 1000})
    table, _ = summary(tmp_path)
    assert len(table.rows) == 1 and table.data["seeds"].iloc[0] == 2


def test_a_copied_record_counts_once_with_a_warning_naming_both_files(tmp_path, caplog):
    first = record(tmp_path, "ud", 1, 0.2)
    record(tmp_path, "ud", 2, 0.25)
    original = tmp_path / "runs" / f"{first['run_id']}.json"
    copy = tmp_path / "runs" / "copy-of-a-run.json"
    shutil.copy(original, copy)
    with caplog.at_level(logging.WARNING):
        table, _ = summary(tmp_path)
    assert table.data["seeds"].iloc[0] == 2
    assert str(original) in caplog.text and str(copy) in caplog.text and "counted once" in caplog.text


def test_flatten_names_stage_settings_by_stage():
    flat = comparable.flatten({"stages": [{"name": "coarse", "trainer": {"lr": 1}}, {"name": "fine"}],
                               "trainer": {"lr": 2}})
    assert flat == {"stages.coarse.name": "coarse", "stages.coarse.trainer.lr": 1, "stages.fine.name": "fine",
                    "trainer.lr": 2}


LEVELS = {"best": 0.30, "close": 0.2995, "worse": 0.05}


@pytest.fixture
def three_methods(tmp_path):
    for label, level in LEVELS.items():
        for seed in (1, 2, 3):
            record(tmp_path, label, seed, level + 0.002 * seed)
    return tmp_path


def test_marks_follow_holm_corrected_paired_t_tests_across_seeds(three_methods):
    out = three_methods
    records = load_records(out)
    table, stats_table = summary(out)
    data = table.data.set_index("method")
    metric = "ndcg@20"
    # Independent recomputation with scipy: each row's three seed values against the best's, then Holm over
    # every deciding test of the table (4 metrics x 2 rows).
    by_seed = {label: {r["seed"]: r["metrics"]["test"] for r in records if r["label"] == label} for label in LEVELS}
    best = {m: max(LEVELS, key=lambda lab: np.mean([by_seed[lab][s][m] for s in (1, 2, 3)]))
            for m in ("ndcg@10", "recall@10", "ndcg@20", "recall@20")}
    raw = {(label, m): sps.ttest_rel([by_seed[label][s][m] for s in (1, 2, 3)],
                                     [by_seed[best[m]][s][m] for s in (1, 2, 3)]).pvalue
           for m in best for label in LEVELS if label != best[m]}
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    for m, label in best.items():
        assert data.loc[label, f"{m}:best"] and data[f"{m}:best"].sum() == 1
    deciding = stats_table.data[(stats_table.data["protocol"] == "across seeds")
                                & (stats_table.data["test"] == "paired t-test")]
    assert len(deciding) == len(raw)
    for _, row in deciding.iterrows():
        label, m = row["a"], row["comparison"].split(", ")[-1]
        assert row["pvalue"] == pytest.approx(raw[(label, m)], rel=1e-12)
        assert row["p_holm"] == pytest.approx(adjusted[(label, m)], rel=1e-12)
        assert data.loc[label, f"{m}:not_worse"] == (not (adjusted[(label, m)] < 0.05 and row["mean_diff"] < 0))
    assert not data.loc["worse", f"{metric}:not_worse"]
    assert "across seeds where both rows share at least 3 seeds" in table.notes[2]


def test_with_fewer_than_three_seeds_the_users_decide(tmp_path):
    for label, level in (("best", 0.3), ("other", 0.25)):
        for seed in (1, 2):
            record(tmp_path, label, seed, level)
    table, stats_table = summary(tmp_path)
    users = stats_table.data[(stats_table.data["protocol"] == "across users")
                             & (stats_table.data["test"] == "paired t-test")
                             & stats_table.data["comparison"].str.endswith("ndcg@20")]
    records = {(r["label"], r["seed"]): r for r in load_records(tmp_path)}
    from lwbench.records import per_user
    mean_users = {label: pd.concat([per_user(tmp_path, records[(label, s)])["ndcg@20"] for s in (1, 2)], axis=1)
                  .mean(axis=1) for label in ("best", "other")}
    expected = sps.ttest_rel(mean_users["other"].sort_index(), mean_users["best"].sort_index()).pvalue
    assert users["pvalue"].iloc[0] == pytest.approx(expected, rel=1e-10)
    assert "across the test users" in table.notes[2]


def test_a_run_under_95_percent_of_its_budget_is_flagged_and_named(tmp_path):
    record(tmp_path, "pep", 1, 0.2, fraction=0.99, run_id="toy-pep-s1")
    record(tmp_path, "pep", 2, 0.2, fraction=0.80, run_id="toy-pep-s2")
    table, _ = summary(tmp_path)
    assert table.rows[0][table.columns.index("budget used")] == "80.0–99.0% !"
    assert any("toy-pep-s2 (80.0%)" in note and "not an equal-budget comparison" in note for note in table.notes)


def test_every_arm_is_tested_against_the_best_of_its_own_block():
    arms = [significance.Arm("a", "x", []), significance.Arm("b", "y", [])]
    assert significance.versus_best(arms, ["ndcg@20"], ".").comparisons == []


def test_compare_prints_both_tests_with_ci_effect_size_and_nonzero_pairs(three_methods, capsys):
    assert main(["compare", "close", "best", "--out", str(three_methods), "--metric", "recall@20"]) == 0
    text = capsys.readouterr().out
    assert "close: dataset toy, budget 500buckets, seeds 1,2,3" in text
    for words in ("across seeds", "across users", "paired t-test", "Wilcoxon signed-rank", "Cohen's d_z",
                  "rank-biserial r", "n≠0"):
        assert words in text
    records = {(r["label"], r["seed"]): r for r in load_records(three_methods)}
    a = [records[("close", s)]["metrics"]["test"]["recall@20"] for s in (1, 2, 3)]
    b = [records[("best", s)]["metrics"]["test"]["recall@20"] for s in (1, 2, 3)]
    assert f"{sps.ttest_rel(a, b).pvalue:.3g}" in text


def test_compare_names_what_to_choose_when_a_label_is_ambiguous(tmp_path, capsys):
    for lr in (1e-3, 3e-3):
        record(tmp_path, "qr", 1, 0.1, trainer={"lr": lr})
    record(tmp_path, "ud", 1, 0.3)
    assert main(["compare", "qr", "ud", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'qr' names 2 configurations" in err and "trainer.lr=0.001" in err and "--where" in err
    assert main(["compare", "qr", "qr", "--out", str(tmp_path), "--where", "trainer.lr=0.003"]) == 2
    assert "the same configuration" in capsys.readouterr().err
    assert main(["compare", "ud", "nope", "--out", str(tmp_path)]) == 2
    assert "no runs labelled 'nope'" in capsys.readouterr().err


def test_compare_budget_names_the_accounting_as_the_tables_do(tmp_path, capsys):
    """``--budget 500buckets`` is the Table-3 parameter count and ``--budget "500buckets (storage)"`` the stored
    bytes, as the summary names them; a full-size reference matches every budget of its own accounting."""
    for accounting, level in (("table3", 0.1), ("storage", 0.2)):
        for seed in (1, 2):
            record(tmp_path, "qr", seed, level + 0.01 * seed, accounting=accounting)
            record(tmp_path, "ud", seed, level + 0.2 + 0.01 * seed, applies=False, accounting=accounting)
    assert main(["compare", "qr", "ud", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err   # the reference's copies say which accounting each was run under
    assert "'qr' names 2 configurations" in err
    assert main(["compare", "ud", "qr", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "budget unbudgeted (storage)" in err and "budget unbudgeted," in err
    records = load_records(tmp_path)
    for budget, accounting in (("500buckets", "table3"), ("500buckets (storage)", "storage")):
        assert main(["compare", "qr", "ud", "--budget", budget, "--out", str(tmp_path)]) == 0
        text = capsys.readouterr().out
        assert f"qr: dataset toy, budget {budget}, seeds 1,2" in text and "ud: dataset toy, budget unbudgeted" in text
        assert ("budget unbudgeted (storage)" in text) == (accounting == "storage")
        for label in ("qr", "ud"):
            mean = np.mean([r["metrics"]["test"]["ndcg@20"] for r in records
                            if r["label"] == label and r["budget"]["accounting"] == accounting])
            assert f"test ndcg@20 {mean:.4f}" in text, (budget, label)


def test_compare_tells_two_settings_of_one_label_apart(tmp_path, capsys):
    for lr, level in ((1e-3, 0.1), (3e-3, 0.2)):
        for seed in (1, 2):
            record(tmp_path, "qr", seed, level + seed * 0.001, trainer={"lr": lr})
    assert main(["compare", "qr:trainer.lr=0.001", "qr:lr=0.003", "--out", str(tmp_path)]) == 2
    assert "no runs of 'qr' match" in capsys.readouterr().err   # lr alone is no method option
    assert main(["compare", "qr:trainer.lr=0.001", "qr:trainer.lr=0.003", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| qr trainer.lr=0.001 | qr trainer.lr=0.003 |" in text and "across seeds" in text


def test_a_missing_per_user_file_is_named_under_the_table(tmp_path):
    kept = record(tmp_path, "best", 1, 0.3)
    lost = record(tmp_path, "other", 1, 0.2)
    (tmp_path / "runs" / lost["per_user_file"]).unlink()
    table, _ = summary(tmp_path)
    note = [n for n in table.notes if "no across-users test" in n]
    assert len(note) == 1 and lost["per_user_file"] in note[0] and kept["per_user_file"] not in note[0]


def test_the_comparable_key_is_the_configuration_hash_of_the_settings_computed_once_per_record(tmp_path, monkeypatch):
    from lwbench.config import config_hash
    for seed in (1, 2):
        record(tmp_path, "qr", seed, 0.1, trainer={"lr": 1e-3})
    record(tmp_path, "qr", 1, 0.2, trainer={"lr": 3e-3})
    records = load_records(tmp_path)
    for r in records:
        assert comparable.comparable_key(r) == config_hash(comparable.settings(r))[:12]
    calls = []
    key = comparable.comparable_key
    monkeypatch.setattr(comparable, "comparable_key", lambda r: calls.append(r["run_id"]) or key(r))
    groups = comparable.group_runs(records)
    assert sorted(len(g.records) for g in groups) == [1, 2]
    assert sorted(calls) == sorted(r["run_id"] for r in records)   # once each, not once per use


def test_rows_of_one_label_are_named_by_the_settings_that_tell_them_apart():
    r = {"config": {"method": {"options": {"dim": 64}}, "trainer": {"lr": 0.003}, "seed": 1}}
    assert comparable.settings_label(r, ["method.options.dim", "trainer.lr"]) == "dim=64 trainer.lr=0.003"
    assert comparable.settings_label(r, []) == ""


@pytest.mark.parametrize("fractions, lowest", [
    ([None, 0.9, 0.97], 0.9), ([0.97, None, 0.9], 0.9),          # records that do not say are left out, in any order
    ([float("nan"), 0.96], 0.96), ([0.96, float("nan")], 0.96),
    ([0.0, 0.5], 0.0),                                            # a stored 0.0 is a value, not "unknown"
])
def test_the_lowest_budget_fraction_ignores_records_that_do_not_say(fractions, lowest):
    from lwbench.reports.summaries import lowest_budget_fraction
    assert lowest_budget_fraction([{"budget": {"fraction": f}} for f in fractions]) == lowest
    assert math.isnan(lowest_budget_fraction([{"budget": {"fraction": None}}, {"budget": {}}]))
    assert lowest_budget_fraction([]) is None


def test_a_per_user_file_without_the_metric_or_the_checkpoint_is_named_not_a_crash(tmp_path):
    """Both readers of per-user files (the marks' tests and the one-seed intervals) treat a file that lacks the
    metric or the checkpoint as they treat a missing file: the test or the interval is left out, and said."""
    from types import SimpleNamespace

    from lwbench.records import save_per_user
    from lwbench.reports.summaries import summarize
    record(tmp_path, "best", 1, 0.3)
    no_metric = record(tmp_path, "other", 1, 0.2)
    no_checkpoint = record(tmp_path, "third", 1, 0.1)
    full = per_user_frame(0.2, seed=5)
    for r, frames in ((no_metric, {"train/single": full.drop(columns=["ndcg@20"])}),
                      (no_checkpoint, {"train/other": full})):
        save_per_user(tmp_path / "runs" / r["per_user_file"],
                      {name: SimpleNamespace(test_per_user=frame) for name, frame in frames.items()})
    table, _ = summary(tmp_path)
    notes = [n for n in table.notes if "no across-users test" in n]
    assert any("other vs best" in n and "no per-user ndcg@20" in n for n in notes)
    assert any("third vs best" in n and "checkpoint 'train/single'" in n for n in notes)
    pts = pd.DataFrame([{"label": r["label"], "record": r} for r in load_records(tmp_path)])
    ci = summarize(pts, ["label"], ["ndcg@20", "recall@20"], out=tmp_path).set_index("label")
    assert list(ci.loc[["best", "other", "third"], "ndcg@20:ci"]) == ["users", "", ""]
    assert list(ci.loc[["best", "other", "third"], "recall@20:ci"]) == ["users", "users", ""]


def test_a_row_without_a_value_is_never_the_best(tmp_path):
    """A NaN mean first in its block: max() over NaN would keep it; it is left out of the choice and the tests."""
    for label, level in (("best", 0.3), ("other", 0.2)):
        for seed in (1, 2, 3):
            record(tmp_path, label, seed, level)
    groups = {g.first["label"]: g.records for g in comparable.group_runs(load_records(tmp_path))}
    broken = [{**r, "metrics": {"test": {**r["metrics"]["test"], "ndcg@20": float("nan")}}} for r in groups["best"]]
    arms = [significance.Arm("broken", "toy", broken), significance.Arm("best", "toy", groups["best"]),
            significance.Arm("other", "toy", groups["other"])]
    verdicts = significance.versus_best(arms, ["ndcg@20", "recall@20"], tmp_path)
    assert verdicts.best[("toy", "ndcg@20")] == "best" and verdicts.best[("toy", "recall@20")] in ("best", "broken")
    assert not any(what.startswith("broken vs") and what.endswith("ndcg@20") for _, _, what, _ in verdicts.comparisons)
    assert "broken: ndcg@20 is not a number in a run; not tested" in verdicts.notes
    alone = significance.versus_best([significance.Arm("broken", "toy", broken)] * 2, ["ndcg@20"], tmp_path)
    assert alone.best == {} and alone.comparisons == []     # a block with no value at all is skipped


def test_the_footnote_counts_each_deciding_test_once_when_both_protocols_decide(tmp_path):
    """One row shares three seeds with the best (the seeds decide), another two (the users decide): the
    footnote counts the 2 rows x 4 metrics deciding tests, not every paired t-test of either protocol."""
    for label, level, seeds in (("best", 0.3, (1, 2, 3)), ("three", 0.2, (1, 2, 3)), ("two", 0.25, (1, 2))):
        for seed in seeds:
            record(tmp_path, label, seed, level)
    table, stats_table = summary(tmp_path)
    assert set(table.data.loc[table.data["ndcg@20:best"], "method"]) == {"best"}
    deciding = [(a, m) for a, p, m, t in zip(stats_table.data["a"], stats_table.data["protocol"],
                                             stats_table.data["comparison"], stats_table.data["test"])
                if t == "paired t-test" and p == ("across seeds" if a == "three" else "across users")]
    assert len(deciding) == 2 * 4
    assert "across seeds where both rows share at least 3 seeds and across the test users" in table.notes[2]
    assert "(8 deciding tests)" in table.notes[2]


def test_a_row_no_test_could_decide_is_marked_untested_not_left_as_worse(tmp_path):
    """One shared seed with the best and no per-user file: neither protocol can decide. The row is marked
    '?' with its own footnote, never left unmarked (which reads as significantly worse)."""
    for seed in (1, 2, 3):
        record(tmp_path, "best", seed, 0.3)
    lost = record(tmp_path, "lost", 1, 0.29)
    (tmp_path / "runs" / lost["per_user_file"]).unlink()
    table, _ = summary(tmp_path)
    row = table.rows[list(table.data["method"]).index("lost")]
    assert all(row[table.columns.index(label)].endswith(significance.UNTESTED) for label in ("N@10", "R@20"))
    data = table.data.set_index("method")
    assert data.loc["lost", "ndcg@20:not_tested"] and not data.loc["lost", "ndcg@20:not_worse"]
    assert not data.loc["best", "ndcg@20:not_tested"]
    assert any(note.startswith("Bold: ") and "?: not tested: the row shares fewer than 3 seeds" in note
               for note in table.notes)
    assert any("lost vs best: no across-users test" in note for note in table.notes)


def test_the_inference_profile_keeps_two_configurations_of_one_method_apart():
    """Two PEP configurations (target rules) on one device are two rows with their own bytes, not one median."""
    from lwbench.reports.summaries import profile_table

    def profiled(rule, seed, stored):
        return {"run_id": f"pep-{rule}-{seed}", "dataset": "d", "label": "pep", "seed": seed,
                "device_name": "cpu", "params": stored // 8, "bytes": stored,
                "budget": {"applies": True, "text": "500buckets"},
                "config": {"method": {"options": {"target_rule": rule}}, "seed": seed},
                "inference_profile": {"bytes": {"values": stored // 2, "indices": stored // 2, "codes": 0, "bias": 0},
                                      "rows_seconds": 1e-3, "score_seconds": 1e-3}}

    records = [profiled("exact", 1, 800), profiled("exact", 2, 800), profiled("first_within", 1, 640),
               profiled("first_within", 2, 480)]
    table = profile_table(records)
    assert list(table.data["method"]) == ["pep target_rule=exact", "pep target_rule=first_within"]
    assert list(table.data["stored"]) == [800, 560]


def test_a_figure_point_whose_seeds_ran_different_settings_says_so():
    """A target's per-seed settings (the logged Yelp2020 C2F runs: seed 2025 with 4 fine layers) make one figure
    point average unlike runs; the table names which seeds ran what (docs/protocol.md §10.11)."""
    from lwbench.reports.summaries import series_table, summarize

    def run(seed, layers):
        return {"run_id": f"c2f-{seed}", "label": "c2f", "seed": seed, "metrics": {"test": {"ndcg@20": 0.1 + seed % 3}},
                "budget": {"text": "500buckets", "applies": True, "fraction": 0.887},
                "config": {"method": {"options": {"fine_layers": layers}}, "seed": seed}}

    pts = pd.DataFrame({"dataset": ["yelp2020"] * 3 + ["gowalla"] * 2,
                        "record": [run(2024, 0), run(2025, 4), run(2026, 0), run(2024, 0), run(2025, 0)]})
    summary = summarize(pts, ["dataset"], ["ndcg@20"])
    assert list(summary["mixed"]) == ["seeds 2024, 2026: fine_layers=0; seed 2025: fine_layers=4", ""]
    assert list(summary["under_budget"]) == [True, True]   # C2F's released 300 + 100 store 88.7% of it
    notes = series_table("fig", "t", summary, ["dataset"], ["ndcg@20"]).notes
    assert notes[1:] == ["yelp2020 averages runs whose settings differ: seeds 2024, 2026: fine_layers=0; "
                     "seed 2025: fine_layers=4."]


def test_a_methods_configurations_come_in_the_order_of_their_settings_and_no_column_repeats_another(tmp_path):
    """Runs made in any order read as a sweep (topk 2, 3, 10, not the order they finished in); a setting that is
    the option's copy under another prefix (a shared stage's key) is no column, while another setting that
    happens to take the same values (``trainer.layers``) still is."""
    for topk in (10, 2, 3):
        record(tmp_path, "c2f", 2024, 0.1 + topk / 100, options={"topk": topk},
               trainer={"topk": topk, "layers": topk})
    table, _ = summary(tmp_path)
    assert "topk" in table.columns and "trainer.topk" not in table.columns and "trainer.layers" in table.columns
    assert [row[table.columns.index("topk")] for row in table.rows] == ["2", "3", "10"]


def test_a_methods_rows_follow_its_budget_whatever_order_the_runs_are_named_in(tmp_path):
    """Run ids sort by their configuration hash, not by budget: the summary lists a method's budgets from the
    smallest, the parameter budgets before the storage ones (an unbudgeted label's row apart), and the inference
    profile in the same order."""
    from lwbench.reports.summaries import profile_table
    budgets = {"b-0": ("1%", 400, "storage"), "b-1": ("10%", 5000), "b-2": ("1%", 500), "b-3": ("500buckets", 2000)}
    for run_id in budgets:
        record(tmp_path, "qr", 2024, 0.2, run_id=run_id)
    record(tmp_path, "ud", 2024, 0.3, run_id="a-ud", applies=False)
    records = load_records(tmp_path)
    for r in records:
        if r["run_id"] in budgets:
            text, params, *accounting = budgets[r["run_id"]]
            r["budget"].update(text=text, params=params, accounting=accounting[0] if accounting else "table3")
        r["inference_profile"] = {"bytes": {"values": 8, "indices": 0, "codes": 0, "bias": 0},
                                  "rows_seconds": 1e-3, "score_seconds": 1e-3}
    table = summary_table(records, tmp_path)[0]
    expected = [("1%", "qr"), ("500buckets", "qr"), ("10%", "qr"), ("1% (storage)", "qr"), ("unbudgeted", "ud")]
    assert [(row[1], row[2]) for row in table.rows] == expected
    profile = profile_table(records)
    assert list(zip(profile.data["budget"], profile.data["method"])) == expected
