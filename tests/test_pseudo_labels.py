"""Pseudo-labels: the paper's rule against hand-computed values, and each option's effect."""

import math

import numpy as np
import pytest
import torch

from scd_core.augment import drop_modalities, without_modalities
from scd_core.config import SSLConfig
from scd_core.features import CorpusTensors
from scd_core.pseudo_labels import EMATeacher, PseudoLabeler, label_prior, sharpen


def train_rows(n: int = 4, emo_labelled=(False, True, True, True), pt_labelled=(False, False, False, True),
               ah_labelled=(False, False, False, True), emo_labels=None, ah_labels=None) -> CorpusTensors:
    """A tiny training set: only label masks and labels matter to the pseudo-labeller."""
    emo = torch.zeros(n, 7) if emo_labels is None else torch.as_tensor(emo_labels, dtype=torch.float32)
    return CorpusTensors(
        modalities=("text",), corpora=("x",), sample_ids=np.array([str(i) for i in range(n)], dtype=object),
        features={"text": torch.zeros(n, 2)}, modality_mask=torch.ones(n, 1, dtype=torch.bool),
        labels={"emo": emo, "pt": torch.zeros(n, 5),
                "ah": torch.zeros(n, dtype=torch.long) if ah_labels is None else torch.as_tensor(ah_labels)},
        label_mask={"emo": torch.tensor(emo_labelled), "pt": torch.tensor(pt_labelled),
                    "ah": torch.tensor(ah_labelled)},
        corpus_index=torch.zeros(n, dtype=torch.long))


def labeller(tasks=("emo", "pt", "ah"), train=None, **ssl) -> PseudoLabeler:
    cfg = SSLConfig(**{"tau_emo": 0.6, "tau_pt": 0.6, "tau_ah": 0.6, **ssl})
    return PseudoLabeler(cfg, tasks, train if train is not None else train_rows())


def fixed_outputs():
    # AH: three unlabelled rows, softmax maxima 0.881, 0.5, 0.731 -> tau 0.6 keeps rows 0 and 2.
    ah = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    # PT: p = 0.9 (keep, target 1), 0.55 (drop), 0.3 (keep, target 0), ...
    pt = torch.tensor([[0.9, 0.55, 0.5, 0.5, 0.5], [0.3, 0.45, 0.5, 0.5, 0.5], [0.5, 0.65, 0.5, 0.5, 0.5],
                       [0.1, 0.9, 0.5, 0.5, 0.5]])
    emo = torch.zeros(4, 7)
    emo[0, 4] = 10.0  # confident happiness
    return {"emo": emo, "pt": pt, "ah": ah}


def masks(train: CorpusTensors):
    return train.label_mask


def test_paper_rule_hand_computed():
    train = train_rows()
    pl = labeller(train=train)
    outputs = fixed_outputs()
    losses = pl.losses(outputs, outputs, masks(train), torch.arange(4))
    acceptance, shares = pl.epoch_stats()

    assert acceptance["ah"] == pytest.approx(2 / 3)
    expected_ah = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (math.e + 1))) / 2
    assert losses["ah"].item() == pytest.approx(expected_ah, rel=1e-6)
    assert shares["ah_absence"] == 0.5 and shares["ah_presence"] == 0.5

    # PT entries kept: 0.9 (->1), 0.3 (->0), 0.65 (->1); 0.55, 0.45 and the 0.5s are inside the margin.
    assert acceptance["pt"] == pytest.approx(3 / 15)
    assert losses["pt"].item() == pytest.approx(-(math.log(0.9) + math.log(0.7) + math.log(0.65)) / 3, rel=1e-6)
    assert shares["pt_openness_high"] == 0.5 and shares["pt_conscientiousness_high"] == 1.0
    assert math.isnan(shares["pt_extraversion_high"])

    assert acceptance["emo"] == 1.0 and shares["emo_happiness"] == 1.0
    p = torch.softmax(outputs["emo"][0], 0)[4].item()
    assert losses["emo"].item() == pytest.approx(-math.log(p), rel=1e-3)
    # The counters restart after each read.
    assert all(math.isnan(a) for a in pl.epoch_stats()[0].values())


def test_nothing_passes_means_no_loss_and_targets_are_detached():
    train = train_rows(3, (True,) * 3, (True,) * 3, (False,) * 3)
    pl = labeller(("ah",), train)
    ah = torch.zeros(3, 2, requires_grad=True)
    assert pl.losses({"ah": ah}, {"ah": ah}, masks(train), torch.arange(3)) == {}
    assert pl.epoch_stats()[0]["ah"] == 0.0

    logits = torch.tensor([[3.0, 0.0]], requires_grad=True)
    one = train_rows(1, (True,), (True,), (False,))
    loss = labeller(("ah",), one).losses({"ah": logits}, {"ah": logits}, masks(one), torch.arange(1))["ah"]
    loss.backward()
    # Gradient of CE w.r.t. logits is softmax - onehot(target): the target is a constant.
    assert torch.allclose(logits.grad, torch.softmax(logits.detach(), 1) - torch.tensor([[1.0, 0.0]]))


def test_targets_come_from_the_teacher_outputs():
    train = train_rows()
    student = fixed_outputs()
    teacher = {k: v.clone() for k, v in student.items()}
    teacher["ah"] = torch.tensor([[0.0, 2.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # flips rows 0 and 2
    loss = labeller(("ah",), train).losses(student, teacher, masks(train), torch.arange(4))["ah"]
    logp = torch.log_softmax(student["ah"], 1)
    assert loss.item() == pytest.approx(-(logp[0, 1] + logp[2, 0]).item() / 2, rel=1e-6)


def test_soft_targets_are_sharpened_predictions():
    q = torch.tensor([[0.6, 0.3, 0.1]])
    t = 0.5
    expected = q ** 2 / (q ** 2).sum()
    assert torch.allclose(sharpen(q, t), expected, atol=1e-6)
    train = train_rows()
    out = fixed_outputs()
    soft = labeller(("ah",), train, pseudo_labels="soft", temperature=t).losses(out, out, masks(train),
                                                                                torch.arange(4))["ah"]
    q_ah = torch.softmax(out["ah"][[0, 2]], 1)
    target = sharpen(q_ah, t)
    expected_loss = -(target * torch.log_softmax(out["ah"][[0, 2]], 1)).sum(1).mean()
    assert soft.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    hard = labeller(("ah",), train).losses(out, out, masks(train), torch.arange(4))["ah"]
    assert soft.item() > hard.item()  # a soft target keeps some mass on the other class


def test_flexmatch_thresholds_favour_the_rare_class():
    """beta_c = sigma_c / max(max sigma, unused); tau_c = tau * beta / (2 - beta)."""
    n = 10
    train = train_rows(n, (True,) * n, (True,) * n, (False,) * n)
    pl = labeller(("ah",), train, class_balance="flexmatch", tau_ah=0.6)
    # Before any step every row is unused: beta = 0, every threshold 0 (FlexMatch's warm-up).
    assert torch.equal(pl._class_thresholds("ah"), torch.zeros(2))
    # Eight confident "absence" rows and one confident "presence" row, one row unconfident.
    logits = torch.tensor([[3.0, 0.0]] * 8 + [[0.0, 3.0], [0.0, 0.0]])
    pl.losses({"ah": logits}, {"ah": logits}, masks(train), torch.arange(n))
    sigma, unused = torch.tensor([8.0, 1.0]), 1.0
    beta = sigma / max(sigma.max().item(), unused)
    assert torch.allclose(pl._class_thresholds("ah"), 0.6 * beta / (2 - beta))
    # A presence prediction at 0.55 now passes, an absence one at 0.55 does not.
    probe = torch.log(torch.tensor([[0.45, 0.55], [0.55, 0.45]]))
    two = train_rows(2, (True,) * 2, (True,) * 2, (False,) * 2)
    pl.epoch_stats()
    pl.losses({"ah": probe}, {"ah": probe}, masks(two), torch.tensor([9, 9]))
    _, shares = pl.epoch_stats()
    assert shares == {"ah_absence": 0.0, "ah_presence": 1.0}


def test_distribution_alignment_moves_pseudo_labels_towards_the_prior():
    n = 8
    # Labelled prior: 50% presence; the model says "absence" for every unlabelled row.
    labelled = (True,) * 4 + (False,) * 4
    train = train_rows(n, (True,) * n, (True,) * n, labelled, ah_labels=[0, 1, 0, 1, 0, 0, 0, 0])
    assert torch.allclose(label_prior(train, "ah"), torch.tensor([0.5, 0.5]))
    logits = torch.tensor([[0.0, 0.0]] * 4 + [[0.6, 0.0]] * 2 + [[0.2, 0.0]] * 2)  # rows 4-7 unlabelled
    plain = labeller(("ah",), train, tau_ah=0.5)
    aligned = labeller(("ah",), train, tau_ah=0.5, class_balance="align")
    for _ in range(300):  # the running mean settles on the model's skew
        plain.losses({"ah": logits}, {"ah": logits}, masks(train), torch.arange(n))
        aligned.losses({"ah": logits}, {"ah": logits}, masks(train), torch.arange(n))
    assert plain.epoch_stats()[1]["ah_presence"] == 0.0
    assert aligned.epoch_stats()[1]["ah_presence"] > 0.3


def test_prior_of_emo_is_the_mean_label_distribution():
    train = train_rows(2, (True, True), (False, False), (False, False),
                       emo_labels=[[1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 2, 2, 0]])
    assert torch.allclose(label_prior(train, "emo"), torch.tensor([0.5, 0, 0, 0, 0.25, 0.25, 0]))


def test_ema_teacher_follows_the_student_slowly():
    student = torch.nn.Linear(2, 1)
    teacher = EMATeacher(student, decay=0.9)
    before = teacher.model.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student)
    assert torch.allclose(teacher.model.weight, before + 0.1)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


def test_modality_dropout_rate_and_never_all():
    torch.manual_seed(0)
    mask = torch.ones(20000, 4, dtype=torch.bool)
    mask[:5000, 3] = False  # some rows miss a modality already
    mask[5000:6000] = torch.tensor([True, False, False, False])  # one modality only: always kept
    dropped = drop_modalities(mask, 0.3)
    assert not (dropped & ~mask).any()  # never adds a modality
    assert dropped.any(dim=1).all()
    assert dropped[5000:6000].equal(mask[5000:6000])
    rate = 1 - dropped[6000:].sum().item() / mask[6000:].sum().item()
    # 0.3 per modality, less the rows rescued from losing all four (0.3^4 = 0.8% of rows).
    assert rate == pytest.approx(0.3 - 0.3 ** 4 * 3 / 4, abs=0.01)
    assert drop_modalities(mask, 0.0) is mask


def test_without_modalities_masks_zeroes_and_drops_empty_rows():
    train = train_rows(3)
    two = CorpusTensors(
        modalities=("text", "behavior"), corpora=("x",), sample_ids=np.array(["0", "1", "2"], dtype=object),
        features={"text": torch.ones(3, 2), "behavior": torch.ones(3, 2)},
        modality_mask=torch.tensor([[True, True], [True, False], [False, True]]),
        labels=train.labels, label_mask=train.label_mask, corpus_index=torch.zeros(3, dtype=torch.long))
    out = without_modalities(two, ["behavior"])
    assert list(out.sample_ids) == ["0", "1"]  # row 2 had behaviour only
    assert out.modality_mask.tolist() == [[True, False], [True, False]]
    assert out.features["behavior"].abs().sum() == 0 and out.features["text"].sum() == 4
