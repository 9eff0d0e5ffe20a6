"""Small building blocks of MCDM (paper section 2.3): projectors, heads, guide banks.

Each block works on the last dimension, so inputs may be ``[B, d]`` or ``[B, N, d]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Adapter", "ModalityProjector", "TaskProjector", "TaskHead", "GuideBank"]


class Adapter(nn.Module):
    """Bottleneck adapter of Eq. 2: Linear(H, H/2), ReLU, Dropout, Linear(H/2, H).

    Shapes: ``[..., H] -> [..., H]``. Parameters: ``H*H/2 + H/2 + H/2*H + H``.
    """

    def __init__(self, hidden_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        bottleneck = max(1, hidden_dim // 2)
        self.down = nn.Linear(hidden_dim, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        self.up.reset_parameters()

    def forward(self, z: Tensor) -> Tensor:
        return self.up(self.dropout(F.relu(self.down(z))))


class ModalityProjector(nn.Module):
    """phi_m of Eq. 1-2: ``z = Dropout(ReLU(Linear(x)))``, then ``LayerNorm(z + Adapter(z))``.

    Shapes: ``[..., in_dim] -> [..., H]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.lin = nn.Linear(in_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.adapter = Adapter(hidden_dim, dropout=dropout)
        self.norm = nn.LayerNorm(hidden_dim)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        self.adapter.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        z = self.dropout(F.relu(self.lin(x)))
        return self.norm(z + self.adapter(z))


class TaskProjector(nn.Module):
    """phi_t of Eq. 6-7: per-node task logits, re-embedded into the hidden space.

    ``L = Linear(H, C)(Z)`` (Eq. 6, no activation: these are logits), then
    ``P = ModalityProjector(C -> H)(L)`` (Eq. 7; "similar to a multimodal projector":
    Linear, ReLU, Dropout, residual adapter, LayerNorm).

    Shapes: Z ``[B, N, H]`` -> (L ``[B, N, C]``, P ``[B, N, H]``).
    """

    def __init__(self, hidden_dim: int, num_outputs: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.to_logits = nn.Linear(hidden_dim, num_outputs)
        self.embed = ModalityProjector(num_outputs, hidden_dim, dropout=dropout)

    def reset_parameters(self) -> None:
        self.to_logits.reset_parameters()
        self.embed.reset_parameters()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.to_logits(z)
        return logits, self.embed(logits)


class TaskHead(nn.Module):
    """h_t of Eq. 11: Linear(H, out_features), ReLU, Dropout, Linear(out_features, C).

    Shapes: ``[B, H] -> [B, C]``.
    """

    def __init__(self, hidden_dim: int, out_features: int, num_outputs: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(hidden_dim, out_features)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(out_features, num_outputs)

    def reset_parameters(self) -> None:
        self.hidden.reset_parameters()
        self.out.reset_parameters()

    def forward(self, r: Tensor) -> Tensor:
        return self.out(self.dropout(F.relu(self.hidden(r))))


class GuideBank(nn.Module):
    """Guide Bank of Eq. 12: learnable class prototypes ``G [C, H]``, cosine similarity.

    Shapes: ``[B, H] -> [B, C]`` with values in ``[-1, 1]``.
    """

    def __init__(self, hidden_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(num_outputs, hidden_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.prototypes)

    def forward(self, r: Tensor) -> Tensor:
        return F.normalize(r, dim=-1, eps=1e-8) @ F.normalize(self.prototypes, dim=-1, eps=1e-8).T
