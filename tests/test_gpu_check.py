"""bench/gpu_check.py --quick: the prepared GPU script runs end to end (CPU, synthetic, tiny settings) and writes
every figure beside its target."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_quick_writes_every_figure_and_its_target(tmp_path):
    """No --time-limit skipping here (its default fits an idle CPU, and a loaded one skipped the last sections):
    the check is that every section runs and writes its figure; the subprocess timeout bounds the time."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick", "--out", str(tmp_path),
                             "--time-limit", "1e9"], capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    expected = set(report["targets"]) - {"peak_memory_gib"}            # a CPU has no GPU memory to report
    assert expected <= set(report["figures"]), expected - set(report["figures"])
    assert all(value > 0 for key, value in report["figures"].items() if key.endswith("_s")), report["figures"]
    assert report["quick"] is True and not any("skipped" in note for note in report["notes"])
    table = (tmp_path / "gpu_check.md").read_text()
    for target in report["targets"].values():
        assert f"| {target['figure']} |" in table
    assert "| peak GPU memory (UD-128) | not measured | <= 6 GiB | – |" in table
