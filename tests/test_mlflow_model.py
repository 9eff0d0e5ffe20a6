"""The promoted champion as an MLflow model: loaded with ``mlflow.pyfunc.load_model`` and served
by the real ``mlflow models serve`` on 127.0.0.1, giving the predictions ``predict`` gives."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from cluster_fixtures import free_port
from tracking_fixtures import copy_of_store

from scd_core.checkpoint import ModelSpec, build_model, load_model, save_checkpoint
from scd_core.config import build_config
from scd_core.features import ModalityInfo
from scd_core.inference import output_columns, predict_vectors
from tuning.promote import ALIAS, MODEL_NAME, ChampionIsBetter, fetch_model, promote
from tuning.tracking import Tracking

DIMS = {"video": 6, "audio": 4, "text": 5}
URI = f"models:/{MODEL_NAME}@{ALIAS}"
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def champion(tmp_path_factory, empty_mlflow_store):
    """A trial run holding a tiny checkpoint, promoted: (tracking, export dir)."""
    tmp = tmp_path_factory.mktemp("registry")
    cfg = build_config({"model": {"hidden_dim": 16, "out_features": 16, "num_heads": 2},
                        "data": {"modalities": list(DIMS)}})
    store = {m: ModalityInfo(encoder=f"test/{m}", dim=d, fingerprint="f" * 16) for m, d in DIMS.items()}
    spec = ModelSpec(cfg, DIMS, ["emo", "pt", "ah"], store)
    save_checkpoint(tmp / "best", build_model(spec), spec)
    tracking = Tracking.resolve(copy_of_store(empty_mlflow_store, tmp))
    client = tracking.client()
    run = client.create_run(tracking.experiment_id(client), run_name="trial", tags={"sweep": "s", "role": "trial"})
    client.log_artifacts(run.info.run_id, str(tmp / "best"), "checkpoint")
    client.set_terminated(run.info.run_id)
    done = promote(tracking, run.info.run_id, tmp / "export")
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    return tracking, done.export_dir


def feature_rows(n: int = 4) -> list[dict]:
    """JSON-able rows of feature vectors, some modalities missing (null)."""
    rng = np.random.default_rng(0)
    rows = [{f"f_{m}": rng.normal(size=d).round(4).tolist() for m, d in DIMS.items()} for _ in range(n)]
    rows[1]["f_audio"] = None
    rows[2].update(f_video=None, f_text=None)
    return rows


def expected(export: Path, rows: list[dict]) -> pd.DataFrame:
    """What predict's model stage gives for these features."""
    model, spec = load_model(export)
    vectors = {m: [r[f"f_{m}"] for r in rows] for m in DIMS}
    return pd.DataFrame(predict_vectors(model, vectors, spec.modality_dims))


def test_champion_is_a_pyfunc_model_with_a_signature(champion):
    tracking, export = champion
    assert {p.name for p in export.iterdir()} == {"model.safetensors", "config.json"}
    mlflow.set_tracking_uri(tracking.uri)
    model = mlflow.pyfunc.load_model(URI)
    signature = model.metadata.get_input_schema()
    assert signature.input_names() == ["f_video", "f_audio", "f_text"]
    assert model.metadata.get_output_schema().input_names() == list(output_columns(["emo", "pt", "ah"], list(DIMS)))
    rows = feature_rows()
    got = model.predict(pd.DataFrame(rows))
    pd.testing.assert_frame_equal(got, expected(export, rows))
    assert got["present_audio"].tolist() == [True, False, True, True]
    # Loading runs the model's code file and reads safetensors: nothing pickled anywhere in the model.
    local = Path(mlflow.artifacts.download_artifacts(URI))
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".bin")]
    assert (local / "artifacts" / "checkpoint" / "model.safetensors").is_file()
    assert fetch_model(URI, tracking).joinpath("config.json").is_file()  # evaluate/predict still get a checkpoint
    with pytest.raises(MlflowException, match=r"row\(s\) \[0\]: every modality is missing"):
        model.predict(pd.DataFrame([{"f_video": None, "f_audio": None, "f_text": None}]))


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_mlflow_models_serve_answers_like_predict(champion, tmp_path):
    tracking, export = champion
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    # From an empty folder: the model brings its own code (scd_core) and weights.
    server = subprocess.Popen([MLFLOW, "models", "serve", "-m", URI, "--env-manager", "local", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": tracking.uri},
                              start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the server did not come up:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        rows = feature_rows()
        status, answer = post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": rows})
        assert status == 200, answer
        got = pd.DataFrame(answer["predictions"])
        want = expected(export, rows)
        assert list(got.columns) == list(want.columns)
        for column in want:
            if want[column].dtype.kind == "f":
                np.testing.assert_allclose(got[column], want[column], rtol=1e-5, atol=1e-6)
            else:
                assert got[column].tolist() == want[column].tolist(), column
        rows[0]["f_video"] = rows[0]["f_video"][:3]
        status, answer = post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": rows})
        assert status >= 400 and "column f_video, row 0" in answer["message"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_promotion_guards_reuse_a_version_and_keep_a_better_champion(tmp_path, mlflow_uri):
    """Re-promoting a run reuses its version; a worse run replaces the champion only when told."""
    cfg = build_config({"model": {"hidden_dim": 8, "out_features": 8, "num_heads": 2},
                        "data": {"modalities": list(DIMS)}})
    spec = ModelSpec(cfg, DIMS, ["emo", "pt", "ah"])
    save_checkpoint(tmp_path / "best", build_model(spec), spec)
    tracking = Tracking.resolve(mlflow_uri)
    client = tracking.client()

    def trial(score: float) -> str:
        run = client.create_run(tracking.experiment_id(client), tags={"sweep": "s", "role": "trial"})
        client.log_artifacts(run.info.run_id, str(tmp_path / "best"), "checkpoint")
        for name in ("dev_score", "mosei_mmf1", "mosei_mwacc", "fiv2_macc", "fiv2_mccc", "bah_mf1", "bah_uar"):
            client.log_metric(run.info.run_id, f"best/{name}", score)
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    good, worse, best = trial(0.6), trial(0.5), trial(0.7)
    first = promote(tracking, good, tmp_path / "e1")
    again = promote(tracking, good, tmp_path / "e2")
    assert again.reused and again.version == first.version
    assert len(client.search_model_versions(f"name = '{MODEL_NAME}'")) == 1

    with pytest.raises(ChampionIsBetter, match=r"dev score 0.6000 on the same dev metrics, above run .* 0.5000"):
        promote(tracking, worse, tmp_path / "e3")
    assert client.get_model_version_by_alias(MODEL_NAME, ALIAS).run_id == good  # untouched
    forced = promote(tracking, worse, tmp_path / "e4", replace_better=True)
    assert forced.replaced and client.get_model_version_by_alias(MODEL_NAME, ALIAS).run_id == worse
    assert promote(tracking, best, tmp_path / "e5").replaced is None  # better: no flag needed
    assert client.get_model_version_by_alias(MODEL_NAME, ALIAS).run_id == best
