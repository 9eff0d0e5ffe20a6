"""Faults a hostile user causes, and what the platform does about each (README "Faults survived").

Each test reproduces one fault of issue 13 and checks the behaviour: the exit code, one
message naming the place, the MLflow state, the listening sockets, the files kept.
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses import this checkout (a script's own folder, not the working directory, leads
# sys.path), and get no loopback setting from conftest: the entry points must set it themselves.
ENV = {**{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TINY = ["model.hidden_dim=16", "model.out_features=16", "model.num_heads=2", "optim.epochs=1", "optim.batch_size=512"]


def entry_point(name: str):
    """``ray_jobs/<name>.py`` (scripts, not a package) as a module, to call its ``main`` in-process."""
    spec = importlib.util.spec_from_file_location(f"ray_jobs_{name}", ROOT / "ray_jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    """The CLI's message (without traceback): what stderr shows the user."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


# ----------------------------------------------------------------- 1. silent overwrite

def test_train_refuses_to_overwrite_a_run_unless_told(tmp_path, demo_store, capsys):
    main = entry_point("train").main
    out = tmp_path / "run"
    args = ["--features", str(demo_store), "--output", str(out), *TINY]
    assert main(args) == 0
    before = digest(out)
    assert {"best/model.safetensors", "last/state.json"} <= set(before)
    capsys.readouterr()

    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert digest(out) == before  # nothing replaced

    assert main([*args, "--overwrite"]) == 0
    assert set(digest(out)) == set(before)


# ----------------------------------------------------------------- 2. local Ray on loopback

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def run_watching_sockets(cmd: list[str], log: Path) -> tuple[int, str, set[tuple[str, int, str]]]:
    """Run an entry point; returns its exit code, output, and every (address, port, process)
    on which it or a process it started (its local Ray) listened while it ran."""
    import psutil

    seen: set[tuple[str, int, str]] = set()
    with open(log, "w") as out:  # a file, not a pipe nobody reads while polling
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                try:
                    family = {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
                    for conn in psutil.net_connections("inet"):
                        if conn.status == psutil.CONN_LISTEN and conn.pid in family:
                            seen.add((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
                except psutil.Error:  # a process ended while we looked
                    pass
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, log.read_text(), seen


REAL_TEXT = ROOT.parent / "shared" / "data" / "real_text"


@pytest.mark.skipif(not REAL_TEXT.exists(), reason=f"{REAL_TEXT} is absent")
def test_extraction_local_ray_listens_on_loopback_only(tmp_path):
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(tmp_path / "store"), "data_root": str(REAL_TEXT), "modalities": ["text", "behavior"],
        "text_encoder": {"name": "minilm"}, "behavior_encoder": {"name": "minilm"},
        "sources": [{"corpus": "bah", "manifest": "bah_dev.csv", "split": "dev", "limit": 4,
                     "columns": {"transcript": "text", "description": "text_llm", "labels": {"ah": "presence_full"}}}],
    }))
    code, out, sockets = run_watching_sockets(
        [sys.executable, "ray_jobs/extract_features.py", "--config", str(config)], tmp_path / "log")
    assert code == 0, out[-3000:]
    assert {name for _, _, name in sockets} >= {"gcs_server", "raylet"}, sockets  # the local Ray was seen
    assert {(ip, port, name) for ip, port, name in sockets if ip not in LOOPBACK} == set()


# ------------------------------------------- 2, 3, 6. a sweep whose every trial fails, on loopback

def mlflow_runs(uri: str, sweep: str, role: str):
    from tuning.tracking import Tracking

    tracking = Tracking.resolve(uri)
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], f"tags.sweep = '{sweep}' and tags.role = '{role}'")


def test_sweep_of_failing_trials_records_each_retries_none_and_fails(tmp_path, demo_store):
    """Every trial fails the same way on every attempt: one hidden_dim/num_heads combination
    only when its config is resolved in the trial (grid combinations are not checked at load),
    the others on a training corpus that has no train split. Each failure is a FAILED MLflow
    run with its reason, none is retried, the sweep exits 1 with its parent run FAILED; and
    its local Ray listened on 127.0.0.1 only."""
    space = tmp_path / "doomed.yaml"
    space.write_text(yaml.safe_dump({
        "strategy": "grid",
        "fixed": {"model.hidden_dim": 16, "model.out_features": 16, "model.num_heads": 2, "optim.epochs": 1,
                  "data.train_corpora": ["meld"], "data.tasks": ["emo"]},
        "parameters": {"model.hidden_dim": [16, 18], "model.num_heads": [2, 4]},
    }))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, sockets = run_watching_sockets(
        [sys.executable, "ray_jobs/tune_ssl.py", "--space", str(space), "--features", str(demo_store), "--name",
         "doomed", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--max-failures", "2",
         "--no-asha"], tmp_path / "log")
    assert code == 1, out[-3000:]
    assert "4 trials, 4 failed" in out and "every trial failed" in out

    runs = mlflow_runs(uri, "doomed", "trial")
    assert len(runs) == 4 and all(r.info.status == "FAILED" for r in runs)
    reasons = sorted(r.data.tags["failure_reason"] for r in runs)
    assert sum("hidden_dim (18) must be divisible by num_heads (4)" in r for r in reasons) == 1, reasons
    assert sum("training corpus 'meld' has no train split" in r for r in reasons) == 3, reasons
    errors = sorted((tmp_path / "ray" / "doomed").glob("*/error.txt"))
    assert len(errors) == 4 and all(e.read_text().count("Failure #") == 1 for e in errors)  # never retried
    [parent] = mlflow_runs(uri, "doomed", "sweep")
    assert parent.info.status == "FAILED" and "all 4 trials failed" in parent.data.tags["failure_reason"]

    assert {name for _, _, name in sockets} >= {"gcs_server", "raylet"}, sockets
    assert {(ip, port, name) for ip, port, name in sockets if ip not in LOOPBACK} == set()
