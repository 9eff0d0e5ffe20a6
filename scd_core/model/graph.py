"""Graph layers over the modality nodes (the paper's GAF, Eq. 4-5, and its variants).

Every layer works on a dense, batched graph: node features ``x`` of shape ``[B, N, H]``
and a boolean adjacency ``adj`` of shape ``[B, N, N]`` where ``adj[b, i, j]`` means
"node ``i`` receives a message from node ``j``" (self-loops included; a layer with a
``self_loops`` switch, like ``unitary``, may drop them). No per-sample
Python and no graph objects: N is the number of modalities (at most 5).

Common constructor signature (every variant, ``scd_core.model.graph_variants`` too)::

    Layer(hidden_dim: int, *, num_heads: int = 1, dropout: float = 0.0, **layer_specific)

Every layer maps ``[B, N, H] -> [B, N, H]``. Layer-specific keyword arguments have
defaults; the model passes only the common ones. Common forward signature::

    layer(x, adj, operator=None) -> Tensor[B, N, H]

``operator`` is the result of ``layer.precompute(adj)``: a per-batch tensor that depends
only on the adjacency and on constructor hyperparameters (never on learnable
parameters), so the model computes it once per forward pass and hands it to all the graph
layers of that pass (they are all of one class). ``precompute`` defaults to ``None``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scd_core.model.registries import GRAPH_LAYERS

__all__ = [
    "GraphLayer",
    "IdentityGraph",
    "GATLayer",
    "UnitaryGraphConv",
    "modality_adjacency",
    "normalized_adjacency",
    "unitary_propagator",
]


def modality_adjacency(modality_mask: Tensor) -> Tensor:
    """Fully connected graph among the present modalities, with self-loops.

    Args:
        modality_mask: ``[B, N]`` bool, True = modality present.

    Returns:
        ``[B, N, N]`` bool. ``adj[b, i, j]`` is True when both ``i`` and ``j`` are present,
        or ``i == j``. A missing node keeps only its self-loop: it sends no message to a
        present node and receives none (its own row stays finite, and is ignored later).
    """
    n = modality_mask.size(-1)
    eye = torch.eye(n, dtype=torch.bool, device=modality_mask.device)
    return (modality_mask.unsqueeze(-1) & modality_mask.unsqueeze(-2)) | eye


def normalized_adjacency(adj: Tensor) -> Tensor:
    """Symmetric GCN normalisation ``D^-1/2 A D^-1/2`` of a dense adjacency.

    Args:
        adj: ``[B, N, N]`` bool or float, symmetric. A node without any edge (degree 0) gets
            a zero row and column, as ``gcn_norm`` gives it.

    Returns:
        ``[B, N, N]`` float, symmetric, spectral norm <= 1.
    """
    a = adj.to(torch.get_default_dtype()) if adj.dtype == torch.bool else adj
    deg = a.sum(-1).clamp_min(1.0)
    inv_sqrt = deg.rsqrt()
    return inv_sqrt.unsqueeze(-1) * a * inv_sqrt.unsqueeze(-2)


def unitary_propagator(adj: Tensor, order: int = 10) -> Tensor:
    """Truncated Taylor series of ``exp(i * A_hat)`` with the real/imaginary split explicit.

    ``exp(i A) = cos(A) + i sin(A)`` for a real symmetric ``A``; the series is summed up to
    ``(i A)^order / order!`` (Kiani et al. 2024, ``TaylorGCNConv``), giving ``C`` (even
    terms) and ``S`` (odd terms). The result acts on a complex vector ``u = a + i b``
    stored as two real node blocks ``[a; b]``, as the real matrix::

        [[C, -S],
         [S,  C]]

    which is orthogonal (the realification of a unitary matrix) up to the truncation
    error ``<= 1/(order+1)!`` since ``||A_hat|| <= 1``.

    Args:
        adj: ``[B, N, N]`` bool adjacency (symmetric; with or without self-loops).
        order: highest power of the series (Kiani et al. use 10 to 16).

    Returns:
        ``[B, 2N, 2N]`` real operator; apply with :meth:`UnitaryGraphConv.propagate`.
    """
    a_hat = normalized_adjacency(adj)
    n = a_hat.size(-1)
    term = torch.eye(n, dtype=a_hat.dtype, device=a_hat.device).expand_as(a_hat)
    cos = term.clone()
    sin = torch.zeros_like(a_hat)
    for k in range(1, order + 1):
        term = term @ a_hat / k  # A^k / k!
        # i^k cycles 1, i, -1, -i: even k feed the real part, odd k the imaginary part.
        sign = -1.0 if (k // 2) % 2 else 1.0
        if k % 2:
            sin = sin + sign * term
        else:
            cos = cos + sign * term
    top = torch.cat([cos, -sin], dim=-1)
    bottom = torch.cat([sin, cos], dim=-1)
    return torch.cat([top, bottom], dim=-2)


class GraphLayer(nn.Module):
    """Base class of the graph layers: ``[B, N, H]`` x ``[B, N, N]`` -> ``[B, N, H]``.

    ``adjacency_only_precompute``: True when :meth:`precompute` returns a tensor that is a
    deterministic function of ``adj`` alone (no parameters, no randomness, the same in
    training and evaluation). MCDM then computes it once for each of the ``2^N`` presence
    patterns and looks a batch's operators up (:class:`~scd_core.model.mcdm.MCDM`).
    """

    adjacency_only_precompute: ClassVar[bool] = False

    def precompute(self, adj: Tensor) -> Tensor | None:
        """Per-batch structure derived from ``adj`` only (shared by all layers of a pass)."""
        return None

    def reset_parameters(self) -> None:  # pragma: no cover - overridden
        pass

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        raise NotImplementedError


@GRAPH_LAYERS.register("none")
class IdentityGraph(GraphLayer):
    """No message passing: ``x -> x`` (the paper: "when graph connections are disabled,
    the identity operator is used instead"). No parameters; the "w/o graph layers"
    ablation of Table 1."""

    def __init__(self, hidden_dim: int, *, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        return x


@GRAPH_LAYERS.register("gat")
class GATLayer(GraphLayer):
    """Vanilla graph attention (Velickovic et al. 2018), the paper's Eq. 4-5, one head.

    ``out_i = sum_j alpha_ij W x_j + b`` with
    ``alpha_ij = softmax_j(LeakyReLU(a^T [W x_i || W x_j]))`` over the neighbours ``j`` of
    ``i`` (``adj[b, i, j]``). Identical to ``torch_geometric.nn.GATConv(H, H, heads=1)``
    on the same graph (``att = [att_dst || att_src]``, including its bias and its
    dropout on the attention coefficients), i.e. to ``pyg:GATConv`` with one head
    (tests/test_pyg_graph.py). No activation, as in Eq. 4.

    Eq. 4-5 have one attention head, so ``num_heads`` is accepted for the common signature
    and ignored. Parameters: ``H*H`` (W) + ``2H`` (a) + ``H`` (bias).

    Shapes: x ``[B, N, H]``, adj ``[B, N, N]`` bool -> ``[B, N, H]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int = 1,
        dropout: float = 0.0,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.lin = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.att = nn.Parameter(torch.empty(2 * hidden_dim))  # [a_target || a_source]
        self.bias = nn.Parameter(torch.empty(hidden_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)  # glorot, as PyG
        bound = math.sqrt(6.0 / (1 + self.hidden_dim))  # glorot on PyG's [1, 1, H] att
        nn.init.uniform_(self.att, -bound, bound)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        h = self.lin(x)  # [B, N, H]
        a_dst, a_src = self.att.chunk(2)
        scores = (h @ a_dst).unsqueeze(-1) + (h @ a_src).unsqueeze(-2)  # [B, N_i, N_j]
        scores = F.leaky_relu(scores, self.negative_slope)
        scores = scores.masked_fill(~adj, float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        alpha = F.dropout(alpha, self.dropout, self.training)
        return alpha @ h + self.bias


@GRAPH_LAYERS.register("unitary")
class UnitaryGraphConv(GraphLayer):
    """Unitary graph convolution (UCGNN, Kiani et al. 2024), real/imaginary split explicit.

    ``out = Dropout(ReLU(exp(i A_hat) (W x + b) + c))`` where ``A_hat`` is the
    GCN-normalised adjacency, ``exp`` its Taylor series truncated at ``taylor_order``
    (:func:`unitary_propagator`), and complex features are represented in real form as in
    the authors' ``ComplexToRealGCNConv`` / ``OrthogonalGCNConvLayer``: channels
    ``[:H/2]`` are the real part, ``[H/2:]`` the imaginary part. The operator is
    norm-preserving per sample (:meth:`propagate`), so messages never over-smooth; the
    activation (ReLU on both parts, their ``ComplexReLU``) and dropout follow.

    ``b`` is the conv bias of their ``ComplexGCNConv`` and ``c`` the layer's global bias:
    ``H*H + 2H`` parameters, which reproduces Table 17's graph-layer cost exactly.
    ``num_heads`` is accepted for the common signature and ignored. ``H`` must be even.

    ``self_loops=False`` (the default, as the authors' code: the diagonal removed,
    ``gcn_norm(add_self_loops=False)``) normalises and exponentiates the adjacency without
    its diagonal, so a node's own features reach it only through even powers of ``A_hat``;
    ``True`` keeps the self-loops of :func:`modality_adjacency`. A node without neighbours
    then has a zero row in ``A_hat`` and is left unchanged by the operator. The authors'
    layer also uses a fixed dropout; here it is the model's ``dropout``.

    Shapes: x ``[B, N, H]``, adj ``[B, N, N]`` bool, operator ``[B, 2N, 2N]`` -> ``[B, N, H]``.
    """

    adjacency_only_precompute = True

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int = 1,
        dropout: float = 0.0,
        taylor_order: int = 10,
        self_loops: bool = False,
    ) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"unitary graph layer needs an even hidden_dim (real || imaginary), got {hidden_dim}")
        self.hidden_dim = hidden_dim
        self.taylor_order = taylor_order
        self.self_loops = self_loops
        self.lin = nn.Linear(hidden_dim, hidden_dim)
        self.bias = nn.Parameter(torch.empty(hidden_dim))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)

    def precompute(self, adj: Tensor) -> Tensor:
        """``[B, N, N]`` adjacency -> ``[B, 2N, 2N]`` realified ``exp(i A_hat)`` (without the
        diagonal of ``adj`` unless ``self_loops``)."""
        if not self.self_loops:
            adj = adj & ~torch.eye(adj.size(-1), dtype=torch.bool, device=adj.device)
        return unitary_propagator(adj, self.taylor_order)

    @staticmethod
    def propagate(x: Tensor, operator: Tensor) -> Tensor:
        """Apply the realified ``exp(i A_hat)`` to ``x`` ``[B, N, H]`` (real || imag halves).

        Norm-preserving per sample: ``||propagate(x)[b]|| == ||x[b]||`` (Frobenius over
        nodes and channels) up to the Taylor truncation error.
        """
        b, n, h = x.shape
        half = h // 2
        stacked = torch.cat([x[..., :half], x[..., half:]], dim=1)  # [B, 2N, H/2]
        out = operator @ stacked
        return torch.cat([out[:, :n], out[:, n:]], dim=-1)

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        if operator is None:
            operator = self.precompute(adj)
        out = self.propagate(self.lin(x), operator) + self.bias
        return self.dropout(F.relu(out))
