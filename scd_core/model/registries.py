"""The layer registries, in a module of their own so that the layer modules can fill them
without importing the package that imports them.

``GRAPH_LAYERS`` and ``ATTENTION_LAYERS`` map config names to layer classes with the common
constructor ``(hidden_dim, *, num_heads, dropout)`` (see ``scd_core.model.graph`` /
``scd_core.model.attention``). Add a variant with ``@GRAPH_LAYERS.register("name")`` and
import its module in ``scd_core/model/__init__.py``. ``GRAPH_LAYERS`` also resolves the family
``pyg:<Name>`` (any suitable ``torch_geometric.nn`` layer, ``scd_core.model.pyg_graph``).
"""

from scd_core.registry import Registry

GRAPH_LAYERS: Registry = Registry("graph layer")
ATTENTION_LAYERS: Registry = Registry("attention layer")
