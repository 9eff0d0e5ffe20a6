"""benchmarks/real_text.py end to end on a tiny subset of the published tables (--quick), and its
seed-and-row bootstrap against a naive loop."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
REAL_TEXT = SHARED_DATA / "real_text"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("real_text_benchmark", ROOT / "benchmarks" / "real_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_row_bootstrap_matches_a_naive_loop():
    bench = load_benchmark()
    rng = np.random.default_rng(3)
    target = rng.integers(0, 2, 40)
    seeds_a = [rng.integers(0, 2, 40) for _ in range(3)]
    seeds_b = [np.where(rng.random(40) < 0.8, target, 1 - target) for _ in range(3)]

    def accuracy(t, p):
        return (np.asarray(t) == np.asarray(p)).mean(axis=-1)

    got = bench.seed_row_bootstrap(accuracy, target, seeds_b, seeds_a, n_resamples=200, seed=7)
    naive_rng = np.random.default_rng(7)
    rows = naive_rng.integers(0, 40, size=(200, 40))
    picks = [naive_rng.integers(0, 3, size=(200, 3)) for _ in ("b", "a")]  # drawn in the function's order
    diffs = [np.mean([accuracy(target[r], seeds_b[s][r]) for s in picks[0][i]]) -
             np.mean([accuracy(target[r], seeds_a[s][r]) for s in picks[1][i]]) for i, r in enumerate(rows)]
    assert got["low"] == pytest.approx(np.quantile(diffs, 0.025))
    assert got["high"] == pytest.approx(np.quantile(diffs, 0.975))
    assert got["value"] == pytest.approx(np.mean([accuracy(target, p) for p in seeds_b]) -
                                         np.mean([accuracy(target, p) for p in seeds_a]))
    assert got["sd"] == pytest.approx(np.std([accuracy(target, p) for p in seeds_b], ddof=1))
    assert got["low"] > 0  # b is right 80% of the time, a by chance


@pytest.mark.skipif(not REAL_TEXT.exists(), reason=f"{REAL_TEXT} is absent")
def test_quick_run_searches_trains_over_seeds_and_reports_every_setting(tmp_path):
    bench = load_benchmark()
    out = tmp_path / "results"
    report = bench.main(["--data", str(REAL_TEXT), "--out", str(out), "--work", str(tmp_path / "work"), "--quick",
                         "--ablate", "ssl.logit_adjustment=1.0"])

    ablated = "(c*) with ssl.logit_adjustment=1.0"
    rows = [bench.BASELINE, *bench.SETTINGS.values(), ablated]
    columns = [f"{c}_{m}" for c, m, _ in bench.COLUMNS]
    saved = json.loads((out / "real_text_quick.json").read_text())
    assert list(saved["table"]) == rows
    for row in rows:
        for column in columns:
            cell = saved["table"][row][column]
            assert all(math.isfinite(cell[k]) for k in ("value", "low", "high")), (row, column, cell)
            assert cell["low"] - 1e-9 <= cell["value"] <= cell["high"] + 1e-9 or row != bench.BASELINE
    assert saved["table"] == json.loads(json.dumps(report["table"], default=float))
    assert saved["table"][bench.SETTINGS["c*"]]["meld_mf1"]["seeds"] == 2
    assert set(saved["differences"]) == {f"{a} - {b}" for a, b in bench.DIFFERENCES} | {
        "c* - c*[ssl.logit_adjustment=1.0]"}
    assert saved["ablations"] == {"c*[ssl.logit_adjustment=1.0]": {"ssl.logit_adjustment": 1.0}}

    # The project's sweeps ran: one multitask, one per single task, each selecting a config.
    assert set(saved["search"]) == {"c*", "a*-emo", "a*-pt", "a*-ah"}
    for sweep in saved["search"].values():
        assert sweep["trials"] == 2 and sweep["trial_epochs"] >= sweep["finished"] >= 1
    selected = yaml.safe_load((out / "real_text_quick_selected.yaml").read_text())
    assert selected["a*-pt"]["config"]["data"]["tasks"] == ["pt"]
    assert selected["c*"]["config"]["data"]["tasks"] == ["emo", "pt", "ah"]
    # Two seeds of five settings: 3 + 1 + 3 + 1 + 1 runs each.
    assert len(saved["runs"]) == 18 and {i["seed"] for i in saved["runs"].values()} == {0, 1}
    assert saved["runs"]["c*[ssl.logit_adjustment=1.0]-multitask-s1"]["tasks"] == ["emo", "pt", "ah"]
    assert saved["runs"]["c*-multitask-s1"]["tasks"] == ["emo", "pt", "ah"]
    assert saved["command"].startswith("python benchmarks/real_text.py --data ")

    md = (out / "real_text_quick.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Setting |"))
    assert [h.strip() for h in header.strip("|").split("|")][1:] == [h for _, _, h in bench.COLUMNS]
    for row in [*bench.SETTINGS.values(), ablated]:
        line = next(line for line in md.splitlines() if line.startswith(f"| {row} |"))
        assert line.count("[") == len(columns) and line.count("±") == len(columns)
    assert "## Verdict" in md and "## What was searched" in md and "trial-epochs" in md



@pytest.mark.parametrize("flag", ["ssl.logit_adjustment=9", "no_such.field=1", "ssl"])
def test_an_ablation_that_is_no_config_value_is_refused_before_any_work(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark().main(["--data", str(tmp_path), "--work", str(tmp_path / "work"), "--ablate", flag])
    assert exit_info.value.code == 2
    assert flag.split("=")[0].split(".")[-1] in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_an_ablation_the_selected_config_cannot_take_is_refused_before_any_work(tmp_path, capsys):
    """c*'s selection scores without behaviour: dropping that modality alone leaves the config
    invalid, and the refusal names the field; both changed together are accepted."""
    from scd_core.config import load_config

    selected = tmp_path / "selected.yaml"
    config = load_config(None, ["data.modalities=[text,behavior]", "data.select_without=[behavior]"])
    selected.write_text(yaml.safe_dump({"c*": {"config": config.to_dict()}}))
    bench = load_benchmark()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tmp_path), "--work", str(tmp_path / "work"), "--selected", str(selected),
                    "--ablate", "data.modalities=[text]"])
    assert exit_info.value.code == 2
    assert "select_without" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    both = bench.ablation_settings(["data.modalities=[text] data.select_without=[]"])
    bench.check_ablations(both, yaml.safe_load(selected.read_text()))
    assert both == {"c*[data.modalities=[text] data.select_without=[]]":
                    {"data.modalities": ["text"], "data.select_without": []}}
