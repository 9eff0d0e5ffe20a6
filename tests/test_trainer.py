"""Training on the synthetic demo corpora: it learns, it resumes exactly, checkpoints are safe."""

import json
import math

import numpy as np
import pytest
import torch

from scd_core.checkpoint import load_model
from scd_core.config import load_config
from scd_core.evaluation import TASK_METRICS, dev_score, evaluate, predict
from scd_core.features import Manifest
from scd_core.data import load_training_data
from scd_core.trainer import NonFiniteLossError, Trainer

SMALL = ["model.hidden_dim=64", "model.out_features=64", "optim.lr=1e-3", "optim.early_stopping_patience=0"]


@pytest.fixture(scope="module")
def small_data(demo_store):
    cfg = load_config(None, SMALL)
    return cfg, load_training_data(cfg, demo_store, torch.device("cpu"))


def task_means(metrics):
    return {t: np.mean([metrics[m] for m in names]) for t, names in TASK_METRICS.items()}


def test_short_run_beats_untrained_model_on_every_task(small_data, tmp_path):
    cfg, data = small_data
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 8})})
    trainer = Trainer(cfg, data, tmp_path)
    before = task_means(evaluate(trainer.model, data.dev))
    reports = []
    result = trainer.fit(on_epoch=reports.append)
    best, _ = load_model(tmp_path / "best")
    after = task_means(evaluate(best, data.dev))
    for task in ("emo", "pt", "ah"):
        assert after[task] > before[task] + 0.02, (task, before[task], after[task])

    assert [r.epoch for r in reports] == list(range(8))
    report = reports[-1]
    assert set(report.weights) == {f"{b}_{t}" for b in ("sup", "ssl") for t in ("emo", "pt", "ah")}
    assert sum(report.weights[f"sup_{t}"] for t in ("emo", "pt", "ah")) == pytest.approx(3.0)
    assert sum(report.weights[f"ssl_{t}"] for t in ("emo", "pt", "ah")) == pytest.approx(0.9)
    assert all(0 <= report.acceptance[t] <= 1 for t in ("emo", "pt", "ah"))
    assert {"sup_emo", "sup_pt", "sup_ah", "total"} <= set(report.losses)
    assert result.best_score == max(r.score for r in reports)
    assert reports[result.best_epoch].best


def test_resume_matches_uninterrupted_run(small_data, tmp_path):
    cfg, data = small_data
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 3})})
    full = Trainer(cfg, data, tmp_path / "full")
    full.fit()

    first = Trainer(cfg, data, tmp_path / "split")
    first.fit(epochs=2)  # "interrupted" after two epochs
    resumed = Trainer(cfg, data, tmp_path / "split")
    result = resumed.fit(resume=True)

    assert [r.epoch for r in result.history] == [0, 1, 2]
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert full.gradnorm["sup"].weights == resumed.gradnorm["sup"].weights
    assert full.history[-1].metrics == resumed.history[-1].metrics


def test_checkpoint_is_safetensors_and_json(small_data, tmp_path, demo_store):
    cfg, data = small_data
    trainer = Trainer(cfg, data, tmp_path)
    trainer.fit(epochs=1)
    files = {p.name for p in (tmp_path / "last").iterdir()}
    assert files == {"model.safetensors", "config.json", "optimizer.safetensors", "state.json"}
    state = json.loads((tmp_path / "last" / "state.json").read_text())
    assert state["epoch"] == 0 and state["gradnorm"]["sup"]["names"] == ["emo", "pt", "ah"]
    model, spec = load_model(tmp_path / "last")
    assert spec.config == cfg and spec.tasks == ["emo", "pt", "ah"]
    # The training store's manifest entries travel with the model (prediction rebuilds the extraction).
    assert spec.store_modalities == Manifest.read(demo_store).modalities
    mosei = data.dev["mosei"]
    expected = predict(trainer.model, mosei)["emo"]
    assert torch.allclose(predict(model, mosei)["emo"], expected)


def test_non_finite_loss_names_the_step(small_data):
    cfg, data = small_data
    trainer = Trainer(cfg, data)
    with torch.no_grad():
        next(iter(trainer.model.heads.values())).reset_parameters()
        for p in trainer.model.modality_projectors.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 0: non-finite loss"):
        trainer.train_epoch(0)


def test_optimisers_and_schedulers_run(small_data):
    cfg, data = small_data
    for optimizer, scheduler in [("adamw", "cosine"), ("sgd", "onecycle"), ("rmsprop", "none"), ("lion", "plateau")]:
        c = load_config(None, [*SMALL, f"optim.optimizer={optimizer}", f"optim.scheduler={scheduler}",
                               "optim.epochs=1", "ssl.gradnorm=false"])
        trainer = Trainer(c, data)
        result = trainer.fit()
        assert np.isfinite(result.best_score)
        assert all(w == 1.0 for k, w in result.history[0].weights.items())


def test_trunk_backward_equals_naive_gradnorm_and_total_gradient(small_data):
    """The one-pass scheme of Trainer._trunk_backward against per-component full backward passes."""
    from scd_core.gradnorm import gradient_norms
    from scd_core.losses import supervised_losses
    from scd_core.pseudo_labels import PseudoLabeler

    cfg, data = small_data
    cfg = load_config(None, [*SMALL, "model.dropout=0", "ssl.tau_emo=0.1", "ssl.tau_ah=0.5", "ssl.tau_pt=0.5"])
    trainer = Trainer(cfg, data)
    trainer.gradnorm["sup"].weights = {"emo": 0.5, "pt": 2.0, "ah": 0.5}  # unequal, to catch a mix-up
    rows = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))[:64]
    batch = data.train.index(rows)
    losses, norms = trainer.backward(batch, rows)
    fast = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    model = trainer.model
    outputs = model(batch.features, batch.modality_mask)
    sup = supervised_losses(outputs, batch.labels, batch.label_mask)
    ssl = PseudoLabeler(cfg.ssl, trainer.tasks, data.train).losses(outputs, outputs, batch.label_mask, rows)
    flat = {**{f"sup_{t}": v for t, v in sup.items()}, **{f"ssl_{t}": v for t, v in ssl.items()}}
    assert set(flat) == set(norms) and len(flat) == 6
    naive_norms = gradient_norms(flat, model.shared_parameters())
    for name in flat:
        assert norms[name] == pytest.approx(naive_norms[name], rel=1e-4), name
        assert losses[name].item() == pytest.approx(flat[name].item(), rel=1e-6)
    w = {f"sup_{t}": x for t, x in trainer.gradnorm["sup"].weights.items()}
    w.update({f"ssl_{t}": x for t, x in trainer.gradnorm["ssl"].weights.items()})
    model.zero_grad(set_to_none=True)
    sum(w[n] * v for n, v in flat.items()).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(fast[name], param.grad, rtol=1e-4, atol=1e-7), name


def test_single_task_run_on_every_corpus_scores_only_its_task(demo_store):
    """Setting (b) of the paper's Table 2: one head, the other corpora as unlabelled rows."""
    # tau_pt = 0.5 accepts every trait guess: after one epoch whether any passes 0.6 depends on the model.
    cfg = load_config(None, [*SMALL, "data.tasks=[pt]", "optim.epochs=1", "ssl.tau_pt=0.5"])
    data = load_training_data(cfg, demo_store, torch.device("cpu"))
    assert set(data.train.corpora) == {"mosei", "fiv2", "bah"} and set(data.dev) == {"fiv2"}
    report = Trainer(cfg, data).fit().history[0]
    assert set(report.metrics) == {"fiv2_macc", "fiv2_mccc", "fiv2_mccc_pooled"} and np.isfinite(report.score)
    assert "ssl_pt" in report.losses  # pseudo-labels on the other corpora's rows


def test_semi_supervised_options_train_and_resume_exactly(small_data, tmp_path):
    """EMA teacher, soft pseudo-labels, FlexMatch, modality dropout and the A.8 rebalance together:
    the run learns nothing NaN, logs its pseudo-label shares, and a resume is exact (the teacher
    and the class memory travel in the checkpoint)."""
    _, data = small_data
    cfg = load_config(None, [*SMALL, "optim.epochs=3", "data.modality_dropout=0.3", "ssl.teacher=ema",
                             "ssl.pseudo_labels=soft", "ssl.class_balance=flexmatch", "ssl.rebalance_epoch=2"])
    full = Trainer(cfg, data, tmp_path / "full")
    result = full.fit()
    shares = result.history[-1].pseudo_labels
    assert set(shares) >= {"emo_neutral", "ah_presence", "pt_openness_high"}
    emo = [shares[f"emo_{c}"] for c in ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")]
    assert sum(emo) == pytest.approx(1.0)
    assert (tmp_path / "full" / "last" / "training.safetensors").exists()

    first = Trainer(cfg, data, tmp_path / "split")
    first.fit(epochs=1)
    resumed = Trainer(cfg, data, tmp_path / "split")
    resumed.fit(resume=True)
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in full.teacher.model.state_dict().items():
        assert torch.equal(value, resumed.teacher.model.state_dict()[name]), name
    assert torch.equal(full.pseudo_labeler.memory["emo"], resumed.pseudo_labeler.memory["emo"])
    assert full.history[-1].metrics == resumed.history[-1].metrics


def test_alignment_option_trains(small_data):
    _, data = small_data
    cfg = load_config(None, [*SMALL, "optim.epochs=1", "ssl.class_balance=align", "ssl.tau_emo=0.3"])
    report = Trainer(cfg, data).fit().history[0]
    assert np.isfinite(report.score) and {"ssl_emo", "ssl_ah"} <= set(report.losses)


def test_warmup_and_rebalance(small_data):
    _, data = small_data
    cfg = load_config(None, [*SMALL, "optim.epochs=2", "ssl.warmup_epochs=1", "ssl.rebalance_epoch=1",
                             "ssl.tau_emo=0.2", "ssl.tau_pt=0.5"])
    trainer = Trainer(cfg, data)
    history = []
    rebalanced = []
    original = trainer.train_step

    def spy(batch, rows, epoch, step):  # the ssl weights at the first step of epoch 1
        if epoch == 1 and step == 0:
            rebalanced.append(dict(trainer.gradnorm["ssl"].weights))
        return original(batch, rows, epoch, step)

    trainer.train_step = spy
    trainer.fit(on_epoch=history.append)
    assert not any(k.startswith("ssl_") for k in history[0].losses)  # warm-up: no pseudo-label loss
    assert all(math.isnan(a) for a in history[0].acceptance.values())
    assert {"ssl_emo", "ssl_pt", "ssl_ah"} <= set(history[1].losses)
    assert rebalanced[0] == pytest.approx({t: 0.3 for t in ("emo", "pt", "ah")})


def test_emo_target_switch_changes_the_supervised_loss(small_data):
    _, data = small_data
    rows = torch.arange(64)
    batch = data.train.index(rows)
    losses = {}
    for target in ("distribution", "argmax"):
        cfg = load_config(None, [*SMALL, f"ssl.emo_target={target}", "model.dropout=0"])
        trainer = Trainer(cfg, data)
        losses[target] = trainer.backward(batch, rows)[0]["sup_emo"].item()
        model = trainer.model
    outputs = model(batch.features, batch.modality_mask)["emo"]
    labelled = batch.label_mask["emo"]
    target = batch.labels["emo"][labelled].argmax(dim=1)
    assert losses["argmax"] == pytest.approx(torch.nn.functional.cross_entropy(outputs[labelled], target).item(),
                                             rel=1e-5)
    soft = batch.labels["emo"][labelled]
    soft = soft / soft.sum(dim=1, keepdim=True)
    assert not torch.equal(soft, torch.nn.functional.one_hot(target, 7).float())  # the two targets differ here
    expected = -(soft * torch.log_softmax(outputs[labelled], dim=1)).sum(dim=1).mean()
    assert losses["distribution"] == pytest.approx(expected.item(), rel=1e-5)


def test_modality_dropout_trains_only(small_data):
    _, data = small_data
    cfg = load_config(None, [*SMALL, "data.modality_dropout=0.5"])
    trainer = Trainer(cfg, data)
    before = evaluate(trainer.model, data.dev)
    again = evaluate(trainer.model, data.dev)
    assert before == again  # evaluation (eval mode) never drops modalities


def test_selection_without_a_modality_scores_both_patterns(small_data, demo_store):
    cfg = load_config(None, [*SMALL, "optim.epochs=1", "data.select_without=[behavior]"])
    data = load_training_data(cfg, demo_store, torch.device("cpu"))
    assert set(data.dev_without) == {"mosei", "fiv2", "bah"}
    assert not data.dev_without["mosei"].modality_mask[:, cfg.data.modalities.index("behavior")].any()
    report = Trainer(cfg, data).fit().history[0]
    full = {k: v for k, v in report.metrics.items() if not k.startswith("without/")}
    without = {k.removeprefix("without/"): v for k, v in report.metrics.items() if k.startswith("without/")}
    assert set(without) == {k for k in full if not k.startswith("meld")}
    assert report.score == pytest.approx((dev_score(full, cfg.data.tasks) + dev_score(without, cfg.data.tasks)) / 2)
    with pytest.raises(Exception, match="select_without"):
        load_config(None, ["data.modalities=[text]", "data.select_without=[text]"])
