"""MCDM and its layer variants (paper section 2.3)."""

from scd_core.registry import Registry

GRAPH_LAYERS: Registry = Registry("graph layer")
ATTENTION_LAYERS: Registry = Registry("attention layer")
