"""benchmarks/real_text.py end to end on a tiny subset of the published tables (--quick)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
REAL_TEXT = SHARED_DATA / "real_text"
pytestmark = pytest.mark.skipif(not REAL_TEXT.exists(), reason=f"{REAL_TEXT} is absent")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("real_text_benchmark", ROOT / "benchmarks" / "real_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_setting_and_metric_with_intervals(tmp_path):
    bench = load_benchmark()
    out = tmp_path / "results"
    report = bench.main(["--data", str(REAL_TEXT), "--out", str(out), "--work", str(tmp_path / "work"), "--quick"])

    rows = [bench.BASELINE, *bench.SETTINGS.values()]
    columns = [f"{c}_{m}" for c, m, _ in bench.COLUMNS]
    saved = json.loads((out / "real_text_quick.json").read_text())
    assert list(saved["table"]) == rows
    for row in rows:
        for column in columns:
            cell = saved["table"][row][column]
            assert all(math.isfinite(cell[k]) for k in ("value", "low", "high")), (row, column, cell)
            assert cell["low"] - 1e-9 <= cell["value"] <= cell["high"] + 1e-9, (row, column, cell)
    assert saved["table"] == json.loads(json.dumps(report["table"], default=float))
    # seven trainings: three single-task supervised, three single-task SSL, one multitask
    assert sorted(saved["runs"]) == sorted(["a-emo", "a-pt", "a-ah", "b-emo", "b-pt", "b-ah", "c-multitask"])
    assert saved["runs"]["b-pt"]["train_corpora"] == ["mosei", "fiv2", "bah"] and saved["runs"]["b-pt"]["tasks"] == ["pt"]
    assert saved["command"].startswith("python benchmarks/real_text.py --data ")

    md = (out / "real_text_quick.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Setting |"))
    assert [h.strip() for h in header.strip("|").split("|")][1:] == [h for _, _, h in bench.COLUMNS]
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and "[" in line]
    for row in rows:
        line = next(line for line in table_lines if line.startswith(f"| {row} |"))
        assert line.count("[") == len(columns)  # every cell has its interval
    assert saved["command"] in md and "Wall time" in md
