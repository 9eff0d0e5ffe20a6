"""The Parquet feature store: schema, writer, validating reader, tensors.

Command line: ``python -m scd_core.features validate ROOT`` and ``... summary ROOT``.
"""

from scd_core.features.schema import (
    SCHEMA_VERSION,
    FeatureStoreError,
    Manifest,
    ModalityInfo,
    split_path,
)
from scd_core.features.store import FeatureStoreWriter, SplitArrays, read_split, validate_store
from scd_core.features.tensors import CorpusTensors, concat, load_split, to_tensors

__all__ = [
    "SCHEMA_VERSION",
    "CorpusTensors",
    "FeatureStoreError",
    "FeatureStoreWriter",
    "Manifest",
    "ModalityInfo",
    "SplitArrays",
    "concat",
    "load_split",
    "read_split",
    "split_path",
    "to_tensors",
    "validate_store",
]
