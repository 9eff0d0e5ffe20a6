"""MCDM and its layer variants (paper section 2.3).

``GRAPH_LAYERS`` and ``ATTENTION_LAYERS`` map config names to layer classes; importing
this package registers every layer (graph: ``none``, ``gat``, ``unitary``, ``ncgnn``,
``edgnn``, ``hgnn``, and ``pyg:<Name>`` for a ``torch_geometric.nn`` layer; attention:
``none``, ``mha``, ``mta``, ``crossmpt``, ``bica``, ``fa``); ``scd_core.model.registries``
says how to add one.
"""

# Importing the layer modules registers every layer.
from scd_core.model import attention, attention_variants, graph, graph_variants, pyg_graph
from scd_core.model.attention import MultiHeadAttention, MultiTokenAttention, ResidualSum
from scd_core.model.blocks import Adapter, GuideBank, ModalityProjector, TaskHead, TaskProjector
from scd_core.model.graph import (
    GATLayer,
    IdentityGraph,
    UnitaryGraphConv,
    modality_adjacency,
    normalized_adjacency,
    unitary_propagator,
)
from scd_core.model.mcdm import (
    MCDM,
    NAMED_MODELS,
    SharedState,
    count_parameters,
    model_name,
    named_model,
    size_mb,
)
from scd_core.model.registries import ATTENTION_LAYERS, GRAPH_LAYERS

__all__ = [
    "attention",
    "attention_variants",
    "graph",
    "graph_variants",
    "pyg_graph",
    "GRAPH_LAYERS",
    "ATTENTION_LAYERS",
    "MCDM",
    "SharedState",
    "NAMED_MODELS",
    "named_model",
    "model_name",
    "count_parameters",
    "size_mb",
    "Adapter",
    "ModalityProjector",
    "TaskProjector",
    "TaskHead",
    "GuideBank",
    "IdentityGraph",
    "GATLayer",
    "UnitaryGraphConv",
    "modality_adjacency",
    "normalized_adjacency",
    "unitary_propagator",
    "ResidualSum",
    "MultiHeadAttention",
    "MultiTokenAttention",
]
