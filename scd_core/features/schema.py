"""The feature-store contract (DESIGN.md "Feature store"): layout, columns, manifest.

``<root>/<corpus>/<split>.parquet`` plus ``<root>/manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scd_core.tasks import CORPORA, LABEL_COLUMNS, MODALITIES, feature_column

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "dev", "test")
ID_COLUMNS = ("sample_id", "corpus", "split")


class FeatureStoreError(ValueError):
    """A feature store violates the contract; the message names file, column and row."""


@dataclass(frozen=True)
class ModalityInfo:
    """How one modality's features were made; ``dim`` is the stored vector length."""

    encoder: str
    dim: int
    revision: str | None = None
    fingerprint: str | None = None
    frames: int | None = None
    sampling_rate: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """``manifest.json``: schema version, per-modality provenance, per-corpus row counts."""

    modalities: dict[str, ModalityInfo]
    corpora: dict[str, dict[str, int]] = field(default_factory=dict)  # corpus -> split -> rows
    schema_version: int = SCHEMA_VERSION
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def digest(self) -> str:
        """Stable hash of the manifest, used to tag runs with the data they saw."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def read(cls, root: Path) -> "Manifest":
        path = Path(root) / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise FeatureStoreError(f"{path}: missing (not a feature store?)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise FeatureStoreError(f"{path}: cannot read: {err}") from None
        except json.JSONDecodeError as err:
            raise FeatureStoreError(f"{path}: invalid JSON: {err}") from None
        if not isinstance(raw, dict):
            raise FeatureStoreError(f"{path}: must be a JSON object, got {type(raw).__name__}")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise FeatureStoreError(
                f"{path}: field schema_version: store has {version!r}, this code reads {SCHEMA_VERSION}"
            )
        modalities = {}
        for name, info in _mapping(raw, "modalities", path).items():
            if name not in MODALITIES:
                raise FeatureStoreError(
                    f"{path}: field modalities.{name}: unknown modality; known: {list(MODALITIES)}"
                )
            if not isinstance(info, dict):
                raise FeatureStoreError(f"{path}: field modalities.{name} must be an object, got {type(info).__name__}")
            try:
                modalities[name] = ModalityInfo(**info)
            except TypeError as err:
                raise FeatureStoreError(f"{path}: field modalities.{name}: {err}") from None
            dim = modalities[name].dim
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise FeatureStoreError(f"{path}: field modalities.{name}.dim must be a positive integer, got {dim!r}")
        corpora = _mapping(raw, "corpora", path)
        for corpus, splits in corpora.items():
            if corpus not in CORPORA:
                raise FeatureStoreError(f"{path}: field corpora.{corpus}: unknown corpus; known: {list(CORPORA)}")
            if not isinstance(splits, dict):
                raise FeatureStoreError(f"{path}: field corpora.{corpus} must map split names to row counts "
                                        f"(e.g. {{\"train\": 100}}), got {type(splits).__name__}")
            for split, rows in splits.items():
                if split not in SPLITS:
                    raise FeatureStoreError(f"{path}: field corpora.{corpus}.{split}: unknown split")
                if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                    raise FeatureStoreError(f"{path}: field corpora.{corpus}.{split} must be a row count, got {rows!r}")
        return cls(modalities=modalities, corpora=corpora, schema_version=version, source=raw.get("source", ""))


def _mapping(raw: dict[str, Any], field_name: str, path: Path) -> dict[str, Any]:
    """``raw[field_name]`` as a mapping (absent or null: empty); anything else names the field."""
    value = raw.get(field_name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FeatureStoreError(f"{path}: field {field_name} must be an object, got {type(value).__name__}")
    return value


def split_path(root: Path, corpus: str, split: str) -> Path:
    return Path(root) / corpus / f"{split}.parquet"


def feature_columns(modalities: dict[str, ModalityInfo]) -> list[str]:
    return [feature_column(m) for m in modalities]


def expected_columns(modalities: dict[str, ModalityInfo]) -> list[str]:
    return [*ID_COLUMNS, *feature_columns(modalities), *LABEL_COLUMNS]
