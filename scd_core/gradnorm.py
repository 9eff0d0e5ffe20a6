"""GradNorm task weighting for one branch of the dual-branch loss (paper section 2.4).

The trainer keeps two independent instances: supervised (budget S_s = 3) and
semi-supervised (budget S_ss = 3 * lambda), each over task names such as
("emo", "pt", "ah"). The training loss is sum_t w_t * L_t with the weights detached.

One update, over the components t present in the batch (paper Eq. 16-19):

    G_t   = ||d(w_t L_t) / d theta_shared||_2 = w_t * n_t,   n_t = ||d L_t / d theta_shared||_2
    G_bar = mean_t G_t
    r_t   = (L_t / L_t(0)) / mean_j (L_j / L_j(0))
    L_gn  = sum_t |G_t - stopgrad(G_bar * r_t^alpha)|
    w_t  <- max(w_floor, w_t - lr * dL_gn/dw_t)
    w    <- renormalised to the budget

Because w_t is a positive scalar, G_t = w_t * n_t exactly, and with the target detached
the weight gradient is analytic: dL_gn/dw_t = sign(G_t - G_bar * r_t^alpha) * n_t.
So no autograd graph over the weights is needed and the update runs on Python floats.

Which source each choice follows:
- L1 GradNorm loss, detached target (G_bar included), r_t with the ratio to L_t(0),
  alpha as restoring force: original GradNorm (Chen et al., 2018, Eq. 1-2) and the paper.
- Plain gradient step with a floor, then renormalisation to a budget (not to T): paper
  Eq. 17-19. The original uses an optimiser step and renormalises to sum w = T.
  The floor is applied before renormalisation as in the paper, so a floored weight can
  end up slightly below w_floor if the renormalisation scales down; it never reaches 0.
- L_t(0) is captured the first time the component is valid, not at step 0: paper
  ("delays weight initialization until valid losses appear").
- Absent components (not passed, non-finite loss or gradient norm, or no L_t(0) yet) are
  skipped, as in the paper, and keep their weight exactly. G_bar and r_t are over the
  present components only. Renormalisation rescales only the present components to the
  mass they held before the update (budget minus the absent weights), so the absent
  weights stay unchanged and all weights still sum to the budget.
- Losses are assumed non-negative (CE, MAE, BCE). A component's L_t(0) is captured only
  from a strictly positive value, since r_t divides by it.

Scale of lr: the step on w_t is lr * n_t, so lr must suit the size of the gradient norms,
which depends on which parameters count as shared (all non-task parameters in the authors'
code, the last shared layer in Chen et al.). When lr * n_t is comparable to w_t, the L1
subgradient makes the weights jump between the floor and the budget every other step.

Two layers: :meth:`GradNorm.update` takes unweighted losses and unweighted norms n_t as
floats (a trainer may compute the norms any cheaper way, e.g. all six components of both
branches in one call of :func:`gradient_norms`); :meth:`GradNorm.step` computes the norms
with :func:`gradient_norms` and calls :meth:`GradNorm.update`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def gradient_norms(
    losses: Mapping[str, torch.Tensor],
    shared: Sequence[torch.Tensor],
    batched: bool = False,
) -> dict[str, float]:
    """Unweighted norms n_t = ||d L_t / d shared||_2 of scalar losses, as floats.

    The caller's graph is retained (retain_graph=True, create_graph=False) so the
    weighted total loss can be backpropagated afterwards; .grad is not touched. A shared
    tensor that a loss does not reach contributes zero. Pass only finite losses: in the
    batched form a non-finite component can turn every row NaN.

    ``batched=False`` (default) runs one backward per loss. ``batched=True`` runs a single
    vmapped backward over the stacked losses (is_grads_batched). On CPU the per-loss form
    measured as fast or faster (benchmarks/bench_gradnorm.py: vmap turns the weight
    gradients into bmm over a broadcast input, slower than k plain mm); the batched form
    saves k-1 graph traversals and kernel launches, so measure it on GPU with
    ``bench_gradnorm.py --device cuda`` before switching.
    """
    names = list(losses)
    if not names:
        return {}
    for name in names:
        if losses[name].numel() != 1 or not losses[name].requires_grad:
            raise ValueError(f"loss {name!r} must be a scalar tensor that requires grad")
    params = list(shared)
    if batched:
        stacked = torch.stack([losses[n].reshape(()) for n in names])
        # Row k of the identity selects loss k: one backward gives every per-loss gradient.
        eye = torch.eye(len(names), dtype=stacked.dtype, device=stacked.device)
        grads = torch.autograd.grad(
            stacked, params, grad_outputs=eye, retain_graph=True, allow_unused=True,
            is_grads_batched=True,
        )
        # vector_norm reduces without materialising a squared copy of the gradients.
        per_param = [torch.linalg.vector_norm(g.reshape(len(names), -1), dim=1) for g in grads if g is not None]
        if not per_param:  # no shared tensor is reached by any loss
            return {n: 0.0 for n in names}
        return dict(zip(names, torch.linalg.vector_norm(torch.stack(per_param), dim=0).tolist()))
    norms = []
    for name in names:
        grads = torch.autograd.grad(
            losses[name], params, retain_graph=True, allow_unused=True
        )
        per_param = [torch.linalg.vector_norm(g) for g in grads if g is not None]
        norms.append(torch.linalg.vector_norm(torch.stack(per_param)) if per_param else losses[name].new_zeros(()))
    # One device sync for all norms instead of one per loss.
    return dict(zip(names, torch.stack(norms).tolist()))


class GradNorm:
    """GradNorm weights of one branch; see the module docstring for the equations."""

    def __init__(
        self,
        names: Sequence[str],
        alpha: float,
        lr: float,
        budget: float,
        w_floor: float = 1e-3,
    ) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"names must be non-empty and unique, got {names!r}")
        if budget <= w_floor * len(names):
            raise ValueError(f"budget {budget} cannot hold {len(names)} weights >= {w_floor}")
        self.names: tuple[str, ...] = tuple(names)
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.budget = float(budget)
        self.w_floor = float(w_floor)
        self.reset_weights()
        self.initial_losses: dict[str, float | None] = {n: None for n in names}

    def reset_weights(self) -> None:
        """Equal shares of the budget (the start; also the paper's A.8 rebalance)."""
        self.weights: dict[str, float] = {n: self.budget / len(self.names) for n in self.names}

    def step(
        self, losses: Mapping[str, torch.Tensor], shared: Sequence[torch.Tensor]
    ) -> dict[str, float]:
        """Compute n_t for the finite losses, then :meth:`update`. Returns the new weights.

        Leaves the caller's graph usable for a following backward.
        """
        self._check_names(losses)
        # One device sync for all loss values.
        values = torch.stack([v.detach().reshape(()) for v in losses.values()]).tolist() if losses else []
        finite = {n: v for (n, v) in zip(losses, values) if math.isfinite(v)}
        norms = gradient_norms({n: losses[n] for n in finite}, shared)
        return self.update(finite, norms)

    def update(
        self, losses: Mapping[str, float], grad_norms: Mapping[str, float]
    ) -> dict[str, float]:
        """One weight update from unweighted losses L_t and unweighted norms n_t.

        A component is used only if it is in both mappings, both values are finite, the
        loss is >= 0 and L_t(0) is known (captured here from its first positive value).
        Returns a copy of all weights.
        """
        self._check_names(losses)
        self._check_names(grad_norms)
        present: list[str] = []
        for name in self.names:
            loss, norm = losses.get(name), grad_norms.get(name)
            if loss is None or norm is None:
                continue
            loss, norm = float(loss), float(norm)
            if not (math.isfinite(loss) and math.isfinite(norm) and loss >= 0.0):
                continue
            if self.initial_losses[name] is None and loss > 0.0:
                self.initial_losses[name] = loss
            if self.initial_losses[name] is not None:
                present.append(name)
        if not present:
            return dict(self.weights)

        w = self.weights
        ratio = {t: float(losses[t]) / self.initial_losses[t] for t in present}
        mean_ratio = sum(ratio.values()) / len(present)
        g = {t: w[t] * float(grad_norms[t]) for t in present}
        g_bar = sum(g.values()) / len(present)
        stepped = {}
        for t in present:
            # All losses at 0: no relative progress to compare, so r_t = 1.
            r = ratio[t] / mean_ratio if mean_ratio > 0.0 else 1.0
            target = g_bar * r**self.alpha
            # d|w_t n_t - target| / dw_t with the target constant (0 at the kink).
            grad_w = _sign(g[t] - target) * float(grad_norms[t])
            stepped[t] = max(self.w_floor, w[t] - self.lr * grad_w)

        # Present components get back the mass they held, so absent weights are unchanged
        # and the total stays at the budget.
        mass = self.budget - sum(w[n] for n in self.names if n not in stepped)
        total = sum(stepped.values())
        for t in present:
            w[t] = mass * stepped[t] / total
        return dict(w)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (lists of floats, None for a missing L_t(0))."""
        return {
            "names": list(self.names),
            "weights": [self.weights[n] for n in self.names],
            "initial_losses": [self.initial_losses[n] for n in self.names],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore weights and L_t(0); hyperparameters come from the constructor."""
        if list(state["names"]) != list(self.names):
            raise ValueError(f"state is for names {state['names']!r}, not {list(self.names)!r}")
        self.weights = {n: float(v) for n, v in zip(self.names, state["weights"])}
        self.initial_losses = {
            n: None if v is None else float(v) for n, v in zip(self.names, state["initial_losses"])
        }

    def _check_names(self, mapping: Mapping[str, Any]) -> None:
        unknown = set(mapping) - set(self.names)
        if unknown:
            raise KeyError(f"unknown components {sorted(unknown)}; known: {list(self.names)}")


def _sign(x: float) -> float:
    return float((x > 0.0) - (x < 0.0))
