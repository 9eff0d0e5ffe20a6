"""GradNorm weighting: the toy experiment of Chen et al. (2018, section 4) and the contract."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from scd_core.gradnorm import GradNorm, gradient_norms


@pytest.fixture(autouse=True)
def _one_thread():
    # The models here are tiny: one thread is fastest and does not stall when other jobs
    # share the CPU cores (OpenMP threads spin-wait on busy machines).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- Chen et al. 2018, section 4 -------------------------------------------------------------


def _toy_run(
    sigmas: tuple[float, ...], use_gradnorm: bool, steps: int = 300, seed: int = 0
) -> tuple[list[dict[str, float]], list[float]]:
    """Train the toy multitask regression; return the weights per step and the test loss
    of each task divided by sigma_i^2 (the task-normalised loss).

    f_i(x) = sigma_i * tanh((B + eps_i) x), B ~ N(0, 10), eps_i ~ N(0, 3.5), x in R^250,
    outputs in R^100, as in the paper. Only change: x ~ N(0, I) and the pre-activation is
    divided by 10 * sqrt(250) so tanh is not saturated and a few hundred steps learn
    something; B and eps_i keep their ratio, so the shared/task-specific split is the same.
    """
    d_in, d_out, hidden, n, batch = 250, 100, 100, 2000, 100
    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(d_out, d_in, generator=gen) * 10
    eps = torch.randn(len(sigmas), d_out, d_in, generator=gen) * 3.5

    def sample(m: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.randn(m, d_in, generator=gen)
        return x, [s * torch.tanh(x @ (b + e).T / (10 * d_in**0.5)) for s, e in zip(sigmas, eps)]

    x_tr, y_tr = sample(n)
    x_te, y_te = sample(n)
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i in range(4):
        layers += [torch.nn.Linear(d_in if i == 0 else hidden, hidden), torch.nn.ReLU()]
    trunk = torch.nn.Sequential(*layers)
    heads = torch.nn.ModuleList(torch.nn.Linear(hidden, d_out) for _ in sigmas)
    opt = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=1e-3)
    names = [f"t{i}" for i in range(len(sigmas))]
    # lr is small because the weight step is lr * ||grad L_t||, and the sigma=100 task's
    # norm on the last shared layer reaches ~100 here.
    gradnorm = GradNorm(names, alpha=0.12, lr=1e-4, budget=len(sigmas))
    shared = [trunk[-2].weight]  # last shared layer's weights, as in Chen et al.

    history = []
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        h = trunk(x_tr[idx])
        losses = {t: F.mse_loss(head(h), y[idx]) for t, head, y in zip(names, heads, y_tr)}
        w = gradnorm.step(losses, shared) if use_gradnorm else dict(gradnorm.weights)
        history.append(w)
        opt.zero_grad()
        sum(w[t] * losses[t] for t in names).backward()
        opt.step()
    with torch.no_grad():
        h = trunk(x_te)
        test = [F.mse_loss(hd(h), y).item() / s**2 for hd, y, s in zip(heads, y_te, sigmas)]
    return history, test


def test_toy_unequal_scales_upweights_small_task_and_beats_equal_weights() -> None:
    history, test_gn = _toy_run((1.0, 100.0), use_gradnorm=True)
    _, test_equal = _toy_run((1.0, 100.0), use_gradnorm=False)
    for w in history:
        assert sum(w.values()) == pytest.approx(2.0, abs=1e-9)
    assert history[-1]["t0"] > 1.5 > 0.5 > history[-1]["t1"]
    assert sum(test_gn) < 0.8 * sum(test_equal)


def test_toy_equal_scales_keeps_weights_near_one() -> None:
    history, _ = _toy_run((1.0, 1.0), use_gradnorm=True)
    for w in history:
        assert sum(w.values()) == pytest.approx(2.0, abs=1e-9)
        assert all(abs(v - 1.0) < 0.05 for v in w.values())


# --- update rule -------------------------------------------------------------------------------


def test_update_matches_autograd_over_the_weights() -> None:
    """The analytic dL_gn/dw equals autograd through G_t = w_t * n_t with detached target."""
    names = ("emo", "pt", "ah")
    gn = GradNorm(names, alpha=1.25, lr=0.01, budget=3.0)
    gn.update({"emo": 2.0, "pt": 0.5, "ah": 0.7}, {"emo": 1.0, "pt": 1.0, "ah": 1.0})
    before = dict(gn.weights)
    losses = {"emo": 1.0, "pt": 0.45, "ah": 0.2}
    norms = {"emo": 3.0, "pt": 0.4, "ah": 1.5}

    w = torch.tensor([before[t] for t in names], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([norms[t] for t in names], dtype=torch.float64)
    ratio = torch.tensor([losses[t] / gn.initial_losses[t] for t in names], dtype=torch.float64)
    g = w * n
    target = (g.mean() * (ratio / ratio.mean()) ** 1.25).detach()
    (g - target).abs().sum().backward()
    stepped = (w - 0.01 * w.grad).clamp_min(1e-3).detach()
    expected = 3.0 * stepped / stepped.sum()

    got = gn.update(losses, norms)
    assert [got[t] for t in names] == pytest.approx(expected.tolist(), rel=1e-12)


def test_floor_is_applied_before_renormalisation() -> None:
    gn = GradNorm(("a", "b"), alpha=1.0, lr=1.0, budget=2.0)
    # r = 1 for both; G = (10, 1), target = 5.5: a steps to 1 - 10 -> floor, b to 1 + 1.
    w = gn.update({"a": 1.0, "b": 1.0}, {"a": 10.0, "b": 1.0})
    assert w["a"] == pytest.approx(2.0 * 1e-3 / 2.001)
    assert w["b"] == pytest.approx(2.0 * 2.0 / 2.001)


def test_semi_supervised_budget_is_respected() -> None:
    names = ("emo", "pt", "ah")
    gn = GradNorm(names, alpha=1.0, lr=0.005, budget=3 * 0.3)
    assert gn.weights == pytest.approx({t: 0.3 for t in names})
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        vals = (torch.rand(2, 3, generator=gen) * 5).tolist()
        w = gn.update(dict(zip(names, vals[0])), dict(zip(names, vals[1])))
        assert sum(w.values()) == pytest.approx(0.9, abs=1e-12)
        assert min(w.values()) > 0.0


def test_single_present_component_keeps_its_weight() -> None:
    gn = GradNorm(("a", "b"), alpha=1.0, lr=1.0, budget=2.0)
    assert gn.update({"a": 3.0}, {"a": 7.0}) == {"a": 1.0, "b": 1.0}


# --- absent components and L(0) ------------------------------------------------------------------


def test_late_component_captures_initial_loss_when_it_first_appears() -> None:
    gn = GradNorm(("a", "b", "c"), alpha=1.0, lr=0.1, budget=3.0)
    gn.update({"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 3.0})
    assert gn.initial_losses == {"a": 2.0, "b": 1.0, "c": None}
    assert gn.weights["c"] == 1.0
    gn.update({"a": 1.0, "b": 1.0, "c": 5.0}, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert gn.initial_losses["c"] == 5.0
    gn.update({"c": 4.0}, {"c": 1.0})
    assert gn.initial_losses["c"] == 5.0  # captured once


def test_absent_and_non_finite_components_keep_their_weights() -> None:
    gn = GradNorm(("a", "b", "c", "d"), alpha=1.0, lr=0.1, budget=4.0)
    gn.update({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    before = dict(gn.weights)
    w = gn.update(
        {"a": 0.5, "b": 2.0, "c": math.nan, "d": 1.0},  # c: NaN loss
        {"a": 1.0, "b": 5.0, "c": 1.0, "d": math.inf},  # d: inf norm
    )
    assert (w["c"], w["d"]) == (before["c"], before["d"])
    assert w["a"] != before["a"] and w["b"] != before["b"]
    assert sum(w.values()) == pytest.approx(4.0, abs=1e-12)
    # Nothing valid: no change, no error; NaN never becomes L(0).
    fresh = GradNorm(("a", "b"), alpha=1.0, lr=0.1, budget=2.0)
    assert fresh.update({"a": math.nan}, {"a": 1.0}) == {"a": 1.0, "b": 1.0}
    assert fresh.initial_losses == {"a": None, "b": None}


def test_unknown_component_is_an_error() -> None:
    gn = GradNorm(("a", "b"), alpha=1.0, lr=0.1, budget=2.0)
    with pytest.raises(KeyError):
        gn.update({"x": 1.0}, {"x": 1.0})


# --- step(): norms from autograd ---------------------------------------------------------------


def _tiny_model_losses(seed: int = 0) -> tuple[torch.nn.Module, list[torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    trunk = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))
    heads = torch.nn.ModuleDict({t: torch.nn.Linear(16, 3) for t in ("emo", "pt", "ah")})
    model = torch.nn.ModuleDict({"trunk": trunk, "heads": heads})
    h = trunk(torch.randn(5, 8))
    losses = {t: head(h).pow(2).mean() * (i + 1) for i, (t, head) in enumerate(heads.items())}
    return model, list(trunk.parameters()), losses


def test_step_agrees_with_update_on_per_loss_autograd_norms() -> None:
    _, shared, losses = _tiny_model_losses()
    by_hand = {}
    for t, loss in losses.items():
        grads = torch.autograd.grad(loss, shared, retain_graph=True)
        by_hand[t] = torch.sqrt(sum(g.pow(2).sum() for g in grads)).item()
    assert gradient_norms(losses, shared, batched=True) == pytest.approx(by_hand, rel=1e-5)
    assert gradient_norms(losses, shared, batched=False) == pytest.approx(by_hand, rel=1e-5)

    a = GradNorm(tuple(losses), alpha=1.25, lr=0.01, budget=3.0)
    b = GradNorm(tuple(losses), alpha=1.25, lr=0.01, budget=3.0)
    for scale in (1.0, 0.5):
        step_w = a.step({t: v * scale for t, v in losses.items()}, shared)
        update_w = b.update({t: v.item() * scale for t, v in losses.items()},
                            {t: n * scale for t, n in by_hand.items()})
        assert step_w == pytest.approx(update_w, rel=1e-5)


def test_step_skips_non_finite_and_absent_losses() -> None:
    _, shared, losses = _tiny_model_losses()
    gn = GradNorm(("emo", "pt", "ah"), alpha=1.0, lr=0.01, budget=3.0)
    w = gn.step({"emo": losses["emo"], "pt": losses["pt"] * math.nan}, shared)
    assert w["pt"] == w["ah"] == 1.0
    assert gn.initial_losses["pt"] is None and gn.initial_losses["emo"] is not None
    assert gn.step({}, shared) == w


def test_step_leaves_graph_usable_for_total_backward() -> None:
    model, shared, losses = _tiny_model_losses()
    gn = GradNorm(tuple(losses), alpha=1.0, lr=0.01, budget=3.0)
    w = gn.step(losses, shared)
    assert all(p.grad is None for p in model.parameters())  # norms never touch .grad
    sum(w[t] * losses[t] for t in losses).backward()
    got = [p.grad.clone() for p in model.parameters()]

    model2, _, losses2 = _tiny_model_losses()
    sum(w[t] * losses2[t] for t in losses2).backward()
    for g, ref in zip(got, (p.grad for p in model2.parameters())):
        torch.testing.assert_close(g, ref)


# --- state ---------------------------------------------------------------------------------------


def test_state_dict_json_round_trip_resumes_identically() -> None:
    names = ("emo", "pt", "ah")
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[dict[str, float], dict[str, float]]:
        vals = (torch.rand(2, 3, generator=gen) + 0.1).tolist()
        return dict(zip(names[:2], vals[0])), dict(zip(names[:2], vals[1]))  # "ah" absent

    a = GradNorm(names, alpha=1.25, lr=0.05, budget=3.0)
    for _ in range(5):
        a.update(*batch())
    b = GradNorm(names, alpha=1.25, lr=0.05, budget=3.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.weights == a.weights and b.initial_losses == a.initial_losses
    for _ in range(5):
        losses, norms = batch()
        assert a.update(losses, norms) == b.update(losses, norms)

    with pytest.raises(ValueError):
        GradNorm(("emo", "pt"), alpha=1.0, lr=0.1, budget=2.0).load_state_dict(a.state_dict())
