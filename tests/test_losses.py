"""Supervised losses against hand-computed values on fixed logits."""

import math

import pytest
import torch

from scd_core.losses import soft_cross_entropy, supervised_losses


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
