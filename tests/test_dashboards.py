"""Figures, tables and the sweep report, from a finished demo sweep in MLflow; and the MLflow
UI showing its leaderboard in headless Chromium."""

import csv
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib
import matplotlib.style
import numpy as np
import pytest
import torch
from cluster_fixtures import free_port

from dashboards.figures import confusion_figure, gradnorm_figure, parallel_coordinates_figure, pseudo_label_figure
from dashboards.report import main as report_main
from dashboards.report import study_from_runs
from scd_core.tables import Table
from dashboards.trial_figures import prediction_columns, trial_figures
from scd_core.checkpoint import load_model
from scd_core.model import count_parameters
from scd_core.data import load_training_data
from tuning.spaces import load_space
from tuning.tracking import Tracking

ROOT = Path(__file__).resolve().parents[1]
TRIAL_FIGURES = {"gradnorm.png", "learning_curves.png", "pseudo_labels.png", "confusion_meld.png",
                 "confusion_bah.png", "task_correlation.png"}


def trials(tracking: Tracking, sweep: str):
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], f"tags.sweep = '{sweep}' and tags.role = 'trial'")


def history(epochs: int = 3) -> list[dict]:
    return [{"epoch": e, "score": 0.1 * e, "metrics": {"mosei_mmf1": 0.2 + e / 10, "bah_uar": 0.5, "meld_wf1": 0.3},
             "weights": {f"{b}_{t}": 1.0 + e * (0.1 if t == "pt" else -0.05) for b in ("sup", "ssl") for t in ("emo", "pt", "ah")},
             "losses": {"sup_emo": 1.0 / (e + 1), "ssl_pt": 0.5}} for e in range(epochs)]


def test_gradnorm_figure_draws_every_weight_and_metric():
    fig = gradnorm_figure(history())
    top, bottom = fig.axes[:2]
    assert len(top.lines) == 6 and {line.get_label() for line in top.lines} >= {"PT (supervised)", "AH (semi-supervised)"}
    np.testing.assert_allclose(top.lines[1].get_ydata(), [1.0, 1.1, 1.2])  # sup_pt
    assert {line.get_label() for line in bottom.lines} == {"mosei_mmf1", "bah_uar", "meld_wf1 (zero-shot)"}


def test_pseudo_label_figure_stacks_class_shares():
    shares = {"emo_happiness": 0.7, "emo_neutral": 0.3, "ah_presence": 1.0, "pt_openness_high": 0.4}
    epochs = [{"epoch": e, "acceptance": {"emo": 0.9, "ah": 0.5}, "pseudo_labels": shares} for e in range(3)]
    fig = pseudo_label_figure(epochs)
    acceptance, emo, ah, pt = fig.axes[:4]
    assert {line.get_label() for line in acceptance.lines} == {"EMO", "AH"}
    assert len(emo.collections) == 7 and len(ah.collections) == 2  # one band per class
    top = emo.collections[-1].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(1.0)  # the bands add up to every accepted pseudo-label
    np.testing.assert_allclose(pt.lines[0].get_ydata(), [0.4] * 3)


def test_confusion_figure_normalises_rows():
    fig = confusion_figure(np.array([[3, 1], [0, 0]]), ["absence", "presence"], "BAH")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.75\n(3)", "0.25\n(1)", "0.00\n(0)", "0.00\n(0)"]


@pytest.mark.parametrize("n", [2, 24])
def test_parallel_coordinates_shows_every_trial_readably(n, tmp_path):
    """Every trial a visible line (two trials included), named objective, labels clear of the colour bar."""
    from matplotlib.colors import to_rgb

    rng = np.random.default_rng(n)
    variants = ["baseline", "ssl.alpha_ss=1.25", "model.graph=none"]
    params = [{"model.dropout": float(rng.uniform(0, 0.3)), "optim.lr": float(10 ** rng.uniform(-3.5, -2.5)),
               "model.hidden_dim": int(rng.choice([64, 128])), "variant": variants[i % 3]} for i in range(n)]
    scores = [float(x) for x in rng.uniform(0.2, 0.6, n)]
    names = ["model.dropout", "model.hidden_dim", "optim.lr", "variant"]
    definition = "best dev score = mean over tasks of " + ", ".join(["(some_metric + another_metric) / 2"] * 3)
    with matplotlib.rc_context():
        matplotlib.style.use("ggplot")  # what Optuna's plots leave pyplot in: grey axes
        fig = parallel_coordinates_figure(params, scores, names, "best dev score", ["optim.lr"], "sweep", definition)
    fig.savefig(tmp_path / f"parallel_{n}.png", dpi=110)
    ax, bar = fig.axes
    lines = [line for line in ax.lines if len(line.get_xdata()) == len(names) + 1]
    assert len(lines) == n and all(np.isfinite(line.get_ydata()).all() for line in lines)
    background = np.array(to_rgb(ax.get_facecolor()))
    assert tuple(background) == (1.0, 1.0, 1.0)  # white, whatever style pyplot was left in
    assert min(np.linalg.norm(np.array(to_rgb(line.get_color())) - background) for line in lines) > 0.3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["best dev score", *names]
    assert bar.get_ylabel() == "best dev score" and "Objective Value" not in {t.get_text() for t in fig.findobj(
        lambda a: hasattr(a, "get_text"))}
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # the constrained layout as saved
    renderer = canvas.get_renderer()
    bar_box = bar.get_window_extent(renderer)
    texts = [*ax.texts, *ax.get_xticklabels(), ax.title, ax.xaxis.label]
    assert not [t.get_text() for t in texts if t.get_text() and t.get_window_extent(renderer).overlaps(bar_box)]
    page = fig.bbox  # and nothing is cut at the figure's edges
    assert not [t.get_text() for t in texts if t.get_text() and not (
        page.x0 <= t.get_window_extent(renderer).x0 and t.get_window_extent(renderer).x1 <= page.x1)]
    # Each axis names its values: the variants, and the range of the continuous parameters.
    labels = {t.get_text() for t in ax.texts}
    assert set(variants[:min(n, 3)]) <= labels and f"{max(scores):.3g}" in labels


def test_table_renders_the_same_numbers_everywhere(tmp_path):
    table = Table("T", ["name", "score"], [{"name": "a<b", "score": 0.123456}, {"name": "c", "score": None}])
    paths = table.write(tmp_path, "t")
    assert [p.name for p in paths] == ["t.csv", "t.md", "t.html"]
    assert "0.123456" in paths[0].read_text()
    assert "| a<b    | 0.1235  |" in paths[1].read_text() and "a&lt;b" in paths[2].read_text()
    assert "<td>-</td>" in paths[2].read_text()


def test_trial_figures_of_a_single_task_model(demo_store):
    """An AH-only model predicts one column: no correlation figure, the others drawn."""
    from scd_core.config import load_config
    from scd_core.model import MCDM

    cfg = load_config(None, ["data.tasks=[ah]", "data.train_corpora=[bah]", "data.zero_shot_corpora=[]",
                             "model.hidden_dim=16", "model.out_features=16", "model.num_heads=2"])
    data = load_training_data(cfg, demo_store, torch.device("cpu"))
    model = MCDM.from_config(cfg.model, data.modality_dims, ["ah"])
    figures = trial_figures(model, data.dev, history())
    assert set(figures) == {"gradnorm.png", "learning_curves.png", "pseudo_labels.png", "confusion_bah.png"}


def test_trial_figures_of_a_model(demo_store, quick_sweep):
    settings, result = quick_sweep
    tracking = Tracking.resolve(settings.tracking_uri)
    run = min(trials(tracking, "quick"), key=lambda r: r.data.metrics["mean_rank"])
    model, spec = load_model(tracking.client().download_artifacts(run.info.run_id, "checkpoint"))
    dev = load_training_data(spec.config, demo_store, torch.device("cpu")).dev
    values, names = prediction_columns({"emo": torch.randn(4, 7), "pt": torch.rand(4, 5), "ah": torch.randn(4, 2)})
    assert values.shape == (4, 13) and names[0] == "emo_neutral" and names[-1] == "ah_presence"
    assert np.allclose(values[:, :7].sum(axis=1), 1, atol=1e-5)
    figures = trial_figures(model, dev, history())
    assert set(figures) == TRIAL_FIGURES
    # Each confusion matrix counts every labelled dev row once.
    for corpus in ("meld", "bah"):
        counts = [int(re.search(r"\((\d+)\)", t.get_text()).group(1)) for t in figures[f"confusion_{corpus}.png"].axes[0].texts]
        task = "emo" if corpus == "meld" else "ah"
        assert sum(counts) == int(dev[corpus].label_mask[task].sum())


def test_sweep_logs_figures_tables_and_the_optuna_study(quick_sweep, tmp_path):
    settings, result = quick_sweep
    tracking = Tracking.resolve(settings.tracking_uri)
    client = tracking.client()
    report = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    expected = {f"report/{t}.{ext}" for t in ("leaderboard", "ablation", "comparison", "cost") for ext in ("csv", "md", "html")}
    assert expected | {"report/report.md", "report/param_importance.png", "report/parallel_coordinates.png"} == report
    # Every trial has its figures, those ASHA stopped early too (the driver drew them from their
    # last checkpoint: tests/test_tune.py shows that step).
    runs = trials(tracking, "quick")
    for run in runs:
        assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "figures")} == TRIAL_FIGURES

    # The study behind the importance plot holds every trial with its sampled values and score.
    study = study_from_runs(runs, load_space(settings.space))
    assert len(study.trials) == len(runs) == 3
    by_score = {round(t.value, 9): t.params for t in study.trials}
    for run in runs:
        params = by_score[round(run.data.metrics["best/dev_score"], 9)]
        assert params["model.hidden_dim"] == int(run.data.params["model.hidden_dim"])
        assert math.isclose(params["optim.lr"], float(run.data.params["optim.lr"]))

    # The report CLI writes the same tables locally.
    assert report_main(["--sweep", "quick", "--tracking-uri", settings.tracking_uri, "--out", str(tmp_path),
                        "--top-k", "2"]) == 0
    out = tmp_path / "quick"
    cost = list(csv.DictReader((out / "cost.csv").open()))
    assert len(cost) == 3 and all(int(row["parameters"]) > 0 and float(row["seconds_per_epoch"]) > 0 for row in cost)
    assert {row["device"] for row in cost} == {"cpu"}  # the device the trials ran on, not the config's "auto"
    # Rows are named by the values each trial varied, rounded (Optuna samples long floats).
    labels = [row["trial"] for row in csv.DictReader((out / "ablation.csv").open())]
    numbers = [float(x) for label in labels for x in re.findall(r"=(\d+\.\d+)", label)]
    assert labels and all("dropout=" in label for label in labels)
    assert numbers and all(x == float(f"{x:.4g}") for x in numbers), labels  # 4 significant digits at most
    best = min(runs, key=lambda r: r.data.metrics["mean_rank"])
    model, _ = load_model(client.download_artifacts(best.info.run_id, "checkpoint"))
    assert any(int(row["parameters"]) == count_parameters(model) for row in cost)
    comparison = list(csv.DictReader((out / "comparison.csv").open()))
    assert [row["model"] for row in comparison][-1] == "majority class / mean trait" and len(comparison) == 3
    for row in comparison:
        for key in ("mosei_mmf1", "fiv2_mccc", "bah_uar", "meld_wf1"):
            value, low, high = map(float, re.findall(r"-?\d+\.\d+", row[key]))
            assert low <= value <= high, (row["model"], key, row[key])
    assert (out / "param_importance.png").stat().st_size > 10_000


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def mlflow_ui(quick_sweep, tmp_path):
    """``mlflow server`` over the sweep's store, on 127.0.0.1, one worker, no job runner."""
    settings, _ = quick_sweep
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("mlflow server did not start:\n" + (tmp_path / "mlflow-server.log").read_text()[-3000:])
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_mlflow_ui_shows_the_trials_and_their_mean_rank(quick_sweep, mlflow_ui, tmp_path):
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    settings, result = quick_sweep
    runs = trials(Tracking.resolve(settings.tracking_uri), "quick")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000"):
        options.add_argument(flag)
    try:
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as err:  # the browser itself cannot run on this machine
        pytest.skip(f"headless Chromium did not start: {err.msg}")
    try:
        browser.get(f"{mlflow_ui}/{result.view}")
        names = [r.data.tags["mlflow.runName"] for r in runs]

        def table_text(driver):
            text = driver.find_element("tag name", "body").text
            return text if "mean_rank" in text and all(n in text for n in names) else False

        text = WebDriverWait(browser, 90, poll_frequency=1).until(table_text)
        screenshot = tmp_path / "mlflow_leaderboard.png"
        browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()
    assert screenshot.stat().st_size > 20_000
    print(f"screenshot: {screenshot}")
    for run in runs:
        rank = run.data.metrics["mean_rank"]
        assert any(s in text for s in {repr(rank), f"{rank:.2f}", f"{rank:.3f}", f"{rank:.4f}"}), (rank, text[-2000:])
