"""benchmarks/linear_probe.py on the synthetic demo store: every probe fitted, chosen on dev,
scored with intervals, above chance where the demo corpora are learnable, and its refusals."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_probe():
    spec = importlib.util.spec_from_file_location("linear_probe_benchmark", ROOT / "benchmarks" / "linear_probe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_probes_are_chosen_on_dev_and_scored_on_test(demo_store, tmp_path):
    probe = load_probe()
    compare = tmp_path / "real_text.json"
    mcdm = {"value": 0.6, "low": 0.5, "high": 0.7}
    compare.write_text(json.dumps({"table": {"(a) single-task supervised": {"bah_uar": mcdm}}}))
    report = probe.main(["--store", str(demo_store), "--out", str(tmp_path / "out"), "--resamples", "50",
                         "--compare", str(compare)])

    assert set(report["rows"]) == {"text", "text + behavior"}
    for name, metrics in report["rows"].items():
        assert set(metrics) == set(probe.COLUMNS), name  # MELD too: a missing modality is imputed
        for key, cell in metrics.items():
            assert all(math.isfinite(cell[k]) for k in ("value", "low", "high")), (name, key)
            assert cell["low"] - 1e-9 <= cell["value"] <= cell["high"] + 1e-9, (name, key)
        assert set(report["chosen"][name]) == {"emo", "pt", "ah"}
        assert all(c["strength"] in probe.STRENGTHS for c in report["chosen"][name].values())
    # The demo corpora carry their labels in text and behaviour features: a working probe is
    # well above chance (balanced metrics 0.5, CCC 0) on every in-domain test split.
    both = report["rows"]["text + behavior"]
    assert both["mosei_mwacc"]["low"] > 0.55 and both["bah_uar"]["low"] > 0.55 and both["fiv2_mccc"]["low"] > 0.2
    assert report["imputed"]["text + behavior"]["mosei/test"] > 0  # the demo drops some modalities
    md = (tmp_path / "out" / "linear_probe.md").read_text()
    assert "| linear probe, text + behavior |" in md and "| MCDM (a) single-task supervised |" in md
    assert json.loads((tmp_path / "out" / "linear_probe.json").read_text())["rows"] == json.loads(
        json.dumps(report["rows"]))


@pytest.mark.parametrize("flags", [["--store", "{tmp}"], ["--store", "{store}", "--compare", "{tmp}/none.json"]])
def test_a_missing_store_or_comparison_is_refused(demo_store, tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exit_info:
        load_probe().main([f.format(tmp=tmp_path, store=demo_store) for f in flags])
    assert exit_info.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err
