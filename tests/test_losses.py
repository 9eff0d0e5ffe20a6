"""Pseudo-label masks and losses against hand-computed values on fixed logits."""

import math

import pytest
import torch

from scd_core.losses import pseudo_label_losses, soft_cross_entropy, supervised_losses


def test_supervised_losses_hand_computed():
    outputs = {
        "emo": torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0, 0, 0, 0, 0, 0]]),
        "pt": torch.tensor([[0.5] * 5, [0.2] * 5]),
        "ah": torch.tensor([[2.0, 0.0], [0.0, 0.0]]),
    }
    labels = {
        "emo": torch.tensor([[0.0, 0.5, 0, 0, 0.5, 0, 0], [0.0] * 7]),
        "pt": torch.tensor([[0.7] * 5, [0.0] * 5]),
        "ah": torch.tensor([0, 1]),
    }
    mask = {"emo": torch.tensor([True, False]), "pt": torch.tensor([True, False]), "ah": torch.tensor([True, True])}
    losses = supervised_losses(outputs, labels, mask)
    assert losses["emo"].item() == pytest.approx(math.log(7))  # uniform logits: CE = log 7
    assert losses["pt"].item() == pytest.approx(0.2)
    ce_row0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert losses["ah"].item() == pytest.approx((ce_row0 + math.log(2)) / 2)
    argmax = supervised_losses(outputs, labels, mask, emo_target="argmax")
    assert argmax["emo"].item() == pytest.approx(math.log(7))
    none = supervised_losses(outputs, labels, {k: torch.zeros(2, dtype=torch.bool) for k in mask})
    assert none == {}


def test_soft_cross_entropy_normalises_the_target():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    a = soft_cross_entropy(logits, torch.tensor([[0.0, 2.0, 2.0]]))
    b = soft_cross_entropy(logits, torch.tensor([[0.0, 0.5, 0.5]]))
    expected = -0.5 * (torch.log_softmax(logits, 1)[0, 1] + torch.log_softmax(logits, 1)[0, 2])
    assert a.item() == pytest.approx(b.item()) == pytest.approx(expected.item())


def test_pseudo_labels_masks_and_losses():
    # AH: three unlabelled rows, softmax maxima 0.881, 0.5, 0.731 -> tau 0.6 keeps rows 0 and 2.
    ah = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    # PT: p = 0.9 (keep, target 1), 0.55 (drop), 0.3 (keep, target 0), ...
    pt = torch.tensor([[0.9, 0.55], [0.3, 0.45], [0.5, 0.65], [0.1, 0.9]])
    emo = torch.zeros(4, 7)
    emo[0, 4] = 10.0  # confident happiness
    outputs = {"emo": emo, "pt": pt, "ah": ah}
    mask = {
        "emo": torch.tensor([False, True, True, True]),  # only row 0 is a candidate
        "pt": torch.tensor([False, False, False, True]),  # rows 0-2 are candidates
        "ah": torch.tensor([False, False, False, True]),  # rows 0-2 are candidates
    }
    losses, stats = pseudo_label_losses(outputs, mask, {"emo": 0.6, "pt": 0.6, "ah": 0.6})

    assert (stats["ah"].accepted, stats["ah"].candidates) == (2, 3)
    expected_ah = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (math.e + 1))) / 2
    assert losses["ah"].item() == pytest.approx(expected_ah, rel=1e-6)

    # PT entries kept: 0.9 (->1), 0.3 (->0), 0.65 (->1); 0.55, 0.45, 0.5 are inside the margin.
    assert (stats["pt"].accepted, stats["pt"].candidates) == (3, 6)
    expected_pt = -(math.log(0.9) + math.log(0.7) + math.log(0.65)) / 3
    assert losses["pt"].item() == pytest.approx(expected_pt, rel=1e-6)

    assert (stats["emo"].accepted, stats["emo"].candidates) == (1, 1)
    p = torch.softmax(emo[0], 0)[4].item()
    assert losses["emo"].item() == pytest.approx(-math.log(p), rel=1e-3)


def test_pseudo_labels_absent_when_nothing_passes_and_targets_detached():
    ah = torch.zeros(3, 2, requires_grad=True)
    losses, stats = pseudo_label_losses({"ah": ah}, {"ah": torch.zeros(3, dtype=torch.bool)}, {"ah": 0.6})
    assert losses == {} and stats["ah"].rate == 0.0

    logits = torch.tensor([[3.0, 0.0]], requires_grad=True)
    losses, _ = pseudo_label_losses({"ah": logits}, {"ah": torch.tensor([False])}, {"ah": 0.6})
    losses["ah"].backward()
    # Gradient of CE w.r.t. logits is softmax - onehot(target): the target is a constant.
    expected = torch.softmax(logits.detach(), 1) - torch.tensor([[1.0, 0.0]])
    assert torch.allclose(logits.grad, expected)
