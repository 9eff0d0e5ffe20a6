"""One source of truth for a sweep's settings: ``tuning.sweep.SweepSettings`` (issue 14)."""

import dataclasses
import json

import pytest
import ray
import yaml
from test_reliability import entry_point, one_line_error

from scd_core.checkpoint import load_spec
from tuning.sweep import SweepSettings


def test_the_flags_default_to_the_sweep_settings():
    tune_ssl = entry_point("tune_ssl")
    assert tune_ssl.sweep_settings(tune_ssl.build_parser().parse_args([])) == SweepSettings()


def test_every_sweep_setting_can_be_set_from_the_command_line():
    tune_ssl = entry_point("tune_ssl")
    args = tune_ssl.build_parser().parse_args([
        "--space", "s.yaml", "--features", "f", "--config", "c.yaml", "--strategy", "grid", "--num-samples", "3",
        "--epochs", "4", "--max-concurrent", "5", "--cpus-per-trial", "0.5", "--gpus-per-trial", "0.125", "--no-asha",
        "--grace-period", "3", "--reduction-factor", "3", "--max-failures", "0", "--name", "n", "--resume",
        "--storage-path", "st", "--tracking-uri", "sqlite:///x.db", "--seed", "7", "--address", "auto",
        "--report-top-k", "1", "optim.lr=0.1"])
    settings = tune_ssl.sweep_settings(args)
    changed = {f.name for f in dataclasses.fields(SweepSettings)
               if getattr(settings, f.name) != getattr(SweepSettings(), f.name)}
    assert changed == {f.name for f in dataclasses.fields(SweepSettings)}
    assert (settings.grace_period, settings.reduction_factor, settings.gpus_per_trial) == (3, 3, 0.125)


@pytest.mark.parametrize("field,value", [("grace_period", 0), ("reduction_factor", 1), ("max_concurrent", 0),
                                         ("gpus_per_trial", -1.0)])
def test_an_impossible_setting_names_its_flag(tmp_path, capsys, field, value):
    flag = "--" + field.replace("_", "-")
    code = entry_point("tune_ssl").main([flag, str(value), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == 2
    assert flag in one_line_error(capsys)


def test_num_samples_on_a_grid_space_is_refused_before_ray_starts(tmp_path, capsys):
    space = tmp_path / "grid.yaml"
    space.write_text(yaml.safe_dump({"strategy": "grid", "parameters": {"model.dropout": [0.0, 0.1, 0.2]}}))
    assert not ray.is_initialized()
    code = entry_point("tune_ssl").main(["--space", str(space), "--num-samples", "2",
                                         "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = one_line_error(capsys)
    assert code == 2 and not ray.is_initialized()
    assert "--num-samples applies to optuna sweeps only" in err and "3 listed trials" in err and str(space) in err


def test_a_checkpoint_written_with_the_old_search_section_still_loads(tmp_path):
    from scd_core.checkpoint import ModelSpec, build_model, save_checkpoint
    from scd_core.config import load_config

    cfg = load_config(None, ["model.hidden_dim=16", "model.out_features=16", "model.num_heads=2"])
    spec = ModelSpec(cfg, {"text": 8}, list(cfg.data.tasks))
    path = save_checkpoint(tmp_path / "best", build_model(spec), spec)
    raw = json.loads((path / "config.json").read_text())
    raw["experiment"]["search"] = {"strategy": "optuna", "num_samples": 20, "grace_period": 2}
    (path / "config.json").write_text(json.dumps(raw))
    assert load_spec(path).config == cfg
