"""The run record: one type, written and read only through lwbench.records, validated both ways."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import per_user_frame, write_record

from lwbench import records

ROOT = Path(__file__).resolve().parents[1]


def fake(out, run_id="toy-ud-s1-abc", seed=1, **changes):
    return write_record(out, run_id=run_id, dataset="toy", method="ud", label="ud-8", seed=seed, options={"dim": 8},
                        per_user={"train/single": per_user_frame(0.2)}, reported="train/single", **changes)


def test_write_then_read_gives_the_same_record_with_its_schema_version(tmp_path):
    written = fake(tmp_path)
    path = records.record_path(tmp_path, written["run_id"])
    read = records.read_record(path)
    assert read.pop("_path") == str(path)   # noted in memory for messages, never part of the file
    assert read == json.loads(json.dumps(written)) and read["schema_version"] == records.SCHEMA_VERSION
    records.write_record(tmp_path, {**read, "_path": "elsewhere"})
    assert "_path" not in json.loads(path.read_text())
    assert records.find_record(tmp_path, written["run_id"], written["config_hash"])["run_id"] == written["run_id"]
    assert records.find_record(tmp_path, written["run_id"], "another hash") is None


def test_numpy_scalars_in_a_record_are_written_as_numbers(tmp_path):
    """A run that finished with numpy numbers in its record (np.int64 epochs, np.float64 seconds) is written, not
    refused: the JSON writer stores numpy scalars as the numbers they hold."""
    import numpy as np
    written = fake(tmp_path, seed=np.int64(1), epochs=np.int64(10), params=np.int64(1000), fraction=np.float32(0.5))
    read = records.read_record(records.record_path(tmp_path, written["run_id"]))
    assert (read["seed"], read["epochs_run"], read["params"], read["budget"]["fraction"]) == (1, 10, 1000, 0.5)
    assert type(read["seed"]) is int and type(read["train_seconds"]) is float


def test_an_incomplete_record_is_refused_before_it_is_written(tmp_path):
    with pytest.raises(records.RecordError, match="fields missing: .*epochs_run"):
        records.write_record(tmp_path, {"run_id": "x", "reported_checkpoint": "a", "checkpoints": {"a": {}}})
    assert not records.record_path(tmp_path, "x").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "unreadable run record"),
    (lambda text: text.replace(f'"schema_version": {records.SCHEMA_VERSION}', '"schema_version": 0'), "schema version 0"),
])
def test_an_unusable_record_is_named_and_treated_as_absent(tmp_path, caplog, damage, message):
    written = fake(tmp_path)
    path = records.record_path(tmp_path, written["run_id"])
    path.write_text(damage(path.read_text()))
    with pytest.raises(records.RecordError, match=message) as info:
        records.read_record(path)
    assert str(path) in str(info.value)
    assert records.load_records(tmp_path) == []
    assert records.find_record(tmp_path, written["run_id"], written["config_hash"]) is None
    assert str(path) in caplog.text and message in caplog.text


def test_reading_records_imports_no_torch(tmp_path):
    fake(tmp_path)
    code = ("import sys; from lwbench import records; "
            f"assert len(records.load_records({str(tmp_path)!r})) == 1; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def edit(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(metrics=None), "metrics must be an object, got null"),
    (lambda r: r["metrics"]["test"].update({"ndcg@20": "0.31"}), "metrics.test['ndcg@20'] must be a number, got str"),
    (lambda r: r["checkpoints"]["train/single"]["test"].update({"recall@20": None}),
     "checkpoints['train/single'].test['recall@20'] must be a number, got null"),
    (lambda r: r.update(seed="1"), "seed must be an int, got str"),
    (lambda r: r.update(params=True), "params must be an int, got bool"),
    (lambda r: r.update(train_seconds=None), "train_seconds must be a number, got null"),
    (lambda r: r.update(config=[]), "config must be an object, got list"),
    (lambda r: r["budget"].update(fraction="all"), "budget.fraction must be a number or null, got str"),
    (lambda r: r.update(per_user_file="../../elsewhere.npz"), "per_user_file must be a file name"),
])
def test_a_record_of_the_wrong_types_is_named_and_left_out(tmp_path, caplog, change, message):
    """A record that parses is still checked against the schema's types: the run command trains it again,
    report leaves it out, both naming the file (a metric as text, "metrics": null used to crash them)."""
    written = fake(tmp_path)
    path = records.record_path(tmp_path, written["run_id"])
    edit(path, change)
    with pytest.raises(records.RecordError, match=re.escape(message)) as info:
        records.read_record(path)
    assert str(path) in str(info.value)
    assert records.load_records(tmp_path) == []
    assert records.find_record(tmp_path, written["run_id"], written["config_hash"]) is None
    assert str(path) in caplog.text and message in caplog.text


def test_the_committed_records_and_manifests_are_valid():
    for out in sorted(ROOT.glob("results/*/")):
        for path in sorted((out / "runs").glob("*.json")):
            if not path.name.endswith(".failed.json"):
                records.read_record(path)
        for path in sorted((out / "grids").glob("*.json")):
            records.read_manifest(path)


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "unreadable manifest"),
    (lambda text: json.dumps({**json.loads(text), "rows": {}}), "rows must be a list, got dict"),
    (lambda text: json.dumps({**json.loads(text), "rows": [{**json.loads(text)["rows"][0], "run_id": 7}]}),
     "rows[0].run_id must be a string, got int"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "target"}), "fields missing: target"),
])
def test_a_truncated_or_edited_manifest_is_named_and_left_out(tmp_path, caplog, damage, message):
    fake(tmp_path)
    rows = [{"dataset": "toy", "method": "ud", "label": "ud-8", "budget": "none", "seed": 1, "run_id": "toy-ud-s1-abc",
             "coords": {}}]
    good = records.write_manifest(tmp_path, "good", rows, target="table3")
    bad = records.write_manifest(tmp_path, "bad", rows, target="table3")
    bad.write_text(damage(bad.read_text()))
    with pytest.raises(records.RecordError, match=re.escape(message)):
        records.read_manifest(bad)
    assert list(records.read_manifests(tmp_path)) == ["good"] and good.exists()
    assert str(bad) in caplog.text and message in caplog.text


def test_report_names_an_unusable_record_and_manifest_and_builds_the_rest(tmp_path, capsys):
    from lwbench.cli import main
    written = fake(tmp_path)
    fake(tmp_path, run_id="toy-ud-s2-def", seed=2)
    edit(records.record_path(tmp_path, written["run_id"]), lambda r: r.update(metrics=None))
    manifest = records.write_manifest(tmp_path, "table3", [], target="table3")
    manifest.write_text(manifest.read_text()[:20])
    assert main(["report", "--out", str(tmp_path), "--figures", str(tmp_path / "figures")]) == 0
    captured = capsys.readouterr()
    assert f"{records.record_path(tmp_path, written['run_id'])}: metrics must be an object, got null" in captured.err
    assert f"{manifest}: unreadable manifest" in captured.err and "Traceback" not in captured.err
    assert "All runs in this folder" in captured.out


def test_report_names_a_missing_per_user_file(tmp_path, capsys):
    from lwbench.cli import main
    written = fake(tmp_path)
    fake(tmp_path, run_id="toy-ud-s2-def", seed=2)
    per_user = tmp_path / "runs" / written["per_user_file"]
    per_user.unlink()
    assert main(["report", "--out", str(tmp_path), "--figures", str(tmp_path / "figures")]) == 0
    err = capsys.readouterr().err
    assert f"{per_user}: per-user file missing or unreadable" in err
    assert "across-users tests and per-user intervals are left out" in err


def test_compute_seconds_counts_a_shared_stage_once_and_copies_not_at_all():
    """Two C2F seeds reuse one coarse stage: the second record repeats its seconds, which count once; a record
    copied from another run (``adopted_from``) costs nothing here; a record listed twice counts once."""
    def run(run_id, started, coarse, fine, evaluation, **extra):
        return {"run_id": run_id, "started_at": started, "train_seconds": coarse + fine, "eval_seconds": evaluation,
                "shared_stages": {"coarse": "c2f-coarse-abc"},
                "history": [{"stage": "coarse", "seconds": coarse}, {"stage": "fine", "seconds": fine}], **extra}

    first = run("c2f-s1", "2026-01-01T00:00", 30.0, 10.0, 4.0)
    second = run("c2f-s2", "2026-01-02T00:00", 30.0, 20.0, 6.0)
    copy = run("c2f-s3", "2026-01-03T00:00", 30.0, 70.0, 9.0, adopted_from={"run_id": "elsewhere"})
    seconds, copied = records.compute_seconds([first, second, copy, first])
    assert copied == 1
    assert seconds == pytest.approx(44.0 + 56.0 * (1 - 30.0 / 50.0))   # the second run's coarse share taken off
    assert records.compute_seconds([first])[0] == 44.0


def test_a_table_says_what_its_runs_cost_and_where():
    from lwbench.reports.summaries import cost_note

    base = {"train_seconds": 3000.0, "eval_seconds": 600.0, "device_name": "CPU: test (1 torch threads)"}
    (note,) = cost_note([{**base, "run_id": "a"}, {**base, "run_id": "b"},
                         {**base, "run_id": "c", "adopted_from": {"run_id": "a"}}])
    assert note.startswith("Cost: 2 run(s) trained for 2.0 h of training and evaluation")
    assert "on CPU: test (1 torch threads)" in note and "1 record(s) copied" in note
    assert cost_note([]) == []


def test_a_manifest_is_strict_json_and_a_coordinate_that_does_not_apply_reads_back_as_nan(tmp_path):
    """Figure 5's released row has no swept value: the manifest says null (any JSON parser reads it, unlike
    Python's bare NaN) and the report's points see NaN, shown as – in tables."""
    rows = [{"dataset": "toy", "method": "ud", "label": "ud-8", "budget": "none", "seed": 1,
             "run_id": f"toy-ud-s1-{i}", "coords": {"factor": factor, "value": value},
             "options": {"nested": [np.float32("nan")]}}
            for i, (factor, value) in enumerate([("λ", 3.0), ("released", math.nan)])]
    path = records.write_manifest(tmp_path, "fig", rows, target="fig5")
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    pts = records.points(tmp_path, records.read_manifest(path))
    assert pts["value"].iloc[0] == 3.0 and math.isnan(pts["value"].iloc[1])
    assert rows[1]["coords"]["value"] != rows[1]["coords"]["value"]   # the caller's rows are left as they were
