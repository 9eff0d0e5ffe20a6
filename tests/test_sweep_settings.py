"""One source of truth for a sweep's settings: ``tuning.sweep.SweepSettings`` (issue 14)."""

import dataclasses
import json

import pytest
import ray
import yaml
from test_reliability import entry_point, one_line_error

from scd_core.checkpoint import load_spec
from scd_core.config import ConfigError
from tuning.sweep import SweepSettings, trials_at_once


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


@pytest.mark.parametrize("settings,resources,expected", [
    (SweepSettings(gpus_per_trial=0.125), {"CPU": 16.0, "GPU": 1.0}, 8),  # 8 trials share the GPU
    (SweepSettings(gpus_per_trial=0.1), {"CPU": 16.0, "GPU": 1.0}, 10),
    (SweepSettings(gpus_per_trial=0.125), {"CPU": 4.0, "GPU": 1.0}, 4),  # then the CPUs run out
    (SweepSettings(gpus_per_trial=0.5), {"CPU": 48.0, "GPU": 4.0}, 8),
    (SweepSettings(), {"CPU": 2.0}, 2),  # a laptop: one trial per core
    (SweepSettings(cpus_per_trial=0.5), {"CPU": 2.0, "GPU": 1.0}, 4),  # a GPU nobody asked for is not counted
    (SweepSettings(max_concurrent=3, gpus_per_trial=0.125), {"CPU": 16.0, "GPU": 1.0}, 3),
])
def test_trials_at_once_fill_the_cluster_unless_capped(settings, resources, expected):
    assert trials_at_once(settings, resources) == expected


@pytest.mark.parametrize("settings,resources", [(SweepSettings(gpus_per_trial=0.25), {"CPU": 8.0}),
                                                (SweepSettings(cpus_per_trial=4), {"CPU": 2.0, "GPU": 1.0})])
def test_a_trial_the_cluster_cannot_hold_is_refused(settings, resources):
    with pytest.raises(ConfigError, match="--cpus-per-trial, --gpus-per-trial"):
        trials_at_once(settings, resources)


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


def test_gpus_a_cpu_cluster_lacks_are_one_clear_error_not_a_wait(tmp_path, demo_store, capsys):
    """Ray Tune would wait forever for a GPU that no node has; the sweep stops at once instead."""
    db = tmp_path / "m.db"
    try:
        code = entry_point("tune_ssl").main(["--gpus-per-trial", "0.125", "--features", str(demo_store), "--name", "g",
                                             "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}"])
    finally:
        ray.shutdown()
    err = one_line_error(capsys)
    assert code == 2 and "--gpus-per-trial" in err and "0 GPUs" in err
