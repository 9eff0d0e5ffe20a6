"""The search platform end to end with the real components: Ray Tune, Optuna, ASHA, MLflow.

Small models on the synthetic demo corpora; each sweep takes tens of seconds.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import torch
import yaml

from dashboards.report import publish_report
from dashboards.sweep_outputs import SWEEP_OUTPUTS
from scd_core.checkpoint import load_model
from scd_core.evaluation import predict
from scd_core.features import load_split
from tuning.promote import ALIAS, MODEL_NAME, choose_run, fetch_model, promote
from tuning.sweep import SweepOutputs, SweepSettings, run_sweep
from tuning.trial import COMPLETED_MARKER
from tuning.tracking import Tracking

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"model.hidden_dim": 32, "model.out_features": 32, "model.num_heads": 4, "optim.lr": 1e-3,
         "optim.early_stopping_patience": 0}
# Tests of a sweep's mechanics draw nothing (a trial's figures cost a few seconds of CPU); the
# numbers are the same either way (SweepOutputs). The figures and report have tests of their own.
NO_DRAWING = SweepOutputs()
REPORT_ONLY = SweepOutputs(report=publish_report)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # One logical GPU: Ray schedules fractional GPUs by this count; the trials still train on the CPU.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_space(path: Path, **body) -> str:
    path.write_text(yaml.safe_dump({"name": path.stem, **body}))
    return str(path)


def left_in_checkpoints(experiment: Path) -> set[str]:
    """What the Ray checkpoints of a sweep's trials still hold (names of files and folders)."""
    return {p.name for p in experiment.glob("*/checkpoint_*/*")}


def children(tracking: Tracking, sweep: str):
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], f"tags.sweep = '{sweep}' and tags.role = 'trial'")


def settings(uri, tmp_path, demo_store, space, **kw):
    return SweepSettings(space=space, features=str(demo_store), storage_path=str(tmp_path / "ray"),
                         tracking_uri=uri, **{"max_concurrent": 2, **kw})


def test_quick_optuna_asha_sweep_tracks_every_trial_and_promotes(tmp_path, demo_store, quick_sweep):
    s, result = quick_sweep
    tracking = Tracking.resolve(s.tracking_uri)
    client = tracking.client()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["role"] == "sweep" and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "leaderboard")} == {
        "leaderboard/leaderboard.csv", "leaderboard/leaderboard.md", "leaderboard/leaderboard.html"}

    runs = children(tracking, "quick")
    assert len(runs) == 3 and len({r.data.tags["trial_id"] for r in runs}) == 3
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.info.status == "FINISHED"
        assert "model.hidden_dim" in run.data.params and run.data.tags["manifest_hash"]
        history = client.get_metric_history(run.info.run_id, "dev_score")
        assert [m.step for m in history][:1] == [0]
        for name in ("dev/mosei_mmf1", "dev/fiv2_mccc", "dev/bah_uar", "dev/meld_wf1", "weight/sup_pt",
                     "weight/ssl_ah", "accept/emo", "loss/sup_emo", "mean_rank"):
            assert name in run.data.metrics, name
    # Pseudo-label class shares: logged for every epoch where a task accepted any pseudo-label.
    assert any(k.startswith("pl/") for r in runs for k in r.data.metrics)
    assert max(len(client.get_metric_history(r.info.run_id, "dev_score")) for r in runs) == 2
    # Each trial's best model is in its run and no Ray checkpoint is left, ASHA-stopped trials' included.
    assert all(len(client.list_artifacts(r.info.run_id, "checkpoint")) == 2 for r in runs)
    assert left_in_checkpoints(Path(s.storage_path) / "quick") == {COMPLETED_MARKER}

    done = promote(tracking, choose_run(tracking, "quick"), tmp_path / "export")
    version = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    assert version.version == done.version and version.tags["sweep"] == "quick"
    assert {p.name for p in done.export_dir.iterdir()} == {"model.safetensors", "config.json"}
    model, spec = load_model(fetch_model(f"models:/{MODEL_NAME}@{ALIAS}", tracking))
    dev = load_split(demo_store, "bah", "dev", spec.config.data.modalities)
    out = predict(model, dev)
    assert out["ah"].shape == (len(dev), 2) and torch.isfinite(out["ah"]).all()


def test_a_second_sweep_under_a_used_name_is_refused(quick_sweep):
    """Without --resume, a used name would add a second sweep's trials to the first one's runs
    and Ray Tune folder: refused before Ray starts, and nothing of the first sweep changes."""
    from dataclasses import replace

    from scd_core.config import ConfigError

    s, _ = quick_sweep
    tracking = Tracking.resolve(s.tracking_uri)
    before = sorted(r.info.run_id for r in children(tracking, "quick"))
    with pytest.raises(ConfigError, match=r"sweep 'quick' already exists in sqlite:.*: pass --resume to continue it"):
        run_sweep(replace(s, num_samples=1), SWEEP_OUTPUTS)
    assert sorted(r.info.run_id for r in children(tracking, "quick")) == before


def test_grid_runs_exactly_the_grid_its_trials_sharing_one_gpu(tmp_path, demo_store, mlflow_uri):
    """--gpus-per-trial 0.25 without --max-concurrent: the four trials share the GPU, all at once."""
    space = write_space(tmp_path / "grid.yaml", strategy="grid", fixed={**SMALL, "optim.epochs": 2},
                        parameters={"model.dropout": [0.0, 0.1], "optim.lr": [1e-3, 2e-3]})
    result = run_sweep(settings(mlflow_uri, tmp_path, demo_store, space, name="grid", asha=False, max_concurrent=None,
                                cpus_per_trial=0.5, gpus_per_trial=0.25), NO_DRAWING)
    runs = children(result.tracking, "grid")
    combos = sorted((r.data.params["model.dropout"], r.data.params["optim.lr"]) for r in runs)
    assert combos == [("0.0", "0.001"), ("0.0", "0.002"), ("0.1", "0.001"), ("0.1", "0.002")]
    assert result.tracking.client().get_run(result.parent_run_id).data.tags["trials_at_once"] == "4"
    # Every trial had started before the first one finished.
    assert max(r.info.start_time for r in runs) < min(r.info.end_time for r in runs)


def test_oat_varies_one_factor_at_a_time(tmp_path, demo_store, mlflow_uri):
    space = write_space(tmp_path / "oat.yaml", strategy="oat", fixed={**SMALL, "optim.epochs": 1},
                        baseline={"model.dropout": 0.0, "optim.lr": 1e-3},
                        parameters={"model.dropout": [0.0, 0.2], "optim.lr": [1e-3, 3e-3]})
    result = run_sweep(settings(mlflow_uri, tmp_path, demo_store, space, name="oat", asha=False), REPORT_ONLY)
    runs = children(Tracking.resolve(mlflow_uri), "oat")
    points = sorted((float(r.data.params["model.dropout"]), float(r.data.params["optim.lr"])) for r in runs)
    assert points == [(0.0, 1e-3), (0.0, 3e-3), (0.2, 1e-3)]
    # The ablation table names each row by its variant, as the paper's tables do.
    ablation = result.tracking.client().download_artifacts(result.parent_run_id, "report/ablation.csv", str(tmp_path))
    labels = {row["trial"] for row in csv.DictReader(open(ablation))}
    assert labels == {r.data.tags["variant"] for r in runs} and "baseline" in labels
    # ... and so does MLflow: each run is named after its variant.
    assert {r.data.tags["mlflow.runName"] for r in runs} == {"baseline", "model.dropout=0.2", "optim.lr=0.003"}


def test_failing_trial_is_recorded_and_the_sweep_completes(tmp_path, demo_store, mlflow_uri):
    space = write_space(tmp_path / "fail.yaml", strategy="grid", fixed={**SMALL, "optim.epochs": 1},
                        variants={"fine": {}, "diverges": {"optim.optimizer": "sgd", "optim.lr": 1.0,
                                                           "optim.scheduler": "none"}})
    result = run_sweep(settings(mlflow_uri, tmp_path, demo_store, space, name="fail", asha=False, max_failures=2),
                       NO_DRAWING)
    assert result.num_errors == 1 and not result.every_trial_failed
    # A non-finite loss would recur from the same checkpoint: the trial ran once, not three times.
    [error] = (tmp_path / "ray" / "fail").glob("*/error.txt")
    assert error.read_text().count("Failure #") == 1
    runs = {r.data.tags["override.optim.optimizer"] if "override.optim.optimizer" in r.data.tags else "fine": r
            for r in children(result.tracking, "fail")}
    assert runs["fine"].info.status == "FINISHED"
    assert runs["sgd"].info.status == "FAILED"
    assert "non-finite loss" in runs["sgd"].data.tags["failure_reason"]
    assert [r["trial"] for r in result.leaderboard.rows if r.get("mean_rank") is not None] == [
        runs["fine"].data.tags["mlflow.runName"]]


def test_killed_driver_resumes_without_losing_or_duplicating_runs(tmp_path, demo_store, mlflow_uri):
    """A sweep whose driver is SIGKILLed mid-way finishes with --resume; MLflow has one run per trial."""
    ray.shutdown()  # the subprocess drivers start their own local Ray
    space = write_space(tmp_path / "resume.yaml", strategy="grid", fixed={**SMALL, "optim.epochs": 2},
                        parameters={"model.dropout": [0.0, 0.05, 0.1]})
    uri = mlflow_uri
    cmd = [sys.executable, str(ROOT / "ray_jobs" / "tune_ssl.py"), "--space", space, "--features", str(demo_store),
           "--name", "resume", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri,
           "--max-concurrent", "1", "--no-asha"]
    env = {**os.environ, "SCD_HOME": str(tmp_path)}
    driver = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    tracking = Tracking.resolve(uri)
    deadline = time.time() + 240
    finished_before = []
    while time.time() < deadline and not finished_before:
        time.sleep(2)
        try:
            finished_before = [r for r in children(tracking, "resume") if r.info.status == "FINISHED"]
        except Exception:  # the store may not exist yet
            pass
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    assert finished_before, "no trial finished before the deadline"
    assert len(finished_before) < 3, "the sweep ended before it could be interrupted"

    # Ray Tune restores the sweep's own spec: a new --max-concurrent is said not to apply.
    done = subprocess.run([*cmd, "--resume", "--max-concurrent", "3"], env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the sweep keeps the limit it started with (trials at once: 1)" in done.stdout
    client = tracking.client()
    [parent] = client.search_runs([tracking.experiment_id(client)], "tags.sweep = 'resume' and tags.role = 'sweep'")
    assert parent.data.tags["trials_at_once"] == "1"
    runs = children(tracking, "resume")
    assert len(runs) == 3 and len({r.data.tags["trial_id"] for r in runs}) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.info.run_id for r in finished_before} <= {r.info.run_id for r in runs}
    dropouts = sorted(r.data.params["model.dropout"] for r in runs)
    assert dropouts == ["0.0", "0.05", "0.1"]
    # Every trial's best model reached MLflow once, and no Ray checkpoint outlives its trial.
    logged = {r.data.params["model.dropout"]: {a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")}
              for r in runs}
    assert all(paths == {"checkpoint/model.safetensors", "checkpoint/config.json"} for paths in logged.values()), logged
    assert left_in_checkpoints(tmp_path / "ray" / "resume") == {COMPLETED_MARKER}


def test_layers_space_runs_every_graph_and_attention_layer(tmp_path, demo_store, mlflow_uri):
    """search_spaces/layers.yaml (paper Tables 13/14) on the demo corpora: its trials, narrower, one epoch each."""
    space = yaml.safe_load((ROOT / "search_spaces" / "layers.yaml").read_text())
    space["fixed"].update({"model.hidden_dim": 32, "model.out_features": 32, "model.num_heads": 4})
    path = tmp_path / "layers.yaml"
    path.write_text(yaml.safe_dump(space))
    result = run_sweep(settings(mlflow_uri, tmp_path, demo_store, str(path), epochs=1, asha=False, name="layers",
                                report_top_k=0),
                       NO_DRAWING)
    runs = children(result.tracking, "layers")
    layers = {(r.data.params["model.graph"], r.data.params["model.attention"]) for r in runs}
    assert layers == {("gat", "mha"), *((g, "mha") for g in ("ncgnn", "edgnn", "unitary", "hgnn")),
                      *(("gat", a) for a in ("mta", "crossmpt", "bica", "fa"))}
    assert all(r.info.status == "FINISHED" and "mean_rank" in r.data.metrics for r in runs)
    assert result.num_errors == 0


def test_each_trial_reads_its_own_feature_store(tmp_path, demo_store, monkeypatch, mlflow_uri):
    """A space that varies data.features (the encoder comparisons) trains, checkpoints,
    tags, draws and evaluates every trial on its own store, not on the sweep's."""
    from scd_core.checkpoint import load_spec
    from scd_core.features import Manifest
    from scd_core.synthetic import generate

    monkeypatch.chdir(tmp_path)  # a relative data.features is relative to the driver's directory
    stores = {"narrow": generate(tmp_path / "stores" / "narrow", "demo", seed=1, dims={"text": 8, "audio": 6}),
              "wide": generate(tmp_path / "stores" / "wide", "demo", seed=2, dims={"text": 24, "audio": 6})}
    space = write_space(tmp_path / "stores.yaml", strategy="grid",
                        fixed={**SMALL, "optim.epochs": 1, "data.modalities": ["text", "audio"]},
                        variants={"narrow": {"data.features": "stores/narrow"},
                                  "wide": {"data.features": str(stores["wide"])}})
    # The sweep's own store (the demo corpora, 1536-dim text) is neither trial's.
    result = run_sweep(settings(mlflow_uri, tmp_path, demo_store, space, name="stores", asha=False, report_top_k=2),
                       SWEEP_OUTPUTS)
    assert result.num_errors == 0
    client = result.tracking.client()
    runs = children(result.tracking, "stores")
    assert sorted(r.data.tags["variant"] for r in runs) == ["narrow", "wide"]
    for run in runs:
        store = stores[run.data.tags["variant"]]
        assert run.data.params["data.features"] == str(store.resolve())
        assert run.data.tags["manifest_hash"] == Manifest.read(store).digest()
        spec = load_spec(client.download_artifacts(run.info.run_id, "checkpoint", str(tmp_path / run.info.run_id)))
        assert spec.modality_dims == {m: Manifest.read(store).modalities[m].dim for m in ("text", "audio")}
        assert client.list_artifacts(run.info.run_id, "figures")  # drawn on the trial's own dev split
    # The comparison table evaluated both trials on the test splits of their own stores.
    table = client.download_artifacts(result.parent_run_id, "report/comparison.csv", str(tmp_path))
    models = {row["model"] for row in csv.DictReader(open(table))}
    assert {"narrow", "wide"} <= models


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_sweep_keeps_only_what_promotion_needs_and_cleanup_frees_the_rest(tmp_path, demo_store, capsys, mlflow_uri):
    """Disk: a finished trial leaves its best model (weights + config) and figures in MLflow and no
    Ray checkpoint (``last`` with the optimiser state and ``best`` are gone); promotion works from
    that; ``tuning.cleanup`` removes the Ray folder and the unpromoted checkpoints, never the champion's."""
    from tuning.cleanup import main as cleanup_main
    from tuning.cleanup import plan_cleanup

    space = write_space(tmp_path / "disk.yaml", strategy="grid", fixed={**SMALL, "optim.epochs": 2},
                        parameters={"model.dropout": [0.0, 0.1]})
    result = run_sweep(settings(mlflow_uri, tmp_path, demo_store, space, name="disk", asha=False, report_top_k=0),
                       SWEEP_OUTPUTS)
    tracking, client = result.tracking, result.tracking.client()
    runs = children(tracking, "disk")
    assert len(runs) == 2
    folder = tmp_path / "ray" / "disk"
    for run in runs:
        kept = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert kept == {"checkpoint/model.safetensors", "checkpoint/config.json"}  # no optimiser state
        assert len(client.list_artifacts(run.info.run_id, "figures")) >= 5
    model_bytes = (Path(runs[0].info.artifact_uri.removeprefix("file://")) / "checkpoint" / "model.safetensors") \
        .stat().st_size
    # A trial's last Ray checkpoint alone held the model twice (best, last) and the optimiser state
    # (Adam: two more copies); what is left per trial is its results, smaller than one model.
    assert left_in_checkpoints(folder) == {COMPLETED_MARKER}
    assert all(folder_bytes(trial) < model_bytes for trial in folder.glob("run_trial_*"))

    champion = min(runs, key=lambda r: r.data.metrics["mean_rank"])
    other = next(r for r in runs if r.info.run_id != champion.info.run_id)
    promote(tracking, champion.info.run_id, tmp_path / "export")

    uri = mlflow_uri
    before = folder_bytes(folder)
    assert cleanup_main(["--sweep", "disk", "--tracking-uri", uri]) == 0  # a dry run by default
    said = capsys.readouterr().out
    assert "would remove" in said and str(folder) in said and "1 trial run(s) not registered" in said
    assert f"run {champion.info.run_id} ({MODEL_NAME} version 1 (champion))" in said
    assert folder_bytes(folder) == before and client.list_artifacts(other.info.run_id, "checkpoint")
    plan = plan_cleanup(tracking, "disk")
    assert plan.ray_folder == folder and list(plan.checkpoints) == [other.info.run_id]
    assert plan.checkpoints[other.info.run_id] >= model_bytes
    mine = tmp_path / "elsewhere" / "disk"  # a mistyped --storage-path: a folder of the user's, same name
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("mine")
    assert cleanup_main(["--sweep", "disk", "--tracking-uri", uri, "--storage-path", str(mine.parent), "--delete"]) == 2
    assert f"{mine}: not a Ray Tune experiment folder" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "mine" and client.list_artifacts(other.info.run_id, "checkpoint")

    assert cleanup_main(["--sweep", "disk", "--tracking-uri", uri, "--delete"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not folder.exists()
    assert client.list_artifacts(other.info.run_id, "checkpoint") == []
    assert client.list_artifacts(other.info.run_id, "figures")  # what one looks at stays
    assert "tuning.cleanup" in client.get_run(other.info.run_id).data.tags["checkpoint_removed"]
    model, _ = load_model(fetch_model(f"models:/{MODEL_NAME}@{ALIAS}", tracking))  # the champion is intact
    assert len(client.list_artifacts(champion.info.run_id, "checkpoint")) == 2
    with pytest.raises(LookupError, match="removed by python -m tuning.cleanup"):
        promote(tracking, other.info.run_id, tmp_path / "export2")
    assert cleanup_main(["--sweep", "disk", "--tracking-uri", uri]) == 0  # nothing left to remove
    assert "already gone" in capsys.readouterr().out and plan_cleanup(tracking, "disk").total_bytes == 0


def test_a_stopped_trial_gets_its_model_and_figures_from_its_last_ray_checkpoint(tmp_path, demo_store, mlflow_uri):
    """ASHA stops a trial inside its training loop, so the trial cannot log its best model: the
    driver does, from the trial's last Ray checkpoint, then deletes that checkpoint."""
    from dashboards.trial_figures import checkpoint_figures
    from scd_core.config import load_config
    from scd_core.data import load_training_data
    from scd_core.trainer import Trainer
    from tuning.sweep import complete_trial
    from tuning.tracking import TrialRun, parent_run

    cfg = load_config(None, [f"{k}={v}" for k, v in {**SMALL, "optim.epochs": 1}.items()] +
                      [f"data.features={demo_store}"])
    saved = tmp_path / "trial" / "checkpoint_000000"  # a Ray trial folder's checkpoint, as tune.report leaves it
    Trainer(cfg, load_training_data(cfg, demo_store, torch.device("cpu")), saved).fit()
    tracking = Tracking.resolve(mlflow_uri)
    run = TrialRun(tracking, "stopped", parent_run(tracking, "stopped", {}), "t1", "t1", {})
    complete_trial(tracking, "stopped", "t1", tmp_path / "trial", checkpoint_figures)
    client = tracking.client()
    assert {a.path for a in client.list_artifacts(run.run_id, "checkpoint")} == {
        "checkpoint/model.safetensors", "checkpoint/config.json"}
    assert {Path(a.path).name for a in client.list_artifacts(run.run_id, "figures")} >= {
        "gradnorm.png", "learning_curves.png", "confusion_bah.png"}
    assert [p.name for p in saved.iterdir()] == [COMPLETED_MARKER]  # Ray still finds the folder it recorded
    complete_trial(tracking, "stopped", "t1", tmp_path / "trial", checkpoint_figures)  # again: nothing to do
    assert [p.name for p in saved.iterdir()] == [COMPLETED_MARKER]
