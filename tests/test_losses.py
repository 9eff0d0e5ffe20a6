"""Supervised losses against hand-computed values on fixed logits."""

import math

import pytest
import torch

from scd_core.losses import logit_offsets, soft_cross_entropy, supervised_losses


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


def test_logit_adjusted_losses_hand_computed():
    """Menon et al.'s logit-adjusted CE: the CE of softmax(z + tau * log prior)."""
    prior = {"emo": torch.tensor([0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1]), "ah": torch.tensor([0.8, 0.2])}
    offsets = logit_offsets(prior, tau=1.0)
    outputs = {"emo": torch.zeros(1, 7), "pt": torch.full((1, 5), 0.5), "ah": torch.tensor([[2.0, 0.0]])}
    labels = {"emo": torch.tensor([[0.0, 0.5, 0, 0, 0.5, 0, 0]]), "pt": torch.full((1, 5), 0.7),
              "ah": torch.tensor([0])}
    mask = {t: torch.tensor([True]) for t in outputs}
    losses = supervised_losses(outputs, labels, mask, logit_offsets=offsets)
    # zero logits + log prior: the softmax is the prior itself
    assert losses["emo"].item() == pytest.approx(-0.5 * (math.log(0.1) + math.log(0.4)), rel=1e-5)
    assert losses["ah"].item() == pytest.approx(-math.log(0.8 * math.exp(2) / (0.8 * math.exp(2) + 0.2)), rel=1e-5)
    assert losses["pt"].item() == pytest.approx(0.2)  # regression is never adjusted
    half = logit_offsets(prior, tau=0.5)
    assert torch.allclose(half["ah"], 0.5 * torch.log(prior["ah"]))
    assert torch.isfinite(logit_offsets({"ah": torch.tensor([1.0, 0.0])}, 1.0)["ah"]).all()  # a class never seen


def test_logit_adjustment_balances_the_raw_argmax():
    """On a 9:1 two-class problem with overlapping classes, a linear model trained with plain CE
    rarely predicts the minority class; trained with the adjusted loss, its own logits' argmax
    (what inference uses) reaches a higher balanced accuracy."""
    generator = torch.Generator().manual_seed(0)
    n_major, n_minor = 900, 100
    x = torch.cat([torch.randn(n_major, 2, generator=generator),
                   torch.randn(n_minor, 2, generator=generator) + torch.tensor([1.5, 0.0])])
    y = torch.cat([torch.zeros(n_major, dtype=torch.long), torch.ones(n_minor, dtype=torch.long)])
    prior = torch.bincount(y).float() / len(y)

    def balanced_accuracy(tau: float) -> float:
        torch.manual_seed(0)
        linear = torch.nn.Linear(2, 2)
        optimiser = torch.optim.Adam(linear.parameters(), lr=0.05)
        offsets = logit_offsets({"ah": prior}, tau) if tau else None
        for _ in range(300):
            optimiser.zero_grad()
            supervised_losses({"ah": linear(x)}, {"ah": y}, {"ah": torch.ones(len(y), dtype=torch.bool)},
                              logit_offsets=offsets)["ah"].backward()
            optimiser.step()
        predicted = linear(x).argmax(dim=1)
        return sum(float((predicted[y == c] == c).float().mean()) for c in (0, 1)) / 2

    plain, adjusted = balanced_accuracy(0.0), balanced_accuracy(1.0)
    assert adjusted > plain + 0.1, (plain, adjusted)
