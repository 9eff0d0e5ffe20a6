"""Any PyG message-passing layer as the graph layer over the modality nodes: ``pyg:<Name>``.

``model.graph=pyg:GATv2Conv`` (or ``pyg:TransformerConv``, ``pyg:GCNConv``, ``pyg:GATConv``,
...) wraps the class of that name in ``torch_geometric.nn`` with the common API of
:mod:`scd_core.model.graph`, so PyG's zoo can be tried as the fusion graph (GAF) from a
config or a search space. ``GRAPH_LAYERS.get("pyg:<Name>")`` returns a subclass of
:class:`PyGGraphLayer` made for that class (one per name, cached);
:func:`pyg_layer_names` lists the names that work.

Which classes: a ``MessagePassing`` subclass exported by ``torch_geometric.nn`` whose
constructor needs nothing but ``(in_channels, out_channels)`` or ``(channels)``, whose
``forward`` starts ``(x, edge_index)``, and which maps ``[B*N, H]`` to ``[B*N, H]`` on a
small modality graph (probed once per class, under a forked RNG so that validating a config
never moves the global seed). Classes that need more (``NNConv``'s network, ``RGCNConv``'s
relations) or give another width (``MixHopConv`` concatenates its powers) are rejected with
the reason, when the config is validated.

PyG itself is imported on first use of a ``pyg:`` name, not with this module: its import
costs about 3 s, which every entry point would otherwise pay.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from scd_core.model.graph import GraphLayer, modality_adjacency
from scd_core.model.registries import GRAPH_LAYERS

__all__ = ["PREFIX", "PyGGraphLayer", "conv_arguments", "pyg_layer", "pyg_layer_names"]

PREFIX = "pyg"


def conv_arguments(conv_class: type, hidden_dim: int, num_heads: int, dropout: float) -> tuple[tuple, dict]:
    """Constructor arguments that make ``conv_class`` map ``hidden_dim`` to ``hidden_dim``.

    - ``heads`` (attention layers): ``num_heads``; with ``concat`` too (``GATConv``,
      ``GATv2Conv``, ``TransformerConv``), ``hidden_dim / num_heads`` channels per head,
      concatenated. A layer without ``concat`` (``FeaStConv``, ``GeneralConv``) gets
      ``hidden_dim`` out channels and combines its heads itself.
    - ``dropout``: the model's, where the layer takes one (PyG's attention layers drop
      attention coefficients, as the dense ``gat``); other layers get no dropout.
    - ``add_self_loops=False``: the self-loops come from the modality graph
      (:meth:`PyGGraphLayer.precompute`), so that ``self_loops`` decides for every layer.

    Returns ``(args, kwargs)`` for ``conv_class(*args, **kwargs)``.
    """
    params = inspect.signature(conv_class).parameters
    kwargs: dict = {}
    out_channels = hidden_dim
    if "heads" in params:
        kwargs["heads"] = num_heads
        if "concat" in params:
            if hidden_dim % num_heads:
                raise ValueError(f"{conv_class.__name__}: hidden_dim ({hidden_dim}) must be divisible by "
                                 f"num_heads ({num_heads}); its heads are concatenated")
            kwargs["concat"] = True
            out_channels = hidden_dim // num_heads
    if "dropout" in params:
        kwargs["dropout"] = dropout
    if "add_self_loops" in params:
        kwargs["add_self_loops"] = False
    args = (hidden_dim,) if "channels" in params else (hidden_dim, out_channels)
    return args, kwargs


class PyGGraphLayer(GraphLayer):
    """A ``torch_geometric.nn`` message-passing layer over the batch's modality graphs.

    The ``B`` graphs of a batch are one disjoint PyG graph of ``B*N`` nodes (node ``b*N + i``
    is modality ``i`` of sample ``b``); its edges are those of the dense adjacency, so a
    node receives messages from the present modalities of its own sample only. As for the
    dense layers, the adjacency carries the self-loops (Eq. 5) and ``self_loops=False``
    drops them (``model.graph_self_loops``); PyG's own ``add_self_loops`` is off.

    Missing modalities follow the dense layers' contract
    (:func:`~scd_core.model.graph.modality_adjacency`): such a node keeps only its
    self-loop, so it evolves alone, never reaches a present node, and its (finite) output is
    ignored by the model.

    Subclasses set ``conv_class``; get them with ``GRAPH_LAYERS.get("pyg:<Name>")``.

    Shapes: x ``[B, N, H]``, adj ``[B, N, N]`` bool, operator ``[2, E]`` long -> ``[B, N, H]``.
    """

    conv_class: type

    def __init__(self, hidden_dim: int, *, num_heads: int = 1, dropout: float = 0.0, self_loops: bool = True) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.self_loops = self_loops
        args, kwargs = conv_arguments(self.conv_class, hidden_dim, num_heads, dropout)
        self.conv = self.conv_class(*args, **kwargs)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def precompute(self, adj: Tensor) -> Tensor:
        """``[B, N, N]`` adjacency -> ``[2, E]`` PyG ``edge_index`` over ``B*N`` nodes (row 0
        the source ``j``, row 1 the target ``i`` of ``adj[b, i, j]``; sorted by target)."""
        if not self.self_loops:
            adj = adj & ~torch.eye(adj.size(-1), dtype=torch.bool, device=adj.device)
        b, i, j = adj.nonzero(as_tuple=True)
        n = adj.size(-1)
        return torch.stack([b * n + j, b * n + i])

    def forward(self, x: Tensor, adj: Tensor, operator: Tensor | None = None) -> Tensor:
        if operator is None:
            operator = self.precompute(adj)
        b, n, h = x.shape
        return self.conv(x.reshape(b * n, h), operator).reshape(b, n, -1)


@functools.cache
def _message_passing_classes() -> dict[str, type]:
    """Every ``MessagePassing`` subclass that ``torch_geometric.nn`` exports, by name."""
    import torch_geometric.nn as pyg_nn

    found = {name: getattr(pyg_nn, name) for name in dir(pyg_nn)}
    return {name: obj for name, obj in found.items()
            if isinstance(obj, type) and issubclass(obj, pyg_nn.MessagePassing) and obj is not pyg_nn.MessagePassing}


def _unsuitable(layer: type[PyGGraphLayer]) -> str | None:
    """Why ``layer`` cannot be a graph layer here, or None: its constructor, its forward, and
    one training step on three modality graphs of 5 nodes (all present; two missing; one
    present), so that a layer built for fixed degrees (``MeshCNNConv``) fails here."""
    conv_class = layer.conv_class
    params = inspect.signature(conv_class).parameters.values()
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required not in (["in_channels", "out_channels"], ["channels"]):
        return f"its constructor needs {required}, the wrapper gives only (in_channels, out_channels) or (channels)"
    forward = list(inspect.signature(conv_class.forward).parameters)[1:3]
    if forward != ["x", "edge_index"]:
        return f"its forward takes {forward}, not (x, edge_index)"
    hidden = 8
    mask = torch.tensor([[True] * 5, [True, True, False, True, False], [False, False, True, False, False]])
    b, n = mask.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            probe = layer(hidden, num_heads=2, dropout=0.1).train()
            out = probe(torch.randn(b, n, hidden), modality_adjacency(mask))
            out.sum().backward()
        except Exception as err:  # noqa: BLE001 - any failure of a foreign layer is a reason to reject it
            return f"it fails on the modality graph ({type(err).__name__}: {err})"
    if out.shape != (b, n, hidden) or not torch.isfinite(out).all():
        return (f"it maps [{b * n}, {hidden}] node features to {list(out.reshape(b * n, -1).shape)}, "
                f"not to finite [{b * n}, {hidden}]")
    return None


@functools.cache
def pyg_layer(name: str) -> type[PyGGraphLayer]:
    """The graph layer class for ``torch_geometric.nn.<name>`` (``"GATv2Conv"``).

    Raises ``LookupError`` saying why when ``name`` is not a suitable ``MessagePassing``
    class (the registry turns it into the config's error, with :func:`pyg_layer_names`).
    """
    conv_class = _message_passing_classes().get(name)
    if conv_class is None:
        raise LookupError(f"torch_geometric.nn has no MessagePassing class {name!r}")
    layer = type(f"PyG{name}", (PyGGraphLayer,), {
        "conv_class": conv_class,
        "__module__": __name__,
        "__doc__": f"``torch_geometric.nn.{name}`` over the modality graph (see :class:`PyGGraphLayer`).",
    })
    reason = _unsuitable(layer)
    if reason is not None:
        raise LookupError(f"torch_geometric.nn.{name} cannot be a graph layer: {reason}")
    return layer


@functools.cache
def pyg_layer_names() -> list[str]:
    """The ``torch_geometric.nn`` classes that :func:`pyg_layer` accepts (probes each once)."""
    names = []
    for name in sorted(_message_passing_classes()):
        try:
            pyg_layer(name)
        except LookupError:
            continue
        names.append(name)
    return names


GRAPH_LAYERS.register_family(PREFIX, pyg_layer, pyg_layer_names)
