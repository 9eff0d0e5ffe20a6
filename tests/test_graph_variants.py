"""NCGNN, EDGNN and HGNN graph layers (paper Table 14; issue 8)."""

from __future__ import annotations

import math

import pytest
import torch
from layer_checks import assert_reset_is_deterministic

from scd_core.config import ExperimentConfig, load_config
from scd_core.model import GRAPH_LAYERS, MCDM, modality_adjacency
from scd_core.model.graph_variants import (
    FuzzyDirGraphConv,
    HyperbolicPDEGraphLayer,
    RUMGraphLayer,
    anonymous_experiment,
    fuzzy_laplacian,
    fuzzy_propagators,
    sample_random_walks,
    wave_adjacency,
)
from scd_core.tasks import TASK_NAMES, TASKS

NAMES = ["ncgnn", "edgnn", "hgnn"]
H = 16
MASK = torch.tensor(
    [
        [True, True, True, True, True],
        [True, False, True, True, False],
        [False, False, True, False, False],  # a single present node
        [True, True, False, False, True],
    ]
)
SMALL_DIMS = {"video": 12, "audio": 10, "text": 8, "behavior": 6}


def make_layer(name: str, **kw):
    torch.manual_seed(0)
    return GRAPH_LAYERS.get(name)(H, num_heads=4, dropout=0.1, **kw).eval()


# ------------------------------------------------------------------ common contract


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_accepted_by_config(name):
    assert name in GRAPH_LAYERS
    cfg = load_config(None, [f"model.graph={name}"])
    assert isinstance(cfg, ExperimentConfig) and cfg.model.graph == name


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_finite_and_shared_operator(name):
    layer = make_layer(name)
    adj = modality_adjacency(MASK)
    x = torch.randn(4, 5, H)
    out = layer(x, adj)
    assert out.shape == (4, 5, H) and torch.isfinite(out).all()
    # the operator MCDM precomputes once per pass gives the same result (eval: deterministic)
    torch.testing.assert_close(layer(x, adj, layer.precompute(adj)), out, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True])
def test_missing_node_features_do_not_reach_present_nodes(name, train):
    layer = make_layer(name)
    layer.train(train)
    adj = modality_adjacency(MASK)
    x = torch.randn(4, 5, H)
    altered = x.clone()
    altered[~MASK] = torch.randn(int((~MASK).sum()), H) * 1e3
    operator = layer.precompute(adj)  # same walks for both calls (ncgnn, train mode)
    if train:
        torch.manual_seed(1)  # same dropout masks for both calls
    base = layer(x, adj, operator)
    if train:
        torch.manual_seed(1)
    out = layer(altered, adj, operator)
    torch.testing.assert_close(out[MASK], base[MASK], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_is_deterministic(name):
    assert_reset_is_deterministic(make_layer(name), seed=3)


@pytest.mark.parametrize("name", NAMES)
def test_mcdm_builds_from_config_and_trains(name):
    cfg = load_config(
        None,
        [f"model.graph={name}", "model.hidden_dim=16", "model.out_features=8", "model.num_heads=4",
         "model.dropout=0.1"],
    )
    dims = {m: SMALL_DIMS[m] for m in cfg.data.modalities}
    torch.manual_seed(0)
    model = MCDM.from_config(cfg.model, dims, cfg.data.tasks).train()
    assert model.graph_name == name and isinstance(model.shared_graph, GRAPH_LAYERS.get(name))
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(6, d, generator=g) for m, d in dims.items()}
    mask = torch.rand(6, len(dims), generator=g) > 0.35
    mask[:, 0] |= ~mask.any(1)
    feats = {m: x.masked_fill(~mask[:, i, None], float("nan")) for i, (m, x) in enumerate(feats.items())}
    out = model(feats, mask)
    assert set(out) == set(cfg.data.tasks)
    for t, o in out.items():
        assert o.shape == (6, TASKS[t].num_outputs) and torch.isfinite(o).all()
    sum(o.sum() for o in out.values()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NAMES)
def test_mcdm_masked_modalities_change_no_output(name):
    torch.manual_seed(0)
    model = MCDM(SMALL_DIMS, TASK_NAMES, hidden_dim=16, out_features=8, num_heads=4, graph=name).eval()
    g = torch.Generator().manual_seed(1)
    feats = {m: torch.randn(8, d, generator=g) for m, d in SMALL_DIMS.items()}
    mask = torch.rand(8, 4, generator=g) > 0.35
    mask[:, 0] |= ~mask.any(1)
    assert (~mask).any()
    base = model(feats, mask)
    altered = {m: x.masked_fill(~mask[:, i, None], 50.0) for i, (m, x) in enumerate(feats.items())}
    out = model(altered, mask)
    for t in TASK_NAMES:
        torch.testing.assert_close(out[t], base[t], atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ NCGNN (RUM)


def test_anonymous_experiment_labels_first_visits():
    walks = torch.tensor([[3, 1, 3, 0, 1], [2, 2, 2, 2, 2], [0, 1, 2, 3, 4]])
    expected = torch.tensor([[0, 1, 0, 2, 1], [0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
    assert torch.equal(anonymous_experiment(walks), expected)


def test_random_walks_follow_edges_and_never_leave_a_masked_node():
    adj = modality_adjacency(MASK)
    walks = sample_random_walks(adj, torch.rand(4, 5, 64, 6))
    assert walks.shape == (4, 5, 64, 7)
    assert torch.equal(walks[..., 0], torch.arange(5).view(1, 5, 1).expand(4, 5, 64))
    b = torch.arange(4).view(4, 1, 1, 1)
    src, dst = walks[..., :-1], walks[..., 1:]
    assert adj[b, src, dst].all()  # every step is an edge
    present_multi = MASK & (MASK.sum(1, keepdim=True) > 1)
    moved = (src != dst)[present_multi]
    assert moved.all()  # a present node with neighbours never idles on its self-loop
    missing_walks = walks[~MASK]
    starts = torch.arange(5).expand(4, 5)[~MASK]
    assert (missing_walks == starts.view(-1, 1, 1)).all()  # a missing node stays alone


def test_random_walks_are_uniform_over_neighbours():
    adj = modality_adjacency(torch.ones(1, 4, dtype=torch.bool))
    walks = sample_random_walks(adj, torch.rand(1, 4, 6000, 1))
    counts = torch.stack([(walks[0, 0, :, 1] == j).sum() for j in range(4)]).float()
    assert counts[0] == 0
    torch.testing.assert_close(counts[1:] / 6000, torch.full((3,), 1 / 3), atol=0.03, rtol=0)


def test_rum_eval_is_deterministic_and_independent_of_the_batch():
    layer = make_layer("ncgnn")
    adj = modality_adjacency(MASK)
    x = torch.randn(4, 5, H)
    full = layer(x, adj)
    torch.testing.assert_close(layer(x, adj), full, atol=0, rtol=0)
    for i in range(4):  # a sample alone gives what it gives inside the batch
        torch.testing.assert_close(layer(x[i : i + 1], adj[i : i + 1])[0], full[i], atol=1e-6, rtol=1e-6)
    layer.train()
    assert not torch.equal(layer.precompute(adj), layer.precompute(adj))  # training: fresh walks


def test_rum_equals_reference_rnn_over_each_walk():
    """h(v) = mean over walks ending at v of GRU(x along the walk; h0 = phi_u(omega_u(w)))."""
    layer = make_layer("ncgnn", num_samples=3, walk_length=3)
    adj = modality_adjacency(MASK[:2])
    x = torch.randn(2, 5, H)
    walks = layer.precompute(adj)
    out = layer(x, adj, walks)
    gru = torch.nn.GRU(H, H, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(layer.semantic.weight_ih)
        gru.weight_hh_l0.copy_(layer.semantic.weight_hh)
        gru.bias_ih_l0.copy_(layer.semantic.bias_ih)
        gru.bias_hh_l0.copy_(layer.semantic.bias_hh)
    topo = torch.nn.GRU(2, layer.topo_dim, batch_first=True, bidirectional=True)
    topo.load_state_dict(layer.topo_rnn.state_dict())
    for b in range(2):
        for v in range(5):
            states = []
            for s in range(3):
                w = walks[b, v, s]
                assert w[0] == v
                seq = w.flip(0)  # the walk terminates at v
                labels = anonymous_experiment(w).flip(0).float()
                ang = labels * 2 * math.pi / len(w)
                _, hu = topo(torch.stack([ang.sin(), ang.cos()], -1)[None])
                h0 = torch.tanh(layer.topo_to_memory(torch.cat([hu[0, 0], hu[1, 0]])))
                _, hx = gru(x[b, seq][None], h0.view(1, 1, H))
                states.append(hx[0, 0])
            ref = x[b, v] + torch.stack(states).mean(0)
            torch.testing.assert_close(out[b, v], ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ EDGNN (CoED)


def _random_directions(layer: FuzzyDirGraphConv, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.theta.copy_(torch.rand(layer.theta.shape, generator=g) * math.pi / 2)


def test_fuzzy_laplacian_is_hermitian_up_to_a_global_phase():
    layer = make_layer("edgnn")
    _random_directions(layer)
    adj = modality_adjacency(MASK)
    theta = layer.direction_matrix(5)
    off = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close((theta + theta.T)[off], torch.full((20,), math.pi / 2))
    lap = fuzzy_laplacian(adj, theta).to(torch.complex128)
    herm = lap * complex(math.cos(-math.pi / 4), math.sin(-math.pi / 4))
    torch.testing.assert_close(herm, herm.conj().transpose(-1, -2))
    # real part = flow i -> j, imaginary part = flow j -> i, on the present edges only
    assert (lap.real[~adj] == 0).all() and (lap.imag[~adj] == 0).all()


def test_reversing_edge_directions_conjugates_the_laplacian_and_swaps_in_out():
    layer = make_layer("edgnn", alpha=0.3)
    _random_directions(layer, seed=1)
    adj = modality_adjacency(MASK)
    x = torch.randn(4, 5, H)
    theta = layer.direction_matrix(5)
    lap = fuzzy_laplacian(adj, theta)
    m_in, m_out = fuzzy_propagators(adj, theta)
    torch.testing.assert_close(m_out, m_in.transpose(-1, -2))

    rev = make_layer("edgnn", alpha=0.7)  # reversed directions, in/out roles swapped
    with torch.no_grad():
        rev.theta.copy_(math.pi / 2 - layer.theta)
        rev.lin_in.load_state_dict(layer.lin_out.state_dict())
        rev.lin_out.load_state_dict(layer.lin_in.state_dict())
        rev.lin_self.load_state_dict(layer.lin_self.state_dict())
    theta_rev = rev.direction_matrix(5)
    torch.testing.assert_close(theta_rev[~torch.eye(5, dtype=torch.bool)], theta.T[~torch.eye(5, dtype=torch.bool)])
    lap_rev = fuzzy_laplacian(adj, theta_rev)
    torch.testing.assert_close(lap_rev, lap.transpose(-1, -2))  # reversal = transposition
    phase = complex(math.cos(-math.pi / 4), math.sin(-math.pi / 4))
    torch.testing.assert_close(lap_rev * phase, (lap * phase).conj())  # = conjugation
    rin, rout = fuzzy_propagators(adj, theta_rev)
    torch.testing.assert_close(rin, m_out)
    torch.testing.assert_close(rout, m_in)
    torch.testing.assert_close(rev(x, adj), layer(x, adj), atol=1e-6, rtol=1e-6)


def test_fully_directed_edge_sends_one_way_only():
    layer = make_layer("edgnn", alpha=1.0)  # in-neighbour messages only
    adj = modality_adjacency(torch.ones(1, 2, dtype=torch.bool))
    with torch.no_grad():
        layer.theta.zero_()  # theta_01 = 0: node 0 -> node 1 only
        layer.lin_self.weight.zero_()
        layer.lin_self.bias.zero_()
    m_in, _ = fuzzy_propagators(adj, layer.direction_matrix(2))
    assert m_in[0, 0, 1] == 0 and m_in[0, 1, 0] > 0  # node 1 hears node 0, not vice versa
    x = torch.randn(1, 2, H)
    y = x.clone()
    y[0, 1] += 5.0
    torch.testing.assert_close(layer(y, adj)[0, 0], layer(x, adj)[0, 0])  # node 0 is deaf to 1


def test_edgnn_rejects_more_nodes_than_built_for():
    layer = FuzzyDirGraphConv(H, max_nodes=3)
    with pytest.raises(ValueError, match="max_nodes"):
        layer(torch.randn(1, 4, H), modality_adjacency(torch.ones(1, 4, dtype=torch.bool)))


# ------------------------------------------------------------------ HGNN


def test_hgnn_self_loops_only_is_free_motion():
    layer = make_layer("hgnn", time=1.5, dt=0.5)
    adj = torch.eye(4, dtype=torch.bool).expand(3, 4, 4)
    assert (wave_adjacency(adj) == 0).all()
    x = torch.randn(3, 4, H)
    phi0, phi1 = layer.lin0(x), layer.lin1(x)
    # d2X/dt2 = 0: X(T) = X(0) + T X'(0)
    torch.testing.assert_close(layer(x, adj), phi0 + 1.5 * phi1, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("time,dt", [(2.0, 0.5), (3.0, 1.0), (1.0, 0.1)])
def test_hgnn_matches_chebyshev_closed_form(time, dt):
    layer = make_layer("hgnn", time=time, dt=dt).double()
    adj = modality_adjacency(MASK)
    x = torch.randn(4, 5, H, dtype=torch.float64)
    a_hat = wave_adjacency(adj).double()
    torch.testing.assert_close(a_hat, a_hat.transpose(-1, -2))
    n = math.ceil(time / dt)
    m = torch.eye(5, dtype=torch.float64) + dt**2 / 2 * a_hat
    evals, evecs = torch.linalg.eigh(m)

    def matfun(values):
        return evecs @ torch.diag_embed(values) @ evecs.transpose(-1, -2)

    t_n = matfun(torch.special.chebyshev_polynomial_t(evals, n))
    u_n1 = matfun(torch.special.chebyshev_polynomial_u(evals, n - 1))
    expected = t_n @ layer.lin0(x) + dt * (u_n1 @ layer.lin1(x))
    torch.testing.assert_close(layer(x, adj), expected, atol=1e-9, rtol=1e-9)


def test_hgnn_converges_to_the_continuous_wave_solution():
    """Small dt: X(T) -> cosh(T sqrt(A)) phi0 + sinh(T sqrt(A)) / sqrt(A) phi1 (eigenwise)."""
    layer = make_layer("hgnn", time=1.0, dt=1e-3).double()
    adj = modality_adjacency(torch.ones(1, 4, dtype=torch.bool))
    x = torch.randn(1, 4, H, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(wave_adjacency(adj).double())  # 1 and -1/3 (x3)
    root = evals.to(torch.complex128).sqrt()
    c = torch.cosh(root).real
    s = (torch.sinh(root) / root).real
    c_m = evecs @ torch.diag_embed(c) @ evecs.transpose(-1, -2)
    s_m = evecs @ torch.diag_embed(s) @ evecs.transpose(-1, -2)
    expected = c_m @ layer.lin0(x) + s_m @ layer.lin1(x)
    torch.testing.assert_close(layer(x, adj), expected, atol=1e-5, rtol=1e-5)


def test_parameter_counts():
    assert sum(p.numel() for p in HyperbolicPDEGraphLayer(H).parameters()) == 2 * H * H + 2 * H
    assert sum(p.numel() for p in FuzzyDirGraphConv(H, max_nodes=5).parameters()) == 3 * H * H + 3 * H + 10
    rum = RUMGraphLayer(H, topo_dim=4)
    gru_u = 2 * (3 * 4 * 2 + 3 * 4 * 4 + 2 * 3 * 4)
    assert sum(p.numel() for p in rum.parameters()) == 6 * H * H + 6 * H + gru_u + 8 * H + H
