"""The trainer's step against the pre-rewrite step (``tests/step_reference.py``) on the same
batches: losses, GradNorm weights, pseudo-label statistics and parameters after several steps."""

import math

import pytest
import torch
from step_reference import ReferenceStep

from scd_core.config import load_config
from scd_core.data import load_training_data
from scd_core.trainer import Trainer

# SGD: Adam divides by the gradient's own scale, so on parameters whose gradient is zero up to
# rounding (the key bias of attention) it turns rounding noise into full-size steps.
SMALL = ["model.hidden_dim=32", "model.out_features=32", "model.num_heads=4", "optim.optimizer=sgd", "optim.lr=0.05"]
STEPS, BATCH = 4, 48


@pytest.fixture(scope="module")
def data(demo_store):
    return load_training_data(load_config(None, SMALL), demo_store, torch.device("cpu"))


def trainer_step(trainer, batch, rows, epoch, step) -> dict[str, float]:
    return trainer.train_step(batch, rows, epoch, step).host()


VARIANTS = {
    "paper": [],
    "fixed_weights": ["ssl.gradnorm=false"],
    "flexmatch_soft_ema_dropout": ["ssl.class_balance=flexmatch", "ssl.pseudo_labels=soft", "ssl.teacher=ema",
                                   "data.modality_dropout=0.3", "ssl.tau_emo=0.3", "ssl.tau_pt=0.55"],
    "align_argmax_target": ["ssl.class_balance=align", "ssl.emo_target=argmax", "ssl.tau_emo=0.3"],
    "no_pseudo_labels": ["ssl.enabled=false"],
    "logit_adjusted": ["ssl.logit_adjustment=1.0"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_step_equals_the_pre_rewrite_step(data, variant):
    cfg = load_config(None, [*SMALL, *VARIANTS[variant]])
    trainer = Trainer(cfg, data)
    trainer.model.train()
    reference = ReferenceStep(trainer)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(3))
    for step in range(STEPS):
        rows = order[step * BATCH:(step + 1) * BATCH]
        batch = data.train.index(rows, with_ids=False)
        torch.manual_seed(100 + step)
        got = trainer_step(trainer, batch, rows, 0, step)
        torch.manual_seed(100 + step)
        want = reference.step(batch, rows)
        assert set(got) == set(want), (step, sorted(got), sorted(want))
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (step, name)
    for branch in ("sup", "ssl"):
        assert trainer._weights(branch) == pytest.approx(reference.weights(branch), rel=1e-5, abs=1e-7), branch
    for (name, p), q in zip(trainer.model.named_parameters(), reference.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name
    if trainer.pseudo_labeler is not None:
        acceptance, shares = trainer.pseudo_labeler.epoch_stats()
        assert acceptance == pytest.approx(reference.acceptance(), nan_ok=True)
        assert shares == pytest.approx(reference.shares(), nan_ok=True)
        assert any(not math.isnan(v) for v in shares.values())  # some pseudo-labels were accepted
