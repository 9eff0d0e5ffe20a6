"""``ray_jobs/train.py`` is tracked like a sweep's trial: one MLflow run per training, the same
metrics, tags, figures and checkpoint (real MLflow, a SQLite store in tmp_path)."""

import importlib.util
import socket
from pathlib import Path

import pytest

from scd_core.features import Manifest
from tuning.promote import promote
from tuning.tracking import Tracking

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_dim=16", "model.out_features=16", "model.num_heads=2", "optim.batch_size=512"]
TRIAL_FIGURES = {"gradnorm.png", "learning_curves.png", "pseudo_labels.png", "confusion_meld.png",
                 "confusion_bah.png", "task_correlation.png"}


def train_main():
    spec = importlib.util.spec_from_file_location("ray_jobs_train", ROOT / "ray_jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def train_runs(tracking: Tracking):
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], "tags.role = 'train'")


def test_training_is_one_mlflow_run_with_a_trials_metrics_figures_and_checkpoint(tmp_path, demo_store, mlflow_uri,
                                                                                   capsys):
    main = train_main()
    uri = mlflow_uri
    out = tmp_path / "mcdm"
    assert main(["--features", str(demo_store), "--output", str(out), "--tracking-uri", uri, *TINY,
                 "optim.epochs=2"]) == 0
    tracking = Tracking.resolve(uri)
    client = tracking.client()
    [run] = train_runs(tracking)
    assert f"tracked as MLflow run {run.info.run_id}" in capsys.readouterr().out
    assert run.info.status == "FINISHED" and run.info.run_name == "train-mcdm"
    assert run.data.params["model.hidden_dim"] == "16" and run.data.params["optim.epochs"] == "2"
    # What a trial logs (tests/test_tune.py checks the same names on a sweep's trials).
    for name in ("dev_score", "dev/mosei_mmf1", "dev/fiv2_mccc", "dev/bah_uar", "dev/meld_wf1", "weight/sup_pt",
                 "weight/ssl_ah", "accept/emo", "loss/sup_emo", "best/dev_score", "model/parameters", "lr"):
        assert name in run.data.metrics, name
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_score")] == [0, 1]
    assert run.data.tags["manifest_hash"] == Manifest.read(demo_store).digest()
    assert run.data.tags["device"] == "cpu" and run.data.tags["git_commit"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} == {
        "checkpoint/model.safetensors", "checkpoint/config.json"}
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "figures")} == TRIAL_FIGURES

    # --resume continues the same run; the epochs it adds follow the ones logged.
    assert main(["--features", str(demo_store), "--output", str(out), "--tracking-uri", uri, "--resume", *TINY,
                 "optim.epochs=3"]) == 0
    [resumed] = train_runs(tracking)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_score")] == [0, 1, 2]

    # A tracked training is promotable like a trial.
    done = promote(tracking, run.info.run_id, tmp_path / "export")
    assert str(done.version) == "1" and (tmp_path / "export" / "model.safetensors").exists()

    # --no-tracking records nothing.
    with pytest.raises(SystemExit):  # argparse: the two flags exclude each other
        main(["--output", str(tmp_path / "untracked"), "--tracking-uri", uri, "--no-tracking"])
    assert main(["--features", str(demo_store), "--output", str(tmp_path / "untracked"), "--no-tracking", *TINY,
                 "optim.epochs=1"]) == 0
    assert len(train_runs(tracking)) == 1 and not (tmp_path / "untracked" / "mlflow_run.json").exists()


def test_training_with_a_dead_tracking_server_stops_before_any_work(tmp_path, demo_store, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    out = tmp_path / "run"
    assert train_main()(["--features", str(demo_store), "--output", str(out), "--tracking-uri",
                         f"http://127.0.0.1:{port}", *TINY, "optim.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}" in err and "Traceback" not in err
    assert not out.exists()
