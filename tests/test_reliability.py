"""Faults a hostile user causes, and what the platform does about each (README "Faults survived").

Each test reproduces one fault of issue 13 and checks the behaviour: the exit code, one
message naming the place, the MLflow state, the listening sockets, the files kept.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cluster_fixtures import free_port

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
    args = ["--features", str(demo_store), "--output", str(out), "--no-tracking", *TINY]
    assert main(args) == 0
    before = digest(out)
    assert {"best/model.safetensors", "last/state.json"} <= set(before)
    capsys.readouterr()

    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert digest(out) == before  # nothing replaced

    assert main(["--overwrite", *args, "optim.lr=5e-4"]) == 0  # deliberately: replaced
    after = digest(out)
    assert set(after) == set(before) and after["best/model.safetensors"] != before["best/model.safetensors"]

    capsys.readouterr()
    file = out / "best" / "model.safetensors"  # a file given as --output, even with --overwrite
    assert main(["--overwrite", "--features", str(demo_store), "--output", str(file), "--no-tracking", *TINY]) == 2
    assert f"--output {file} is a file" in one_line_error(capsys)
    assert digest(out) == after


def test_a_resumed_run_refuses_a_changed_config_naming_each_change(tmp_path, demo_store, capsys):
    main = entry_point("train").main
    args = ["--features", str(demo_store), "--output", str(tmp_path / "run"), "--no-tracking", *TINY]
    assert main(["--resume", *args]) == 0  # nothing to resume: said, and a new run starts
    assert f"nothing to resume in {tmp_path / 'run'}" in capsys.readouterr().out
    before = digest(tmp_path / "run")
    for change, expected in (("model.hidden_dim=32", "model.hidden_dim: 16 -> 32"),
                             ("optim.optimizer=sgd", "optim.optimizer: 'adam' -> 'sgd'")):
        assert main(["--resume", *args, change, "optim.epochs=2"]) == 2
        assert f"{tmp_path / 'run' / 'last'}: a run resumes with the config it was trained with; changed: {expected} " \
               "(only cuda_graph, data.features, device, " in one_line_error(capsys)
        assert digest(tmp_path / "run") == before
    assert main(["--resume", *args, "optim.epochs=2"]) == 0  # more epochs: what resuming is for


def test_train_runs_with_the_threads_it_is_given(tmp_path, demo_store, capsys):
    main = entry_point("train").main
    before = torch.get_num_threads()
    assert main(["--features", str(demo_store), "--output", str(tmp_path / "run"), "--threads", "2", "--no-tracking",
                 *TINY]) == 0
    assert "on cpu with 2 torch threads" in capsys.readouterr().out
    assert torch.get_num_threads() == before  # the caller's setting is restored


def test_sweep_names_the_ui_of_its_tracking_store():
    ui = entry_point("tune_ssl").mlflow_ui
    assert ui("http://127.0.0.1:5000/", "#/x") == "MLflow UI:   http://127.0.0.1:5000/#/x"  # the server's own UI
    local = ui("sqlite:////tmp/mlflow.db", "#/x")
    assert "mlflow ui --backend-store-uri sqlite:////tmp/mlflow.db" in local and "http://127.0.0.1:5000/#/x" in local


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


def test_sweep_of_failing_trials_records_each_retries_none_and_fails(tmp_path, demo_store, mlflow_uri):
    """Every trial fails the same way on every attempt: hidden_dim 18 with 4 heads only when its
    config is resolved in the trial (grid combinations are not checked at load), the other on a
    training corpus that has no train split. Each failure is a FAILED MLflow run with its
    reason, none is retried, the sweep exits 1 with its parent run FAILED; and its local Ray
    listened on 127.0.0.1 only."""
    space = tmp_path / "doomed.yaml"
    space.write_text(yaml.safe_dump({
        "strategy": "grid",
        "fixed": {"model.hidden_dim": 16, "model.out_features": 16, "model.num_heads": 2, "optim.epochs": 1,
                  "data.train_corpora": ["meld"], "data.tasks": ["emo"]},
        "parameters": {"model.hidden_dim": [16, 18], "model.num_heads": [4]},
    }))
    uri = mlflow_uri
    code, out, sockets = run_watching_sockets(
        [sys.executable, "ray_jobs/tune_ssl.py", "--space", str(space), "--features", str(demo_store), "--name",
         "doomed", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--max-failures", "2",
         "--no-asha"], tmp_path / "log")
    assert code == 1, out[-3000:]
    assert "2 trials, 2 failed" in out and "every trial failed" in out

    runs = mlflow_runs(uri, "doomed", "trial")
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    reasons = sorted(r.data.tags["failure_reason"] for r in runs)
    assert reasons[0].startswith("ConfigError: invalid configuration"), reasons
    assert "hidden_dim (18) must be divisible by num_heads (4)" in reasons[0], reasons
    assert "training corpus 'meld' has no train split" in reasons[1], reasons
    errors = sorted((tmp_path / "ray" / "doomed").glob("*/error.txt"))
    assert len(errors) == 2 and all(e.read_text().count("Failure #") == 1 for e in errors)  # never retried
    [parent] = mlflow_runs(uri, "doomed", "sweep")
    assert parent.info.status == "FAILED" and "all 2 trials failed" in parent.data.tags["failure_reason"]

    assert {name for _, _, name in sockets} >= {"gcs_server", "raylet"}, sockets
    assert {(ip, port, name) for ip, port, name in sockets if ip not in LOOPBACK} == set()


# ------------------------------------------------ 5, 8. one message naming the place, no traceback

def test_duplicate_yaml_keys_are_rejected_naming_file_and_line(tmp_path, capsys):
    from tuning.spaces import SpaceError, load_space

    space = tmp_path / "space.yaml"
    space.write_text("strategy: grid\nfixed:\n  model.out_features: 16\n  model.num_heads: 2\n"
                     "parameters:\n  model.dropout: [0.0, 0.1]\nfixed:\n  optim.epochs: 1\n")
    with pytest.raises(SpaceError, match=rf"(?s){space}.*duplicate key 'fixed' \(first at line 2\).*line 7"):
        load_space(space)

    config = tmp_path / "config.yaml"
    config.write_text("model:\n  hidden_dim: 16\n  hidden_dim: 32\n")
    assert entry_point("train").main(["--config", str(config), "--output", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert str(config) in err and "duplicate key 'hidden_dim' (first at line 2)" in err and "line 3" in err

    extraction = tmp_path / "extract.yaml"
    extraction.write_text("output: a\noutput: b\n")
    from extraction.config import load_extraction_config
    from scd_core.config import ConfigError

    with pytest.raises(ConfigError, match=rf"(?s){extraction}.*duplicate key 'output'"):
        load_extraction_config(extraction)


def test_integer_field_with_a_float_distribution_fails_when_the_space_loads(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"parameters": {"model.hidden_dim": {"distribution": "uniform", "low": 32,
                                                                         "high": 128}}}))
    assert entry_point("tune_ssl").main(["--space", str(space), "--tracking-uri", "sqlite:///unused.db"]) == 2
    err = one_line_error(capsys)
    assert f"{space}: parameters.model.hidden_dim: model.hidden_dim is an integer field" in err
    assert not Path("unused.db").exists()  # failed before any run was recorded


def test_dead_tracking_server_fails_in_one_line_before_ray(tmp_path, demo_store, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    tune_ssl = entry_point("tune_ssl")
    assert tune_ssl.main(["--features", str(demo_store), "--tracking-uri", uri,
                          "--storage-path", str(tmp_path / "ray")]) == 2
    err = one_line_error(capsys)
    assert f"MLflow tracking server {uri} does not answer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ray").exists()
    assert entry_point("promote").main(["--tracking-uri", uri]) == 2
    assert uri in one_line_error(capsys)
    from dashboards import leaderboard, report

    for dashboard in (leaderboard, report):
        assert dashboard.main(["--tracking-uri", uri]) == 2
        assert f"MLflow tracking server {uri} does not answer" in one_line_error(capsys)
    for command, args in (("evaluate", []), ("predict", [str(tmp_path), "--output", str(tmp_path / "out")])):
        assert entry_point(command).main(["--model", "models:/scd-mmpsr@champion", "--tracking-uri", uri, *args]) == 2
        assert f"MLflow tracking server {uri} does not answer" in one_line_error(capsys)


def test_tracking_stores_that_cannot_serve_are_named_and_nothing_is_created(tmp_path, capsys):
    from dashboards import leaderboard

    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    for uri, expected in ((f"sqlite:///{text}", f"{text} is not an SQLite database"),
                          (f"sqlite:///{text}/mlflow.db", f"cannot create {text}/mlflow.db"),
                          (str(tmp_path / "mlruns"), "use sqlite:///PATH (a local store) or http(s)://HOST:PORT"),
                          ("sqlit:///mlflow.db", "use sqlite:///PATH")):
        assert leaderboard.main(["--tracking-uri", uri]) == 2
        assert f"{uri}" in (err := one_line_error(capsys)) and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and text.read_text() == "not a database"


def test_corrupt_store_fails_the_sweep_once_before_any_trial(tmp_path, demo_store, capsys):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(demo_store, store)
    (store / "bah" / "dev.parquet").write_bytes(b"not parquet")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert entry_point("tune_ssl").main(["--features", str(store), "--tracking-uri", uri,
                                         "--storage-path", str(tmp_path / "ray")]) == 2
    assert f"{store / 'bah' / 'dev.parquet'}: cannot read" in one_line_error(capsys)
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args,expected", [
    (["data.corpus_weights={meld: 1.0}"], "data: corpus_weights: ['meld'] not in train_corpora"),
    (["model.hidden_dim=[1,"], "override 'model.hidden_dim=[1,': the value is not valid YAML"),
    (["--features", "{tmp}/nowhere"], "{tmp}/nowhere/manifest.json: missing"),
])
def test_train_cli_names_the_bad_input(tmp_path, capsys, args, expected):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert entry_point("train").main(["--output", str(tmp_path / "out"), *args]) == 2
    assert expected.replace("{tmp}", str(tmp_path)) in one_line_error(capsys)


@pytest.mark.parametrize("command,args,expected", [
    ("train", ["--threads", "0"], "argument --threads: must be a whole number >= 1, got '0'"),
    ("evaluate", ["--checkpoint", "x", "--n-resamples", "0"], "argument --n-resamples: must be a whole number >= 1"),
    ("evaluate", ["--checkpoint", "x", "--seed", "-1"], "argument --seed: must be a whole number >= 0"),
    ("promote", ["--by", "bogus"], "argument --by: invalid choice: 'bogus' (choose from 'mean_rank', 'dev_score'"),
    ("leaderboard", ["--by", "mean rank"], "argument --by: invalid choice: 'mean rank'"),
    ("report", ["--top-k", "-1"], "argument --top-k: must be a whole number >= 0, got '-1'"),
])
def test_numbers_and_choices_on_the_command_line_are_checked_naming_the_flag(capsys, command, args, expected):
    from dashboards import leaderboard, report

    main = {"leaderboard": leaderboard.main, "report": report.main}.get(command) or entry_point(command).main
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize("args,expected", [
    (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number > 0 and --gpus-per-trial one >= 0"),
    (["--gpus-per-trial", "inf"], "(got 1.0, inf)"),
    (["--seed", "-1"], "--seed: -1 is below 0"),
    (["--name", "../features"], "--name '../features': use letters, digits, '.', '_' and '-'"),
    (["--name", "/tmp/sweep"], "--name '/tmp/sweep': use letters"),
    (["--name", "a' or tags.role = 'sweep"], "use letters, digits"),
])
def test_sweep_flags_are_checked_before_ray_or_mlflow(tmp_path, capsys, args, expected):
    """A sweep's name becomes a folder under --storage-path (which tuning.cleanup removes) and an
    MLflow search value: a path or a quote in it is refused, like a NaN resource, before any work."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert entry_point("tune_ssl").main(["--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), *args]) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_names_are_one_safe_path_component():
    from scd_core.config import ConfigError
    from tuning.tracking import check_name

    for good in ("ssl-grid", "table16_ssl.v2", "quick-optuna-20261202-135205", "A" * 100):
        assert check_name(good, "--name") == good
    for bad in ("", "..", "../x", "a/b", "/abs", ".hidden", "-flag", "x'y", 'x"y', "a b", "A" * 101, "é"):
        with pytest.raises(ConfigError, match="--name"):
            check_name(bad, "--name")


def test_dashboards_and_cleanup_name_an_unknown_or_unsafe_sweep(tmp_path, capsys):
    from dashboards import leaderboard, report
    from tuning import cleanup
    from tuning.tracking import Tracking, parent_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert leaderboard.main(["--tracking-uri", uri]) == 2
    assert f"no sweep in {uri}" in one_line_error(capsys)
    parent_run(Tracking.resolve(uri), "ssl-grid", {})
    for main in (leaderboard.main, report.main, entry_point("promote").main, cleanup.main):
        assert main(["--tracking-uri", uri, "--sweep", "ssl-gird"]) == 2
        err = one_line_error(capsys)
        assert "'ssl-gird'" in err and ("its latest: ssl-grid" in err or main is cleanup.main), err
        assert main(["--tracking-uri", uri, "--sweep", "../ssl-grid"]) == 2
        assert "sweep name '../ssl-grid': use letters" in one_line_error(capsys)


def test_devices_this_machine_lacks_are_named():
    from scd_core.config import ConfigError
    from scd_core.data import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device 'gpu': expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"device 'cuda:{count}': this machine has "):
        resolve_device(f"cuda:{count}")


def test_a_model_or_batch_too_big_for_memory_is_refused_before_it_is_allocated(tmp_path, demo_store, capsys):
    assert entry_point("train").main(["--output", str(tmp_path / "out"), "--no-tracking", "--features",
                                      str(demo_store), *TINY, "model.hidden_dim=1000000"]) == 2
    err = one_line_error(capsys)
    assert "model.hidden_dim=1000000, model.out_features=16" in err and "GB free on cpu" in err, err
    # A batch's features alone past the free memory (batches repeat rows: any size can be asked for)
    assert entry_point("train").main(["--output", str(tmp_path / "out"), "--no-tracking", "--features",
                                      str(demo_store), *TINY, "optim.batch_size=100000000"]) == 2
    assert "optim.batch_size=100000000 rows of features take 2252.8 GB" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_promote_never_exports_over_a_folder_of_other_files(tmp_path):
    from scd_core.config import ConfigError
    from tuning.promote import promote
    from tuning.tracking import Tracking

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    tracking = Tracking.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ConfigError, match=r"--export .*mine holds files that are not a checkpoint's \(notes.txt\)"):
        promote(tracking, "0" * 32, folder)
    with pytest.raises(ConfigError, match="--model-name \"x'y\": use letters"):
        promote(tracking, "0" * 32, model_name="x'y")
    assert (folder / "notes.txt").read_text() == "mine"


def test_debug_flag_shows_the_traceback(tmp_path):
    from scd_core.config import ConfigError

    with pytest.raises(ConfigError, match="corpus_weights"):
        entry_point("train").main(["--debug", "--output", str(tmp_path / "out"), "data.corpus_weights={meld: 1.0}"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, demo_store):
    """An untrained tiny model's checkpoint on the demo corpora's modalities."""
    from scd_core.checkpoint import ModelSpec, build_model, save_checkpoint
    from scd_core.config import load_config
    from scd_core.features import Manifest

    cfg = load_config(None, TINY)
    dims = {m: info.dim for m, info in Manifest.read(demo_store).modalities.items()}
    spec = ModelSpec(cfg, dims, list(cfg.data.tasks))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", build_model(spec), spec)


@pytest.mark.parametrize("breakage,expected", [
    ("huge", "config.json: model.hidden_dim=1000000000, model.out_features=16"),
    ("truncated", "model.safetensors: not a readable safetensors file"),
    ("pickle", "model.safetensors: not a readable safetensors file"),
    ("json", "config.json: not readable JSON"),
    ("missing", "config.json: missing"),
])
def test_broken_checkpoint_is_named(tmp_path, checkpoint, demo_store, capsys, breakage, expected):
    import pickle
    import shutil

    broken = tmp_path / "ckpt"
    shutil.copytree(checkpoint, broken)
    weights = broken / "model.safetensors"
    if breakage == "huge":  # a model too big for memory: refused before torch allocates it
        raw = json.loads((broken / "config.json").read_text())
        raw["experiment"]["model"]["hidden_dim"] = 10**9
        (broken / "config.json").write_text(json.dumps(raw))
    elif breakage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif breakage == "pickle":
        weights.write_bytes(pickle.dumps({"weight": [1.0]}))
    elif breakage == "json":
        (broken / "config.json").write_text("{not json")
    else:
        (broken / "config.json").unlink()
    assert entry_point("evaluate").main(["--checkpoint", str(broken), "--features", str(demo_store)]) == 2
    assert f"{broken}/{expected}" in one_line_error(capsys)


def test_a_store_of_other_feature_sizes_is_named_when_evaluating(tmp_path, checkpoint, capsys):
    from scd_core.synthetic import generate

    other = generate(tmp_path / "other", "demo", 0, dims={"video": 8, "audio": 8, "text": 8, "behavior": 8})
    assert entry_point("evaluate").main(["--checkpoint", str(checkpoint), "--features", str(other)]) == 2
    err = one_line_error(capsys)
    assert f"{other}: the model takes audio features of size 1536, this store has 8" in err
    assert "video features of size 1024, this store has 8 (features of another encoder?)" in err


# ----------------------------------------------------------------- 9. NaN outputs

def test_nan_outputs_are_an_error_naming_corpus_and_count(tmp_path, checkpoint, demo_store, capsys):
    import torch

    from scd_core.checkpoint import load_model, save_checkpoint

    model, spec = load_model(checkpoint)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.fill_(float("nan"))
    broken = save_checkpoint(tmp_path / "nan", model, spec)
    assert entry_point("evaluate").main(["--checkpoint", str(broken), "--features", str(demo_store),
                                         "--n-resamples", "10"]) == 2
    err = one_line_error(capsys)
    assert "rows have non-finite" in err and err.split(":")[1].strip() in ("mosei", "fiv2", "bah", "meld"), err


def test_unusable_storage_path_fails_before_any_run(tmp_path, demo_store, capsys):
    storage = tmp_path / "a_file"
    storage.write_text("")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert entry_point("tune_ssl").main(["--features", str(demo_store), "--tracking-uri", uri,
                                         "--storage-path", str(storage / "ray")]) == 2
    assert f"--storage-path {storage / 'ray'}: cannot create the folder" in one_line_error(capsys)
    assert not (tmp_path / "mlflow.db").exists()  # no parent run left RUNNING: none was made


# ----------------------------------------------------------------- 10. debris

def test_terminated_sweep_marks_its_parent_failed_and_stops_its_ray(tmp_path, demo_store, mlflow_uri):
    """SIGTERM to a sweep's driver mid-trial: the parent run is FAILED with the reason, the trial
    it interrupted KILLED, and the local Ray it started (GCS, raylet, agents, workers) is gone."""
    import psutil

    space = tmp_path / "long.yaml"
    space.write_text(yaml.safe_dump({
        "strategy": "grid", "parameters": {"model.dropout": [0.0, 0.1]},
        "fixed": {"model.hidden_dim": 16, "model.out_features": 16, "model.num_heads": 2, "optim.epochs": 50,
                  "optim.batch_size": 512, "optim.early_stopping_patience": 0},
    }))
    uri = mlflow_uri
    with open(tmp_path / "log", "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "ray_jobs/tune_ssl.py", "--space", str(space), "--features", str(demo_store), "--name",
             "long", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--no-asha",
             "--max-concurrent", "1"], cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        training = []
        while not training and driver.poll() is None:  # until a trial has started
            try:
                driver.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            try:
                training = mlflow_runs(uri, "long", "trial")
            except Exception:  # the store is being created
                pass
        assert training, (tmp_path / "log").read_text()[-3000:]
        ray_processes = psutil.Process(driver.pid).children(recursive=True)
        assert ray_processes
        driver.terminate()
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0
    [parent] = mlflow_runs(uri, "long", "sweep")
    assert parent.info.status == "FAILED" and "SystemExit" in parent.data.tags["failure_reason"]
    assert "KILLED" in {r.info.status for r in mlflow_runs(uri, "long", "trial")}  # the one it interrupted
    _, alive = psutil.wait_procs(ray_processes, timeout=60)
    assert [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


# ----------------------------------------------------------------- 11. folder mode

def test_folder_of_videos_names_what_it_skips(tmp_path):
    from extraction.config import load_extraction_config
    from extraction.manifest import read_sources

    folder = tmp_path / "clips"
    (folder / "extras").mkdir(parents=True)
    for name in ("a.mp4", "b.MKV", "notes.txt", "thumb.jpg"):
        (folder / name).write_bytes(b"")
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "store"), "data_root": str(tmp_path),
                                      "sources": [{"corpus": "bah", "split": "test", "videos": "clips"}]}))
    with pytest.warns(UserWarning, match=rf"{folder}: skipped 3 entries that are not videos .*: "
                                         r"extras/, notes.txt, thumb.jpg"):
        records = read_sources(load_extraction_config(config))
    assert sorted(r["sample_id"] for r in records) == ["a", "b"]
