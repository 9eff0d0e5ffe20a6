"""Three more graph layers over the modality nodes: NCGNN, EDGNN, HGNN (paper Table 14).

The paper (appendix A.6, Table 14) compares these with the vanilla GAT and UCGNN and links
one implementation of each (footnotes 27, 28, 30). Each class here follows that reference.
It is written for our dense, batched graphs: ``x`` ``[B, N, H]``, ``adj`` ``[B, N, N]`` bool
with ``adj[b, i, j]`` = "i receives from j", self-loops included, N <= 5 modality nodes.
Each class keeps the common API of :mod:`scd_core.model.graph`:
``Layer(hidden_dim, *, num_heads=1, dropout=0.0, **layer_specific)``, ``forward(x, adj,
operator=None) -> [B, N, H]``, ``precompute(adj)`` (a per-batch tensor that depends on
``adj`` and constructor hyperparameters only) and ``reset_parameters()``. None of them has
attention heads, so ``num_heads`` is accepted and ignored.

Masking contract (:func:`~scd_core.model.graph.modality_adjacency`): a missing node keeps
only its self-loop. Every layer below only moves information along ``adj``, so a missing
node never reaches a present one. Its own output stays finite (it evolves alone).

- ``ncgnn`` :class:`RUMGraphLayer`: random walks + RNNs, no convolution (Wang & Cho 2024).
- ``edgnn`` :class:`FuzzyDirGraphConv`: learnable continuous edge directions, fuzzy
  (complex) Laplacian (Pahng & Hormoz 2025, "CoED GNN").
- ``hgnn`` :class:`HyperbolicPDEGraphLayer`: message passing as a leapfrog discretisation
  of the graph wave equation (Yue et al. 2025, "Hyperbolic-PDE GNN").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scd_core.model.graph import GraphLayer
from scd_core.model.registries import GRAPH_LAYERS

__all__ = [
    "FuzzyDirGraphConv",
    "HyperbolicPDEGraphLayer",
    "RUMGraphLayer",
    "anonymous_experiment",
    "fuzzy_laplacian",
    "fuzzy_propagators",
    "sample_random_walks",
    "wave_adjacency",
]


# ====================================================================== NCGNN (RUM)


def sample_random_walks(adj: Tensor, uniforms: Tensor) -> Tensor:
    """Uniform random walks on a dense adjacency, one per (start node, sample).

    Every step moves to a uniformly chosen neighbour other than the node itself. A node
    with no other neighbour (a missing modality, or a single present one) stays on its
    self-loop. Staying put would add no topology, which is why the other self-loops are
    skipped. RUM's walks are also on graphs without self-loops.

    The choice is exact integer arithmetic: draw ``k = floor(u * deg)`` and take the
    ``(k+1)``-th neighbour in index order. So a walk never leaves the edges of ``adj``,
    and the masking contract holds bit for bit.

    Args:
        adj: ``[B, N, N]`` bool, symmetric, self-loops included.
        uniforms: ``[B or 1, N, S, L]`` in ``[0, 1)``: the randomness of step ``l`` of
            sample ``s`` of the walk starting at node ``v``. A leading 1 broadcasts the
            same draws to every graph of the batch.

    Returns:
        ``[B, N, S, L + 1]`` long: ``walks[b, v, s, 0] == v``, then ``L`` steps.
    """
    b, n, _ = adj.shape
    _, _, s, length = uniforms.shape
    eye = torch.eye(n, dtype=torch.bool, device=adj.device)
    step = adj & ~eye
    step = step | (eye & ~step.any(-1, keepdim=True))  # isolated: only the self-loop
    counts = step.to(uniforms.dtype).cumsum(-1)  # [B, N, N] neighbours with index <= j
    deg = counts[..., -1]  # [B, N] >= 1
    uniforms = uniforms.expand(b, n, s, length)
    cur = torch.arange(n, device=adj.device).view(1, n, 1).expand(b, n, s)
    walk = [cur]
    for t in range(length):
        flat = cur.reshape(b, n * s)
        deg_cur = deg.gather(1, flat).view(b, n, s)
        # floor(u*deg) < deg mathematically; the clamp only guards float rounding at u ~ 1
        rank = torch.minimum(torch.floor(uniforms[..., t] * deg_cur), deg_cur - 1)
        rows = counts.gather(1, flat.unsqueeze(-1).expand(b, n * s, n)).view(b, n, s, n)
        cur = (rows <= rank.unsqueeze(-1)).sum(-1)  # index of the (rank+1)-th neighbour
        walk.append(cur)
    return torch.stack(walk, dim=-1)


def anonymous_experiment(walks: Tensor) -> Tensor:
    """RUM's anonymous experiment ``omega_u(w)``: each node replaced by the order of its first visit.

    ``(a, b, a, c) -> (0, 1, 0, 2)``. It records the topology a walk saw (revisits,
    cycles) independently of which nodes it saw (Wang & Cho 2024).

    Args:
        walks: ``[..., T]`` long node indices.

    Returns:
        ``[..., T]`` long labels in ``[0, T)``.
    """
    t = walks.size(-1)
    pos = torch.arange(t, device=walks.device)
    same = walks.unsqueeze(-1) == walks.unsqueeze(-2)  # [..., T, T]: w_k == w_j
    first = torch.where(same, pos, t).amin(-1)  # first j with w_j == w_k (j = k at worst)
    is_new = first == pos
    label_at_first = is_new.long().cumsum(-1) - 1
    return label_at_first.gather(-1, first)


@GRAPH_LAYERS.register("ncgnn")
class RUMGraphLayer(GraphLayer):
    """NCGNN: random walk with unifying memory (RUM), Wang & Cho 2024.

    Source: "Non-convolutional Graph Neural Networks", NeurIPS 2024, arXiv:2408.00165.
    The SCD-MMPSR paper's reference implementation is github.com/ak24watch/RUM-Graph-nets
    (footnote 27, ``RumLayer``/``RUMModel``). A PyG port of the authors' ``rum`` package
    (``RUMLayer``) was also consulted. There is no convolution. A node's representation is the
    expectation, over random walks ``w`` that end at that node, of an RNN that reads the
    walk::

        h(v) = E_{w ~ P(w | v)} [ phi_x(x_w ; h0 = phi_u(omega_u(w))) ]
        omega_u(w)_k = order of first visit of w_k                (anonymous experiment)
        phi_u        = bidirectional GRU over [sin, cos](2 pi omega_u / T)  (topology)
        phi_x        = GRU over the node features along the walk            (semantics)

    Here the walk's topology initialises the semantic RNN's memory (the "unifying
    memory"; both reference codes do this). The expectation is estimated with
    ``num_samples`` walks of ``walk_length`` steps per node, and the layer returns
    ``x + Dropout(h)``, the skip connection of the reference ``RUMModel``.

    Walks are sampled with torch on the dense adjacency (:func:`sample_random_walks`),
    start at ``v`` and are reversed so that they *terminate* at ``v``, as the paper says.
    :meth:`precompute` draws them once per forward pass, and every NCGNN layer of the
    pass shares them. They depend on ``adj`` and on the randomness only.

    Randomness. In training mode the draws come from torch's global generator, so
    ``torch.manual_seed`` reproduces a run. In eval mode the draws are a fixed table
    ``u[v, s, l]`` from a private generator seeded with ``eval_seed``, created in every
    call (no hidden state). The table is shared by every graph of the batch, so a
    sample's eval output depends only on that sample, never on the batch it is in or
    its position there. It is "a fixed set of walks per graph". Enumerating every walk
    (the exact expectation) would be ``(N-1)^L`` sequences per node and was not done.

    Simplifications (documented choices):

    - ``phi_u`` has width ``topo_dim``, and its final states (both directions) are lifted
      to ``H`` by a linear map + tanh. The reference uses width ``H`` directly, which
      would cost ``6H^2`` extra parameters to encode a 2-dimensional input.
    - The authors' RUM layer also feeds node degrees and ``phi_u``'s per-step outputs into
      ``phi_x``, and adds a self-supervised next-node loss. These are omitted: on our
      complete graphs all present nodes have the same degree, and the layer API returns
      features only.
    - ``phi_x`` applies its input-to-hidden map once per *node* and gathers it along the
      walks. This is exactly a GRU over ``x_w``, and ~``S*(L+1)`` times cheaper than
      mapping every step of every walk.

    Parameters: ``6H^2 + 6H`` (``phi_x``, a GRU cell) + ``phi_u`` + ``(2*topo_dim + 1) * H``.

    Shapes: x ``[B, N, H]``, adj ``[B, N, N]`` bool, operator = walks
    ``[B, N, S, L+1]`` long -> ``[B, N, H]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int = 1,
        dropout: float = 0.0,
        num_samples: int = 4,
        walk_length: int = 4,
        topo_dim: int = 32,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        if num_samples < 1 or walk_length < 1:
            raise ValueError(f"ncgnn needs num_samples >= 1 and walk_length >= 1, got {num_samples}, {walk_length}")
        self.hidden_dim = hidden_dim
        self.num_samples = num_samples
        self.walk_length = walk_length
        self.topo_dim = topo_dim
        self.eval_seed = eval_seed
        self.topo_rnn = nn.GRU(2, topo_dim, batch_first=True, bidirectional=True)  # phi_u
        self.topo_to_memory = nn.Linear(2 * topo_dim, hidden_dim)
        self.semantic = nn.GRUCell(hidden_dim, hidden_dim)  # phi_x (weights used step by step)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.topo_rnn.reset_parameters()
        self.topo_to_memory.reset_parameters()
        self.semantic.reset_parameters()

    def precompute(self, adj: Tensor) -> Tensor:
        """``[B, N, N]`` adjacency -> walks ``[B, N, S, L+1]`` (``walks[..., 0]`` = start node)."""
        b, n, _ = adj.shape
        shape = (self.num_samples, self.walk_length)
        if self.training:
            uniforms = torch.rand(b, n, *shape, device=adj.device)
        else:
            gen = torch.Generator().manual_seed(self.eval_seed)  # local: no global RNG state touched
            uniforms = torch.rand(1, n, *shape, generator=gen).to(adj.device)
        return sample_random_walks(adj, uniforms)

    def topological_memory(self, walks: Tensor) -> Tensor:
        """Walks ``[B, N, S, T]`` (ending at their node) -> initial memory ``[B*N*S, H]``."""
        t = walks.size(-1)
        # labels are taken on the walk as sampled (the end node gets label 0, as in RUM),
        # then read in the same reversed order as the features
        labels = anonymous_experiment(walks.flip(-1)).flip(-1)
        angle = labels.to(self.topo_to_memory.weight.dtype) * (2 * math.pi / t)
        enc = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(0, 2)  # [B*N*S, T, 2]
        _, h_n = self.topo_rnn(enc)  # [2, B*N*S, topo_dim]
        return torch.tanh(self.topo_to_memory(torch.cat([h_n[0], h_n[1]], dim=-1)))

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        walks = self.precompute(adj) if operator is None else operator  # [B, N, S, T]
        walks = walks.flip(-1)  # walks terminating at their node (the paper's convention)
        b, n, s, t = walks.shape
        h_dim = self.hidden_dim
        cell = self.semantic
        h = self.topological_memory(walks).view(b, n * s, h_dim)
        # PyTorch's GRU gate convention (r, z, n). The weights are split once per call and
        # the input-to-hidden part is applied once per node, then gathered along the walks:
        # slicing activations inside the loop would cost a zero-fill + copy per step in
        # backward, which dominated the CPU profile.
        w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
        b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
        gates_x = [  # 3 x [B, N, H]
            F.linear(x, w, bias) for w, bias in zip(cell.weight_ih.chunk(3), cell.bias_ih.chunk(3))
        ]
        steps = walks.reshape(b, n * s, t)
        for k in range(t):  # one GRU step along every walk of the batch at once
            idx = steps[..., k].unsqueeze(-1).expand(b, n * s, h_dim)
            x_r, x_z, x_n = (g.gather(1, idx) for g in gates_x)
            r = torch.sigmoid(x_r + F.linear(h, w_hr, b_hr))
            z = torch.sigmoid(x_z + F.linear(h, w_hz, b_hz))
            cand = torch.tanh(torch.addcmul(x_n, r, F.linear(h, w_hn, b_hn)))
            h = torch.lerp(cand, h, z)  # (1 - z) * cand + z * h
        h = h.view(b, n, s, h_dim).mean(dim=2)  # Monte-Carlo estimate of E_w[.]
        return x + self.dropout(h)


# ====================================================================== EDGNN (CoED)


def fuzzy_laplacian(adj: Tensor, theta: Tensor) -> Tensor:
    """CoED's fuzzy Laplacian ``L_F`` (Pahng & Hormoz 2025, section 3), complex ``[B, N, N]``.

    The undirected edge ``{i, j}`` has a direction angle ``theta_ij``, with
    ``theta_ji = pi/2 - theta_ij``. ``0`` means ``i -> j`` only, ``pi/2`` means ``j -> i``
    only, and ``pi/4`` means undirected. ``L_F[i, j] = A_ij exp(i theta_ij)``: the real part
    ``cos theta_ij`` carries the flow ``i -> j`` and the imaginary part ``sin theta_ij``
    the flow ``j -> i``. A self-loop is ``1 + i`` (both flows, weight 1), as the
    authors' ``get_fuzzy_laplacian(..., add_self_loop=True)`` sets it.

    Properties (tested): ``exp(-i pi/4) L_F`` is Hermitian, including its diagonal.
    Reversing every edge, ``theta -> pi/2 - theta``, gives ``L_F^T = i conj(L_F)``,
    i.e. the *conjugate* of that Hermitian matrix.

    Args:
        adj: ``[B, N, N]`` bool, symmetric, self-loops included.
        theta: ``[N, N]`` real angles with ``theta + theta^T = pi/2`` off the diagonal
            (the diagonal is ignored).
    """
    re, im = _fuzzy_parts(adj, theta)
    return torch.complex(re, im)


def _fuzzy_parts(adj: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of :func:`fuzzy_laplacian` (kept real for autograd speed)."""
    n = adj.size(-1)
    eye = torch.eye(n, dtype=torch.bool, device=adj.device)
    off = adj & ~eye
    loop = adj & eye
    one = torch.ones((), dtype=theta.dtype, device=theta.device)
    re = torch.where(off, theta.cos(), 0.0) + torch.where(loop, one, 0.0)
    im = torch.where(off, theta.sin(), 0.0) + torch.where(loop, one, 0.0)
    return re, im


def fuzzy_propagators(adj: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """CoED's normalised in- and out-neighbour aggregation matrices, ``[B, N, N]`` each.

    Edge weights are the squared parts of :func:`fuzzy_laplacian`:
    ``W_out = Re(L_F)^2`` (``W_out[i, j]`` = strength of the flow ``i -> j``) and
    ``W_in = Im(L_F)^2 = W_out^T``. With ``d_out``/``d_in`` their row sums (>= 1 thanks
    to the self-loop), the authors' ``get_fuzzy_laplacian`` normalises them as::

        M_in  = D_in^-1/2  W_in  D_out^-1/2   (messages from in-neighbours: j -> i)
        M_out = D_out^-1/2 W_out D_in^-1/2    (messages from out-neighbours: i -> j)

    So ``M_out = M_in^T``. Reversing the directions (``theta -> pi/2 - theta``) swaps the
    two.

    Args:
        adj: ``[B, N, N]`` bool. theta: ``[N, N]`` as in :func:`fuzzy_laplacian`.

    Returns:
        ``(M_in, M_out)``, real ``[B, N, N]``.
    """
    re, im = _fuzzy_parts(adj, theta)
    w_out, w_in = re.square(), im.square()
    d_out = w_out.sum(-1).rsqrt()  # [B, N]
    d_in = w_in.sum(-1).rsqrt()
    m_in = d_in.unsqueeze(-1) * w_in * d_out.unsqueeze(-2)
    m_out = d_out.unsqueeze(-1) * w_out * d_in.unsqueeze(-2)
    return m_in, m_out


@GRAPH_LAYERS.register("edgnn")
class FuzzyDirGraphConv(GraphLayer):
    """EDGNN: continuous edge direction (CoED) graph convolution, Pahng & Hormoz 2025.

    Source: "Improving Graph Neural Networks by Learning Continuous Edge Directions",
    ICLR 2025, arXiv:2410.14109. The SCD-MMPSR paper's reference (footnote 28) is
    github.com/hormoz-lab/coed-gnn: ``src/utils/fuzzy_laplacian.py``
    (``get_fuzzy_laplacian``) and ``src/model.py`` (``FuzzyDirGCNConv``,
    ``FuzzyDirGCN`` with ``self_feature_transform``)::

        out = Dropout(ReLU( alpha (W_in  M_in  x + b_in)
                          + (1 - alpha) (W_out M_out x + b_out)
                          + W_self x + b_self ))

    ``M_in``/``M_out`` come from the fuzzy Laplacian of learnable angles
    (:func:`fuzzy_propagators`). The angles are one per unordered modality pair,
    shared by every sample. This is CoED's "graph ensemble" setting (a fixed graph,
    many feature realisations), which is exactly the modality graph.

    The angles start at ``pi/4`` (undirected), as the authors initialise undirected
    edges. They are unconstrained: ``cos^2``/``sin^2`` are periodic and stay in
    ``[0, 1]``. Pair ``(i, j)`` of the modality order maps to a fixed parameter, so
    ``max_nodes`` bounds ``N``. The operator depends on learnable angles, so
    :meth:`precompute` returns None (the shared operator must be parameter-free).
    ReLU and dropout follow the authors' hidden layers. Their optional per-layer L2
    normalisation is not applied.

    Parameters: ``3H^2 + 3H + max_nodes (max_nodes - 1) / 2`` angles.

    Shapes: x ``[B, N, H]``, adj ``[B, N, N]`` bool -> ``[B, N, H]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int = 1,
        dropout: float = 0.0,
        alpha: float = 0.5,
        max_nodes: int = 5,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.alpha = alpha
        self.max_nodes = max_nodes
        self.theta = nn.Parameter(torch.empty(max_nodes * (max_nodes - 1) // 2))  # pairs i < j
        self.lin_in = nn.Linear(hidden_dim, hidden_dim)
        self.lin_out = nn.Linear(hidden_dim, hidden_dim)
        self.lin_self = nn.Linear(hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_in, self.lin_out, self.lin_self):
            nn.init.xavier_uniform_(lin.weight)  # glorot + zero bias, as the authors
            nn.init.zeros_(lin.bias)
        nn.init.constant_(self.theta, math.pi / 4)

    def direction_matrix(self, num_nodes: int) -> Tensor:
        """``[N, N]`` angles: ``theta_ij`` above the diagonal, ``pi/2 - theta_ji`` below, 0 on it."""
        if num_nodes > self.max_nodes:
            raise ValueError(f"edgnn was built for at most {self.max_nodes} nodes (max_nodes), got {num_nodes}")
        m = self.max_nodes
        rows, cols = torch.triu_indices(m, m, 1, device=self.theta.device)
        upper = self.theta.new_zeros(m, m).index_put((rows, cols), self.theta)
        full = upper + torch.tril(math.pi / 2 - upper.T, diagonal=-1)
        return full[:num_nodes, :num_nodes]

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        m_in, m_out = fuzzy_propagators(adj, self.direction_matrix(x.size(1)).to(x.dtype))
        out = (
            self.alpha * self.lin_in(m_in @ x)
            + (1 - self.alpha) * self.lin_out(m_out @ x)
            + self.lin_self(x)
        )
        return self.dropout(F.relu(out))


# ====================================================================== HGNN


def wave_adjacency(adj: Tensor) -> Tensor:
    """The spatial operator of the graph wave equation: ``D^-1/2 A D^-1/2`` without self-loops.

    This is ``WaveLapConv.get_laplacian(laplacian="sym")`` of the authors' code. It
    normalises the adjacency *without* self-loops (they add self-loops of weight 0), and
    the degree-0 rows of isolated nodes are zero. Our self-loops are dropped, so a missing
    node's row and column are zero.

    Args:
        adj: ``[B, N, N]`` bool, symmetric.

    Returns:
        ``[B, N, N]`` float, symmetric, zero diagonal, spectrum in ``[-1, 1]``.
    """
    n = adj.size(-1)
    eye = torch.eye(n, dtype=torch.bool, device=adj.device)
    a = (adj & ~eye).to(torch.get_default_dtype())
    deg = a.sum(-1)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1.0).rsqrt(), 0.0)
    return inv_sqrt.unsqueeze(-1) * a * inv_sqrt.unsqueeze(-2)


@GRAPH_LAYERS.register("hgnn")
class HyperbolicPDEGraphLayer(GraphLayer):
    """HGNN: message passing as a hyperbolic PDE (graph wave equation), Yue et al. 2025.

    Source: "Hyperbolic-PDE GNN: Spectral Graph Neural Networks in the Perspective of a
    System of Hyperbolic Partial Differential Equations", ICML 2025 (PMLR 267:73810),
    arXiv:2505.23014. The SCD-MMPSR paper's reference (footnote 30) is
    github.com/YueAWu/Hyperbolic-GNN, ``HyperbolicGNN.py``: ``WavePDEFunc`` with
    ``WaveLapConv(laplacian="sym", method="exp")``. Node features evolve by the
    second-order system ``d^2 X / dt^2 = A_hat X`` (the paper's ``a^2 L X``, with the
    code's ``a = 1`` and operator :func:`wave_adjacency`). The initial conditions are
    learnt from the input: ``X(0) = phi_0 = W_0 x + b_0``, ``X'(0) = phi_1 = W_1 x + b_1``.
    The explicit scheme is::

        X_1     = phi_0 + dt phi_1 + dt^2/2 A_hat phi_0        (Taylor start, "exp_init")
        X_{k+1} = 2 X_k - X_{k-1} + dt^2 A_hat X_k             (leapfrog)

    It runs for ``n = ceil(time / dt)`` steps in total, and the output is
    ``Dropout(X_n)``. The scheme is linear, as in the reference (their model has no
    activation inside the PDE).

    Closed form (tested): with ``M = I + dt^2/2 A_hat``, the recursion is the Chebyshev
    one, so ``X_n = T_n(M) phi_0 + dt U_{n-1}(M) phi_1``. This is the paper's link to
    spectral (polynomial-filter) GNNs. With only self-loops, ``A_hat = 0`` and
    ``X_n = phi_0 + n dt phi_1``: free motion, the diffusion term vanishes.

    :meth:`precompute` returns ``A_hat``, which depends on ``adj`` only and is shared by
    every HGNN layer of a pass. The defaults ``time=2, dt=0.5`` give 4 steps.
    Parameters: ``2H^2 + 2H``.

    Shapes: x ``[B, N, H]``, adj ``[B, N, N]`` bool, operator ``[B, N, N]`` -> ``[B, N, H]``.
    """

    adjacency_only_precompute = True

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int = 1,
        dropout: float = 0.0,
        time: float = 2.0,
        dt: float = 0.5,
    ) -> None:
        super().__init__()
        if time <= 0 or dt <= 0:
            raise ValueError(f"hgnn needs time > 0 and dt > 0, got time={time}, dt={dt}")
        self.hidden_dim = hidden_dim
        self.time = time
        self.dt = dt
        self.num_steps = math.ceil(time / dt)
        self.lin0 = nn.Linear(hidden_dim, hidden_dim)  # X(0)
        self.lin1 = nn.Linear(hidden_dim, hidden_dim)  # X'(0)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin0.reset_parameters()
        self.lin1.reset_parameters()

    def precompute(self, adj: Tensor) -> Tensor:
        """``[B, N, N]`` adjacency -> ``A_hat`` ``[B, N, N]`` (:func:`wave_adjacency`)."""
        return wave_adjacency(adj)

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        a_hat = self.precompute(adj) if operator is None else operator
        a_hat = a_hat.to(x.dtype)
        dt2 = self.dt**2
        phi0, phi1 = self.lin0(x), self.lin1(x)
        prev, cur = phi0, phi0 + self.dt * phi1 + 0.5 * dt2 * (a_hat @ phi0)
        for _ in range(self.num_steps - 1):
            prev, cur = cur, 2 * cur - prev + dt2 * (a_hat @ cur)
        return self.dropout(cur)
