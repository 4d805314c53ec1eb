"""The run record: one type, written and read only through lwbench.records, validated both ways."""
import json
import subprocess
import sys

import pytest

from fakes import per_user_frame, write_record
from lwbench import records


def fake(out, run_id="toy-ud-s1-abc", **changes):
    return write_record(out, run_id=run_id, dataset="toy", method="ud", label="ud-8", seed=1, options={"dim": 8},
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
