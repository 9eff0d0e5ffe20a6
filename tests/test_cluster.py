"""A real loopback Ray cluster: `ray job submit` of the main job, and a worker node lost mid-sweep.

These start Ray heads with the `ray` CLI, as a user would (see README "Running on a cluster").
"""

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from cluster_fixtures import ENV, RAY, ROOT, free_port, ray_start, stop_ray

from tuning.tracking import Tracking

# Runs one task on the worker node: can this machine host a second node at all?
WORKER_PROBE = """
import sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.time() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
    time.sleep(1)
worker = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU") == 2]
node = ray.remote(num_cpus=1)(lambda: ray.get_runtime_context().get_node_id())
print(ray.get(node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(worker[0], soft=False)).remote(),
              timeout=60) == worker[0])
"""


def trial_runs(uri: str, sweep: str):
    tracking = Tracking.resolve(uri)
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], f"tags.sweep = '{sweep}' and tags.role = 'trial'")


def test_ray_job_submit_runs_the_main_job(head, tmp_path, demo_store, mlflow_uri):
    _, dashboard = head
    uri = mlflow_uri
    job = subprocess.run(
        [RAY, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
         "python", "ray_jobs/tune_ssl.py", "--space", "search_spaces/quick.yaml", "--num-samples", "2",
         "--epochs", "2", "--max-concurrent", "1", "--features", str(demo_store), "--name", "submitted",
         "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri],
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout and "sweep submitted: 2 trials, 0 failed" in job.stdout
    assert "Ray: joined the cluster at" in job.stdout and "1 node, 1 CPUs" in job.stdout  # the job says where it ran
    runs = trial_runs(uri, "submitted")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all("dev/mosei_mmf1" in r.data.metrics and "mean_rank" in r.data.metrics for r in runs)


@pytest.mark.parametrize("head", ["multinode"], indirect=True)
def test_sweep_survives_losing_a_worker_node(head, tmp_path, demo_store, mlflow_uri, request):
    """Stop a worker node while it runs trials: they are retried, none lost, no duplicate runs."""
    gcs, _ = head

    def worker_arguments():
        port = free_port()
        return [f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--node-manager-port={port}"], port

    worker_port, worker = ray_start(worker_arguments, ENV)
    request.addfinalizer(lambda: stop_ray(worker))  # what the lost raylet leaves: its agents, log monitor
    try:
        probe = subprocess.run([sys.executable, "-c", WORKER_PROBE, gcs], env=ENV, capture_output=True, text=True,
                               timeout=180)
        works = probe.stdout.strip().endswith("True")
    except subprocess.TimeoutExpired as err:
        probe, works = err, False
    if not works:  # an environment limit (Ray advertises the machine's external address here), not our code's
        pytest.skip(f"a second Ray node on this machine cannot run tasks: {str(probe.stderr)[-1500:]}")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "nodes", "strategy": "grid",
        "fixed": {"model.hidden_dim": 32, "model.out_features": 32, "model.num_heads": 4, "optim.lr": 1e-3,
                  "optim.epochs": 4, "optim.early_stopping_patience": 0},
        "parameters": {"model.dropout": [0.0, 0.05, 0.1]},
    }))
    uri = mlflow_uri
    # The driver writes to a file: a pipe nobody reads while we poll fills up and blocks it.
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, str(ROOT / "ray_jobs" / "tune_ssl.py"), "--space", str(space), "--features",
             str(demo_store), "--name", "nodes", "--address", gcs, "--storage-path", str(tmp_path / "ray"),
             "--tracking-uri", uri, "--max-concurrent", "3", "--no-asha", "--max-failures", "3"],
            env=ENV, stdout=log, stderr=subprocess.STDOUT, text=True,
        )

    def driver_log() -> str:
        return log_path.read_text()[-4000:]

    try:
        deadline = time.time() + 300
        started = []
        while time.time() < deadline and len(started) < 2 and driver.poll() is None:
            time.sleep(2)
            started = [r for r in trial_runs(uri, "nodes") if r.info.status == "RUNNING" and "dev_score" in r.data.metrics]
        assert len(started) >= 2, f"trials did not start on the cluster (driver exit: {driver.poll()}):\n{driver_log()}"
        # The worker's raylet takes its trial processes down with it, like a lost machine.
        killed = subprocess.run(["pkill", "-9", "-f", f"raylet.*node_manager_port={worker_port}"], capture_output=True)
        assert killed.returncode == 0, "no worker raylet found"
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    out = log_path.read_text()
    assert driver.returncode == 0, out[-4000:]
    runs = trial_runs(uri, "nodes")
    assert len(runs) == 3 and len({r.data.tags["trial_id"] for r in runs}) == 3
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.status, r.data.tags.get("failure_reason")) for r in runs]
    assert "sweep nodes: 3 trials, 0 failed" in out


def test_plain_sweep_starts_its_own_ray_beside_a_ray_start_cluster(tmp_path, demo_store, mlflow_uri):
    """After the README's `ray start --head`, a `tune_ssl.py` without --address or RAY_ADDRESS does
    not join that cluster (a bare ray.init() would: Ray reads the address `ray start` wrote); it
    starts a local Ray and says so. --address joins, and says so too."""
    import ray

    ray.shutdown()
    # RAY_TMPDIR of its own: the current-cluster file `ray start` writes, and this head's sockets
    # and logs, stay apart from other Rays on the machine (a short path: Ray's sockets live there).
    ray_tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
    token = tmp_path / "ray_token"  # Ray 2.60 guards a `ray start` cluster with a token: the README's
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**{k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}

    def head_arguments():
        port = free_port()
        return ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
                "--num-cpus=1"], port

    port, session = ray_start(head_arguments, env)
    try:
        current = Path(ray_tmp, "ray", "ray_current_cluster")
        assert current.read_text().strip() == f"127.0.0.1:{port}"  # what a bare ray.init() would join
        space = tmp_path / "one.yaml"
        space.write_text(yaml.safe_dump({"name": "one", "strategy": "grid", "parameters": {"model.dropout": [0.0]},
                                         "fixed": {"model.hidden_dim": 16, "model.out_features": 16,
                                                   "model.num_heads": 2, "optim.epochs": 1}}))
        sweep = subprocess.run(
            [sys.executable, str(ROOT / "ray_jobs" / "tune_ssl.py"), "--space", str(space), "--features",
             str(demo_store), "--name", "plain", "--storage-path", str(tmp_path / "ray"), "--tracking-uri",
             mlflow_uri, "--max-concurrent", "1", "--no-asha", "--report-top-k", "0"],
            env=env, capture_output=True, text=True, timeout=400)
        assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
        [line] = [x for x in sweep.stdout.splitlines() if x.startswith("Ray: ")]
        assert line.startswith("Ray: started a local Ray") and f":{port}," not in line, line
        assert "1 node," in line
        [trial] = trial_runs(mlflow_uri, "plain")
        assert trial.info.status == "FINISHED"

        joined = subprocess.run([sys.executable, "-c", "from tuning.local_ray import start_ray; "
                                 f"start_ray('127.0.0.1:{port}', log_to_driver=False)"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert f"Ray: joined the cluster at 127.0.0.1:{port}: GCS 127.0.0.1:{port}, 1 node, 1 CPUs, 0 GPUs" \
            in joined.stdout, joined.stdout + joined.stderr[-2000:]
    finally:
        stop_ray(session)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "real_text").exists(), reason="../shared/data/real_text is absent")
def test_ray_job_submit_runs_the_extraction_pipeline(head, tmp_path):
    _, dashboard = head
    real_text = ROOT.parent / "shared" / "data" / "real_text"
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(tmp_path / "store"), "data_root": str(real_text), "modalities": ["text", "behavior"],
        "text_encoder": {"name": "minilm"}, "behavior_encoder": {"name": "minilm"},
        "sources": [
            {"corpus": "bah", "manifest": "bah_train.csv", "split": "train", "limit": 20,
             "columns": {"transcript": "text", "description": "text_llm", "labels": {"ah": "presence_full"}}},
            {"corpus": "bah", "manifest": "bah_dev.csv", "split": "dev", "limit": 20,
             "columns": {"transcript": "text", "description": "text_llm", "labels": {"ah": "presence_full"}}},
        ],
    }))
    job = subprocess.run(
        [RAY, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
         "python", "ray_jobs/extract_features.py", "--config", str(config)],
        env={**ENV, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "40 rows written" in job.stdout
    from scd_core.features import validate_store

    splits, errors = validate_store(tmp_path / "store")
    assert errors == [] and {(s.corpus, s.split, len(s)) for s in splits} == {("bah", "train", 20), ("bah", "dev", 20)}
