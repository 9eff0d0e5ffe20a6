"""PyG message-passing layers as graph layers: ``model.graph=pyg:<Name>`` (issue 14, item 7)."""

from __future__ import annotations

import copy

import pytest
import torch
from layer_checks import assert_reset_is_deterministic

from scd_core.checkpoint import ModelSpec, build_model, load_model, save_checkpoint
from scd_core.config import ConfigError, load_config, with_overrides
from scd_core.model import GRAPH_LAYERS, MCDM, GATLayer, modality_adjacency, normalized_adjacency
from scd_core.model.pyg_graph import PyGGraphLayer, pyg_layer, pyg_layer_names
from scd_core.tasks import TASK_NAMES
from tuning.spaces import SpaceError, load_space

H = 16
SMALL_DIMS = {"video": 12, "audio": 10, "text": 8, "behavior": 6}
SMALL = {"hidden_dim": H, "out_features": 8, "num_heads": 4, "dropout": 0.1}
MASK = torch.tensor([
    [True, True, True, True],
    [True, False, True, True],
    [False, False, True, False],  # a single present node
])


def random_batch(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(batch, d, generator=g) for m, d in SMALL_DIMS.items()}
    mask = torch.rand(batch, len(SMALL_DIMS), generator=g) > 0.35
    mask[:, 0] |= ~mask.any(1)
    assert (~mask).any()
    return feats, mask


def pyg_keys(dense_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A dense ``gat`` model's state dict under the names of the same model with ``pyg:GATConv``
    (one head): ``lin.weight`` -> ``conv.lin.weight``, ``att = [a_dst || a_src]`` ->
    ``conv.att_dst``/``conv.att_src`` ``[1, 1, H]``, ``bias`` -> ``conv.bias``."""
    graphs = ("shared_graph.", "task_graphs.")
    out = {}
    for key, value in dense_state.items():
        if not key.startswith(graphs):
            out[key] = value
            continue
        prefix, _, name = key.rpartition(".")
        if name == "att":
            a_dst, a_src = value.chunk(2)
            out[f"{prefix}.conv.att_dst"], out[f"{prefix}.conv.att_src"] = a_dst.view(1, 1, -1), a_src.view(1, 1, -1)
        elif name == "weight":  # prefix ends in ".lin"
            out[f"{prefix.removesuffix('.lin')}.conv.lin.weight"] = value
        else:
            out[f"{prefix}.conv.{name}"] = value
    return out


# ------------------------------------------------------------------ where PyG and the dense layers coincide


@pytest.mark.parametrize("with_mask", [False, True])
def test_dense_gat_equals_wrapped_pyg_gatconv(with_mask):
    """One head: the dense GAT (Eq. 4-5) and PyG's GATConv over the batched edge_index agree
    on every node, missing ones included (both keep only their self-loop)."""
    torch.manual_seed(0)
    dense = GATLayer(H).eval()
    with torch.no_grad():  # non-trivial attention vectors and bias
        dense.att.normal_()
        dense.bias.normal_()
    wrapped = GRAPH_LAYERS.get("pyg:GATConv")(H, num_heads=1).eval()
    state = {k.removeprefix("shared_graph."): v
             for k, v in pyg_keys({f"shared_graph.{k}": v for k, v in dense.state_dict().items()}).items()}
    wrapped.load_state_dict(state, strict=True)
    mask = MASK if with_mask else torch.ones_like(MASK)
    adj = modality_adjacency(mask)
    x = torch.randn(3, 4, H)
    torch.testing.assert_close(wrapped(x, adj), dense(x, adj), atol=1e-5, rtol=1e-5)
    # the precomputed edge_index (what MCDM shares between its layers) gives the same; it is
    # each sample's complete graph over its present modalities plus every node's self-loop
    edge_index = wrapped.precompute(adj)
    torch.testing.assert_close(wrapped(x, adj, edge_index), dense(x, adj), atol=1e-5, rtol=1e-5)
    expected = {(b * 4 + j, b * 4 + i) for b in range(3) for i in range(4) for j in range(4)
                if i == j or (mask[b, i] and mask[b, j])}
    assert set(map(tuple, edge_index.T.tolist())) == expected and edge_index.size(1) == len(expected)


def test_mcdm_with_dense_gat_equals_mcdm_with_pyg_gatconv():
    feats, mask = random_batch(8, seed=2)
    kw = {**SMALL, "num_heads": 1}
    torch.manual_seed(0)
    dense = MCDM(SMALL_DIMS, TASK_NAMES, graph="gat", **kw).eval()
    with torch.no_grad():
        for name, p in dense.named_parameters():
            if "graph" in name:
                p.normal_(0, 0.3)
    wrapped = MCDM(SMALL_DIMS, TASK_NAMES, graph="pyg:GATConv", **kw).eval()
    wrapped.load_state_dict(pyg_keys(dense.state_dict()), strict=True)
    expected, got = dense(feats, mask), wrapped(feats, mask)
    for t in TASK_NAMES:
        torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("self_loops", [True, False])
def test_pyg_gcnconv_is_the_normalised_dense_adjacency(self_loops):
    """GCNConv over the modality graph is ``A_hat (x W^T) + b`` with the dense layers'
    ``normalized_adjacency``; ``self_loops=False`` drops the diagonal for both (a missing or
    single node is then isolated: its output is the bias)."""
    torch.manual_seed(0)
    layer = GRAPH_LAYERS.get("pyg:GCNConv")(H, self_loops=self_loops).eval()
    with torch.no_grad():
        layer.conv.bias.normal_()
    adj = modality_adjacency(MASK)
    if not self_loops:
        adj = adj & ~torch.eye(4, dtype=torch.bool)
    x = torch.randn(3, 4, H)
    expected = normalized_adjacency(adj) @ (x @ layer.conv.lin.weight.T) + layer.conv.bias
    torch.testing.assert_close(layer(x, modality_adjacency(MASK)), expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ the family and the common contract


def test_every_listed_pyg_layer_keeps_the_graph_layer_contract():
    names = pyg_layer_names()
    assert {"GATConv", "GATv2Conv", "TransformerConv", "GCNConv", "SAGEConv"} <= set(names)
    adj = modality_adjacency(MASK)
    x = torch.randn(3, 4, H)
    altered = x.clone()
    altered[~MASK] = 100.0  # the missing nodes' features reach no present node
    for name in names:
        torch.manual_seed(0)
        layer = GRAPH_LAYERS.get(f"pyg:{name}")(H, num_heads=4, dropout=0.1).eval()
        assert isinstance(layer, PyGGraphLayer) and isinstance(layer, GRAPH_LAYERS.get(f"pyg:{name}"))
        out = layer(x, adj)
        assert out.shape == (3, 4, H) and torch.isfinite(out).all(), name
        torch.testing.assert_close(layer(altered, adj)[MASK], out[MASK], msg=name)


def test_heads_are_concatenated_to_hidden_dim():
    for name in ("GATConv", "GATv2Conv", "TransformerConv"):
        conv = GRAPH_LAYERS.get(f"pyg:{name}")(H, num_heads=4, dropout=0.25).conv
        assert (conv.heads, conv.out_channels, conv.concat, conv.dropout) == (4, H // 4, True, 0.25), name
    with pytest.raises(ValueError, match=r"GATConv: hidden_dim \(16\) must be divisible by num_heads \(3\)"):
        GRAPH_LAYERS.get("pyg:GATConv")(H, num_heads=3)


def test_resolving_a_name_is_cached_and_leaves_the_global_rng_alone():
    pyg_layer.cache_clear()
    torch.manual_seed(7)
    state = torch.get_rng_state()
    layer = GRAPH_LAYERS.get("pyg:GATv2Conv")  # builds and runs a probe layer
    assert torch.equal(torch.get_rng_state(), state)
    assert GRAPH_LAYERS.get("pyg:GATv2Conv") is layer and "pyg:GATv2Conv" in GRAPH_LAYERS


@pytest.mark.parametrize("name, reason", [
    ("pyg:Nope", "torch_geometric.nn has no MessagePassing class 'Nope'"),
    ("pyg:NNConv", r"NNConv cannot be a graph layer: its constructor needs \['in_channels', 'out_channels', 'nn'\]"),
    ("pyg:MixHopConv", r"MixHopConv cannot be a graph layer: it maps \[15, 8\] node features to \[15, 24\]"),
    ("pyg:HypergraphConv", r"its forward takes \['x', 'hyperedge_index'\], not \(x, edge_index\)"),
])
def test_an_unsuitable_pyg_name_is_a_config_error_listing_the_choices(name, reason):
    with pytest.raises(ConfigError, match=rf"model\.graph.*unknown graph layer '{name}': .*{reason}") as err:
        load_config(None, [f"model.graph={name}"])
    assert "'pyg:GATv2Conv'" in str(err.value) and "'pyg:TransformerConv'" in str(err.value)
    assert name not in GRAPH_LAYERS


def test_an_unknown_plain_name_points_at_the_family():
    with pytest.raises(ConfigError, match=r"unknown graph layer 'gatv2'; choose one of \[.*'gat'.*\] or pyg:<name>"):
        load_config(None, ["model.graph=gatv2"])


# ------------------------------------------------------------------ config, search space, training, checkpoint


def test_config_takes_a_pyg_layer_and_its_self_loop_switch():
    cfg = load_config(None, ["model.graph=pyg:GATv2Conv", "model.graph_self_loops=false"])
    assert cfg.model.graph == "pyg:GATv2Conv" and cfg.model.graph_self_loops is False
    model = MCDM.from_config(cfg.model, SMALL_DIMS, TASK_NAMES)
    assert model.shared_graph.self_loops is False and type(model.shared_graph.conv).__name__ == "GATv2Conv"


def test_a_search_space_can_name_pyg_layers(tmp_path):
    path = tmp_path / "pyg.yaml"
    path.write_text("strategy: oat\n"
                    "baseline: {model.graph: gat}\n"
                    "parameters:\n  model.graph: [gat, 'pyg:GATv2Conv', 'pyg:TransformerConv']\n")
    space = load_space(path)
    trials = space.oat_variants()
    assert list(trials) == ["baseline", "model.graph=pyg:GATv2Conv", "model.graph=pyg:TransformerConv"]
    graphs = [with_overrides(load_config(), space.resolve({"variant": v}, "oat")).model.graph for v in trials]
    assert graphs == ["gat", "pyg:GATv2Conv", "pyg:TransformerConv"]
    path.write_text("strategy: oat\nbaseline: {model.graph: gat}\nparameters:\n  model.graph: [gat, 'pyg:Nope']\n")
    with pytest.raises(SpaceError, match=r"pyg\.yaml: .*model\.graph.*'pyg:Nope'"):
        load_space(path)


@pytest.mark.parametrize("graph", ["pyg:TransformerConv", "pyg:GCNConv"])
def test_mcdm_trains_a_step_with_a_pyg_graph(graph):
    torch.manual_seed(0)
    model = MCDM(SMALL_DIMS, TASK_NAMES, graph=graph, **SMALL).train()
    feats, mask = random_batch(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.shared_graph.state_dict().items()}
    loss = sum(o.square().mean() for o in model(feats, mask).values())
    loss.backward()
    for name, p in model.named_parameters():  # every graph layer (shared and per task) is used
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in model.shared_graph.state_dict().items())
    # missing modalities change no output
    model.eval()
    altered = {m: x.clone() for m, x in feats.items()}
    for i, m in enumerate(SMALL_DIMS):
        altered[m][~mask[:, i]] = 1e3
    base, other = model(feats, mask), model(altered, mask)
    for t in TASK_NAMES:
        torch.testing.assert_close(other[t], base[t])
    assert_reset_is_deterministic(model, seed=3)


def test_checkpoint_of_a_pyg_graph_model_round_trips(tmp_path):
    cfg = load_config(None, ["model.graph=pyg:GATv2Conv", "model.hidden_dim=16", "model.out_features=8",
                             "model.num_heads=4"])
    spec = ModelSpec(cfg, dict(SMALL_DIMS), list(TASK_NAMES))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    save_checkpoint(tmp_path / "ckpt", model, spec)
    torch.manual_seed(1)  # a different initialisation: the weights must come from the file
    loaded, loaded_spec = load_model(tmp_path / "ckpt")
    assert loaded_spec.config.model.graph == "pyg:GATv2Conv"
    feats, mask = random_batch(6)
    expected = model(feats, mask)
    for out in (loaded.eval()(feats, mask), copy.deepcopy(loaded)(feats, mask)):  # deepcopy: the EMA teacher
        for t in TASK_NAMES:
            torch.testing.assert_close(out[t], expected[t], atol=0, rtol=0)
