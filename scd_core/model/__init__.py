"""MCDM and its layer variants (paper section 2.3).

``GRAPH_LAYERS`` and ``ATTENTION_LAYERS`` map config names to layer classes; importing
this package registers every layer (graph: ``none``, ``gat``, ``unitary``, ``ncgnn``,
``edgnn``, ``hgnn``; attention: ``none``, ``mha``, ``mta``, ``crossmpt``, ``bica``,
``fa``). Add a variant with ``@GRAPH_LAYERS.register("name")`` on a class with the
common constructor ``(hidden_dim, *, num_heads, dropout)`` (see ``scd_core.model.graph``
/ ``scd_core.model.attention``) and import its module below.
"""

from scd_core.registry import Registry

GRAPH_LAYERS: Registry = Registry("graph layer")
ATTENTION_LAYERS: Registry = Registry("attention layer")

# The layer modules register themselves into the registries above, so they are imported
# after the registries exist.
from scd_core.model import attention as attention  # noqa: E402
from scd_core.model import attention_variants as attention_variants  # noqa: E402
from scd_core.model import graph as graph  # noqa: E402
from scd_core.model import graph_variants as graph_variants  # noqa: E402
from scd_core.model.attention import MultiHeadAttention, MultiTokenAttention, ResidualSum  # noqa: E402
from scd_core.model.blocks import Adapter, GuideBank, ModalityProjector, TaskHead, TaskProjector  # noqa: E402
from scd_core.model.graph import (  # noqa: E402
    GATLayer,
    IdentityGraph,
    UnitaryGraphConv,
    modality_adjacency,
    normalized_adjacency,
    unitary_propagator,
)
from scd_core.model.mcdm import (  # noqa: E402
    MCDM,
    NAMED_MODELS,
    SharedState,
    count_parameters,
    model_name,
    named_model,
    size_mb,
)

__all__ = [
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
