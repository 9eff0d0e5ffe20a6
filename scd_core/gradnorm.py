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
So no autograd graph over the weights is needed: the update is a handful of elementwise
ops on [T] tensors, which stay on the training device (no host synchronisation per step).

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

Three layers: :meth:`GradNorm.update_tensors` takes unweighted losses and norms n_t as
device tensors with a presence mask (the trainer's step); :meth:`GradNorm.update` takes them
as floats; :meth:`GradNorm.step` computes the norms with :func:`gradient_norms` and calls
:meth:`GradNorm.update`.
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
    """GradNorm weights of one branch; see the module docstring for the equations.

    The state lives in float64 tensors on ``device`` (weights [T], L_t(0) [T] with NaN for
    "not yet"), so that a training step updates it without reading anything back to the host
    (:meth:`update_tensors`, which a CUDA graph can capture). ``weights`` and
    ``initial_losses`` read it back as dicts (a device synchronisation: once per epoch).
    """

    def __init__(
        self,
        names: Sequence[str],
        alpha: float,
        lr: float,
        budget: float,
        w_floor: float = 1e-3,
        device: torch.device | str | None = None,
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
        # The update reads its settings as tensors: a compiled update (the trainer's
        # ``fuse_elementwise``) is then one graph whatever their values, not one per trial.
        self.settings_tensor = torch.tensor([self.alpha, self.lr, self.budget, self.w_floor], dtype=torch.float64,
                                            device=device)
        self.weight_tensor = torch.empty(len(names), dtype=torch.float64, device=device)
        self.initial_tensor = torch.full((len(names),), math.nan, dtype=torch.float64, device=device)
        self.reset_weights()

    def reset_weights(self) -> None:
        """Equal shares of the budget (the start; also the paper's A.8 rebalance)."""
        self.weight_tensor.fill_(self.budget / len(self.names))  # in place: a captured step holds this tensor

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.names, self.weight_tensor.tolist()))

    @weights.setter
    def weights(self, values: Mapping[str, float]) -> None:
        self.weight_tensor.copy_(torch.tensor([float(values[n]) for n in self.names], dtype=torch.float64))

    @property
    def initial_losses(self) -> dict[str, float | None]:
        return {n: None if math.isnan(v) else v for n, v in zip(self.names, self.initial_tensor.tolist())}

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
        """One weight update from unweighted losses L_t and unweighted norms n_t (floats).

        A component is used only if it is in both mappings, both values are finite, the
        loss is >= 0 and L_t(0) is known (captured here from its first positive value).
        Returns a copy of all weights.
        """
        self._check_names(losses)
        self._check_names(grad_norms)
        given = [n in losses and n in grad_norms for n in self.names]
        device = self.weight_tensor.device

        def column(mapping: Mapping[str, float]) -> torch.Tensor:
            return torch.tensor([float(mapping[n]) if ok else math.nan for n, ok in zip(self.names, given)],
                                dtype=torch.float64, device=device)

        self.update_tensors(column(losses), column(grad_norms), torch.tensor(given, device=device))
        return self.weights

    def update_tensors(self, losses: torch.Tensor, grad_norms: torch.Tensor, present: torch.Tensor) -> None:
        """:meth:`update` on the device without a host synchronisation, for a training step.

        losses, grad_norms: [T] float in ``names`` order; present: [T] bool, False = absent
        (its values are ignored, NaN included). Updates the state tensors in place.
        """
        alpha, lr, budget, w_floor = self.settings_tensor.unbind()
        loss, norm = losses.to(torch.float64), grad_norms.to(torch.float64)
        valid = present & torch.isfinite(loss) & torch.isfinite(norm) & (loss >= 0.0)
        initial = self.initial_tensor
        initial.copy_(torch.where(valid & torch.isnan(initial) & (loss > 0.0), loss, initial))
        used = valid & ~torch.isnan(initial)
        count = used.sum().clamp_min(1)
        zero = torch.zeros_like(loss)
        w = self.weight_tensor
        ratio = torch.where(used, loss / initial, zero)
        mean_ratio = ratio.sum() / count
        g = torch.where(used, w * norm, zero)
        g_bar = g.sum() / count
        # All losses at 0: no relative progress to compare, so r_t = 1.
        r = torch.where(mean_ratio > 0.0, ratio / mean_ratio, torch.ones_like(ratio))
        target = g_bar * r.pow(alpha)
        # d|w_t n_t - target| / dw_t with the target constant (0 at the kink).
        grad_w = torch.sign(g - target) * torch.where(used, norm, zero)
        stepped = torch.where(used, (w - lr * grad_w).clamp_min(w_floor), zero)
        # Used components get back the mass they held, so the others keep their weight and
        # the total stays at the budget (nothing used: every weight stays).
        mass = budget - torch.where(used, zero, w).sum()
        w.copy_(torch.where(used, mass * stepped / stepped.sum().clamp_min(w_floor), w))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (lists of floats, None for a missing L_t(0))."""
        initial = self.initial_losses
        return {
            "names": list(self.names),
            "weights": self.weight_tensor.tolist(),
            "initial_losses": [initial[n] for n in self.names],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore weights and L_t(0); hyperparameters come from the constructor."""
        if list(state["names"]) != list(self.names):
            raise ValueError(f"state is for names {state['names']!r}, not {list(self.names)!r}")
        self.weights = dict(zip(self.names, state["weights"]))
        self.initial_tensor.copy_(torch.tensor([math.nan if v is None else float(v) for v in state["initial_losses"]],
                                               dtype=torch.float64))

    def _check_names(self, mapping: Mapping[str, Any]) -> None:
        unknown = set(mapping) - set(self.names)
        if unknown:
            raise KeyError(f"unknown components {sorted(unknown)}; known: {list(self.names)}")
