"""MCDM and its layers (paper section 2.3; issue 3)."""

from __future__ import annotations

import math

import pytest
import torch
from layer_checks import assert_reset_is_deterministic

from scd_core.config import ModelConfig
from scd_core.model import (
    ATTENTION_LAYERS,
    GRAPH_LAYERS,
    MCDM,
    UnitaryGraphConv,
    count_parameters,
    modality_adjacency,
    named_model,
    normalized_adjacency,
    size_mb,
    unitary_propagator,
)
from scd_core.model.__main__ import main as cli_main
from scd_core.tasks import MODALITIES, PAPER_FEATURE_DIMS, TASK_NAMES, TASKS

SMALL_DIMS = {"video": 12, "audio": 10, "text": 8, "behavior": 6}
SMALL = dict(hidden_dim=16, out_features=8, num_heads=4, dropout=0.1)


def small_model(dims=SMALL_DIMS, tasks=TASK_NAMES, **kw) -> MCDM:
    return MCDM(dims, tasks, **{**SMALL, **kw})


def random_batch(dims, batch: int, seed: int = 0, missing: bool = True):
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(batch, d, generator=g) for m, d in dims.items()}
    mask = torch.ones(batch, len(dims), dtype=torch.bool)
    if missing and len(dims) > 1:
        mask = torch.rand(batch, len(dims), generator=g) > 0.35
        mask[:, 0] |= ~mask.any(1)  # every sample keeps at least one modality
    return feats, mask


NAMED = ["MCDM-1", "MCDM-2", "MCDM-3"]

# ------------------------------------------------------------------ registries and config


def test_registries_and_named_models():
    assert {"none", "gat", "unitary"} <= set(GRAPH_LAYERS.names())
    assert {"none", "mha", "mta"} <= set(ATTENTION_LAYERS.names())
    assert named_model("MCDM-1") == {"graph": "gat", "attention": "mha"}
    assert named_model("MCDM-2") == {"graph": "unitary", "attention": "mha"}
    assert named_model("MCDM-3") == {"graph": "unitary", "attention": "mta"}
    with pytest.raises(KeyError, match="MCDM-1"):
        named_model("MCDM-9")
    # the ModelConfig defaults name registered layers, so they validate
    cfg = ModelConfig()
    assert cfg.graph in GRAPH_LAYERS and cfg.attention in ATTENTION_LAYERS
    ModelConfig.model_validate({"graph": cfg.graph, "attention": cfg.attention})


# ------------------------------------------------------------------ shapes, ablations


@pytest.mark.parametrize("name", NAMED)
def test_output_shapes_and_ranges(name):
    model = small_model(**named_model(name)).eval()
    feats, mask = random_batch(SMALL_DIMS, 5)
    out = model(feats, mask)
    assert list(out) == list(TASK_NAMES)
    for t in TASK_NAMES:
        assert out[t].shape == (5, TASKS[t].num_outputs)
        assert torch.isfinite(out[t]).all()
    assert ((out["pt"] >= 0) & (out["pt"] <= 1)).all()


ABLATIONS = (
    [("full", {}, SMALL_DIMS, TASK_NAMES)]
    + [(n, named_model(n), SMALL_DIMS, TASK_NAMES) for n in NAMED]
    + [
        ("w/o task projectors", {"task_projectors": False}, SMALL_DIMS, TASK_NAMES),
        ("w/o graph layers", {"graph": "none"}, SMALL_DIMS, TASK_NAMES),
        ("w/o attention layers", {"attention": "none"}, SMALL_DIMS, TASK_NAMES),
        ("w/o guide banks", {"guide_banks": False}, SMALL_DIMS, TASK_NAMES),
        ("w/o projectors+graph+attention", {"task_projectors": False, "graph": "none", "attention": "none"},
         SMALL_DIMS, TASK_NAMES),
    ]
    + [(f"w/o {m}", {}, {k: v for k, v in SMALL_DIMS.items() if k != m}, TASK_NAMES) for m in MODALITIES]
    + [(f"w/o {t}", {}, SMALL_DIMS, tuple(x for x in TASK_NAMES if x != t)) for t in TASK_NAMES]
    + [("single modality", {"attention": "mta"}, {"text": 8}, TASK_NAMES)]
)


@pytest.mark.parametrize("label,kw,dims,tasks", ABLATIONS, ids=[a[0] for a in ABLATIONS])
def test_every_ablation_runs_forward_and_backward(label, kw, dims, tasks):
    torch.manual_seed(0)
    model = small_model(dims, tasks, **kw).train()
    feats, mask = random_batch(dims, 6)
    out = model(feats, mask)
    assert set(out) == set(tasks)
    sum(o.sum() for o in out.values()).backward()
    for name, p in model.named_parameters():  # no dead parameters in any ablation
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


# ------------------------------------------------------------------ layers


def test_unitary_operator_is_norm_preserving_exp_iA():
    torch.manual_seed(0)
    mask = torch.tensor([[True] * 4, [True, False, True, True], [False, False, True, False], [True, True, False, False]])
    adj = modality_adjacency(mask)
    op = unitary_propagator(adj, order=10)  # [B, 2N, 2N]
    x = torch.randn(4, 4, 32)
    y = UnitaryGraphConv.propagate(x, op)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), atol=1e-5, rtol=1e-5)
    # the realified operator is orthogonal ...
    eye = torch.eye(8).expand(4, 8, 8)
    torch.testing.assert_close(op.transpose(1, 2) @ op, eye, atol=1e-6, rtol=0)
    # ... and is exactly exp(i A_hat) acting on (real || imaginary) halves
    u = torch.linalg.matrix_exp(1j * normalized_adjacency(adj).to(torch.complex128))
    xc = torch.complex(x[..., :16], x[..., 16:]).to(torch.complex128)
    yc = u @ xc
    torch.testing.assert_close(y, torch.cat([yc.real, yc.imag], -1).float(), atol=1e-5, rtol=1e-5)
    # a missing node is isolated: it neither sends to nor receives from present nodes
    assert not adj[1, 1, [0, 2, 3]].any() and not adj[1, [0, 2, 3], 1].any()


def test_unitary_layer_shares_its_operator():
    layer = UnitaryGraphConv(16, dropout=0.0).eval()
    x = torch.randn(2, 3, 16)
    adj = modality_adjacency(torch.tensor([[True, True, False], [True, True, True]]))
    torch.testing.assert_close(layer(x, adj), layer(x, adj, layer.precompute(adj)))
    assert count_parameters(layer) == 16 * 16 + 2 * 16


@pytest.mark.parametrize("graph,self_loops", [("unitary", None), ("unitary", True), ("hgnn", None)])
def test_tabulated_operators_equal_the_per_batch_ones(graph, self_loops):
    """An operator that depends on the adjacency alone is looked up per presence pattern;
    the table holds what the layer computes, and the model predicts the same with or without it."""
    model = small_model(graph=graph, graph_self_loops=self_loops).eval()
    patterns = torch.tensor([[bool(code >> (3 - i) & 1) for i in range(4)] for code in range(1, 16)])  # every non-empty one
    mask = torch.cat([patterns, patterns.flip(0)])
    looked_up = model.operator_table[mask.long().unbind(1)]
    torch.testing.assert_close(looked_up, model.shared_graph.precompute(modality_adjacency(mask)))
    feats, _ = random_batch(SMALL_DIMS, len(mask))
    tabulated = model(feats, mask)
    model.operator_table = None  # the per-batch computation
    for task, out in model(feats, mask).items():
        torch.testing.assert_close(tabulated[task], out)
    assert "operator_table" not in small_model(graph=graph).state_dict()  # rebuilt, never saved
    assert small_model(graph="gat").operator_table is None  # its precompute is not adjacency-only


def test_unitary_self_loop_switch_by_hand():
    # Two present nodes, one missing. Without self-loops (the default) A_hat = [[0, 1], [1, 0]]
    # on the present pair, so A_hat^2 = I and exp(i A_hat) = cos(1) I + i sin(1) A_hat. With
    # self-loops A_hat = P = [[1/2, 1/2], [1/2, 1/2]], P^2 = P: exp(i P) = I + (e^i - 1) P.
    # The missing node: without loops it has no edge (zero row), so exp(0) leaves it as it is;
    # with its self-loop alone it is rotated by e^i.
    adj = modality_adjacency(torch.tensor([[True, True, False]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.3, 0.4]]])  # channel 0 real, 1 imaginary
    c, s = math.cos(1.0), math.sin(1.0)
    expected = {
        False: [[c, 0.0], [0.0, s], [0.3, 0.4]],
        True: [[1 + (c - 1) / 2, s / 2], [(c - 1) / 2, s / 2], [0.3 * c - 0.4 * s, 0.3 * s + 0.4 * c]],
    }
    for loops, values in expected.items():
        layer = UnitaryGraphConv(2, self_loops=loops)
        propagated = layer.propagate(x, layer.precompute(adj))
        torch.testing.assert_close(propagated, torch.tensor([values]), atol=1e-6, rtol=0)
        with torch.no_grad():  # the layer: ReLU(exp(i A_hat) (W x + b) + c) with W = I, b = c = 0
            layer.lin.weight.copy_(torch.eye(2))
            layer.lin.bias.zero_()
        torch.testing.assert_close(layer.eval()(x, adj), propagated.relu(), atol=1e-6, rtol=0)
    assert UnitaryGraphConv(2).self_loops is False


def test_unitary_without_self_loops_matches_gcn_norm():
    from torch_geometric.utils import dense_to_sparse, to_dense_adj
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    mask = torch.tensor([[True, True, False, True]])
    adj = modality_adjacency(mask) & ~torch.eye(4, dtype=torch.bool)
    edge_index, _ = dense_to_sparse(adj[0].long())
    edge_index, weight = gcn_norm(edge_index, num_nodes=4, add_self_loops=False)
    reference = to_dense_adj(edge_index, edge_attr=weight, max_num_nodes=4)
    torch.testing.assert_close(normalized_adjacency(adj), reference)
    op = UnitaryGraphConv(2).precompute(modality_adjacency(mask))
    torch.testing.assert_close(op, unitary_propagator(adj))


def test_graph_self_loops_config_changes_the_operator_not_the_parameters():
    feats, mask = random_batch(SMALL_DIMS, 6, seed=3)
    outputs, sizes = [], []
    for loops in (None, False, True):
        cfg = ModelConfig(**SMALL, graph="unitary", graph_self_loops=loops)
        torch.manual_seed(0)
        model = MCDM.from_config(cfg, SMALL_DIMS, TASK_NAMES).eval()
        outputs.append(model(feats, mask)["emo"])
        sizes.append(count_parameters(model))
    torch.testing.assert_close(outputs[0], outputs[1])  # None = the unitary layer's default, no loops
    assert not torch.allclose(outputs[1], outputs[2], atol=1e-4)
    assert len(set(sizes)) == 1
    with pytest.raises(ValueError, match="graph_self_loops: graph layer 'gat' has no self-loop switch"):
        ModelConfig(graph="gat", graph_self_loops=True)


# ------------------------------------------------------------------ masking, determinism


@pytest.mark.parametrize("name", NAMED + ["w/o attention"])
def test_masked_modality_features_change_no_output(name):
    kw = named_model(name) if name in NAMED else {"attention": "none"}
    torch.manual_seed(0)
    model = small_model(**kw).eval()
    feats, mask = random_batch(SMALL_DIMS, 8, seed=1)
    assert (~mask).any()
    base = model(feats, mask)
    altered = {m: x.clone() for m, x in feats.items()}
    for i, m in enumerate(SMALL_DIMS):
        altered[m][~mask[:, i]] = torch.randn(int((~mask[:, i]).sum()), SMALL_DIMS[m]) * 100
    nans = {m: x.masked_fill(~mask[:, i, None], float("nan")) for i, (m, x) in enumerate(feats.items())}
    for variant in (altered, nans):
        out = model(variant, mask)
        for t in TASK_NAMES:
            torch.testing.assert_close(out[t], base[t], atol=1e-6, rtol=1e-6)


def test_nan_in_missing_rows_never_reaches_gradients():
    torch.manual_seed(0)
    model = small_model(attention="mta").train()
    feats, mask = random_batch(SMALL_DIMS, 8, seed=2)
    feats = {m: x.masked_fill(~mask[:, i, None], float("nan")).requires_grad_()
             for i, (m, x) in enumerate(feats.items())}
    out = model(feats, mask)
    sum(o.sum() for o in out.values()).backward()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()
    for i, (m, x) in enumerate(feats.items()):
        assert torch.isfinite(x.grad).all() and (x.grad[~mask[:, i]] == 0).all()


def test_all_modalities_missing_is_an_error_naming_the_sample():
    model = small_model()
    feats, _ = random_batch(SMALL_DIMS, 4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(ValueError, match=r"\[2\]"):
        model(feats, mask)


def test_same_seed_same_outputs():
    feats, mask = random_batch(SMALL_DIMS, 4)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = small_model(attention="mta").train()  # dropout active: same seed, same masks
        outs.append(model(feats, mask))
    for t in TASK_NAMES:
        torch.testing.assert_close(outs[0][t], outs[1][t], atol=0, rtol=0)
    torch.manual_seed(124)
    other = small_model(attention="mta").train()(feats, mask)
    assert not torch.equal(other["emo"], outs[0]["emo"])


def test_reset_parameters_is_deterministic():
    assert_reset_is_deterministic(small_model(**named_model("MCDM-3")), seed=5)


# ------------------------------------------------------------------ shared parameters


def test_shared_parameters_are_projectors_and_shared_graph():
    model = small_model()
    shared = {id(p) for p in model.shared_parameters()}
    expected = {id(p) for p in model.modality_projectors.parameters()} | {id(p) for p in model.shared_graph.parameters()}
    assert shared == expected and shared
    per_task = [{id(p) for p in model.task_parameters(t)} for t in TASK_NAMES]
    everything = {id(p) for p in model.parameters()}
    assert set.union(shared, *per_task) == everything
    assert sum(len(s) for s in per_task) + len(shared) == len(everything)  # a partition
    no_graph = small_model(graph="none")
    assert {id(p) for p in no_graph.shared_parameters()} == {id(p) for p in no_graph.modality_projectors.parameters()}


# ------------------------------------------------------------------ Table 17


TABLE_17 = [  # (label, overrides, dropped modality, dropped task, M params, MB)
    ("SCD-MMPSR", {}, None, None, 9.756, 37.2),
    ("w/o Task-Specific Projectors", {"task_projectors": False}, None, None, 8.159, 31.1),
    ("w/o Graph Layers", {"graph": "none"}, None, None, 8.703, 33.2),
    ("w/o Attention Layers", {"attention": "none"}, None, None, 6.604, 25.2),
    ("w/o Guide Bank Layers", {"guide_banks": False}, None, None, 9.749, 37.2),
    ("w/o Video Modality", {}, "video", None, 8.967, 34.2),
    ("w/o Audio Modality", {}, "audio", None, 8.705, 33.2),
    ("w/o Text Modality", {}, "text", None, 8.705, 33.2),
    ("w/o Behavior Modality", {}, "behavior", None, 8.705, 33.2),
    ("w/o ER task", {}, None, "emo", 7.901, 30.1),
    ("w/o PTR task", {}, None, "pt", 7.905, 30.1),
    ("w/o AHR task", {}, None, "ah", 7.911, 30.2),
]


@pytest.mark.parametrize("row", TABLE_17, ids=[r[0] for r in TABLE_17])
def test_parameter_count_matches_table_17(row):
    label, kw, drop_m, drop_t, params_m, mb = row
    dims = {m: d for m, d in PAPER_FEATURE_DIMS.items() if m != drop_m}
    tasks = [t for t in TASK_NAMES if t != drop_t]
    cfg = ModelConfig(**kw)  # hidden 512, out_features 512, 8 heads, MCDM-2
    with torch.device("meta"):
        model = MCDM.from_config(cfg, dims, tasks)
    assert round(count_parameters(model) / 1e6, 3) == params_m
    # MB = float32 bytes / 2**20; the paper prints 30.1 for 30.154 (w/o PTR), hence 0.06
    assert abs(size_mb(model) - mb) <= 0.06


def test_cli_describes_the_paper_configuration(capsys):
    assert cli_main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    params = int(next(l for l in lines if l.startswith("parameters: ")).split(": ")[1])
    mb = float(next(l for l in lines if l.startswith("size_mb: ")).split(": ")[1])
    assert params == 9_755_932 and math.isclose(mb, 37.216, abs_tol=1e-3)

    assert cli_main(["model.graph=gat", "data.modalities=[video,text]", "data.tasks=[emo]"]) == 0
    out = capsys.readouterr().out
    assert "graph=gat" in out and "modalities: video=1024, text=1536" in out
    assert cli_main(["model.graph=nope"]) == 2
    assert "model.graph" in capsys.readouterr().err
    # Counted on the meta device: a model of 23 trillion parameters is described, not allocated.
    assert cli_main(["model.hidden_dim=1000000"]) == 0
    assert "parameters: 23007261508732" in capsys.readouterr().out
    assert cli_main(["model.hidden_dim=1000000000"]) == 2
    assert "more elements than torch can count" in capsys.readouterr().err
