"""Feature-store splits as tensors on the training device, with label and modality masks.

Training loads every split once; batches are index slices (DESIGN.md "Feature store").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from scd_core.features.schema import FeatureStoreError, Manifest
from scd_core.features.store import SplitArrays, read_split
from scd_core.tasks import TASK_NAMES, TASKS


@dataclass
class CorpusTensors:
    """Rows of one or more splits, all tensors on one device.

    Shapes (N rows, M modalities in ``modalities`` order):
        features[m]: float32 [N, d_m], zeros where the modality is missing
        modality_mask: bool [N, M], True where present
        labels["emo"]: float32 [N, 7]; labels["pt"]: float32 [N, 5]; labels["ah"]: int64 [N]
        label_mask[t]: bool [N], True where the row carries a task-t label
        corpus_index: int64 [N], index into ``corpora``
    Label values under a False mask are zeros, never used.
    """

    modalities: tuple[str, ...]
    corpora: tuple[str, ...]
    sample_ids: np.ndarray
    features: dict[str, Tensor]
    modality_mask: Tensor
    labels: dict[str, Tensor]
    label_mask: dict[str, Tensor]
    corpus_index: Tensor

    def __len__(self) -> int:
        return len(self.corpus_index)

    @property
    def device(self) -> torch.device:
        return self.modality_mask.device

    def _map(self, fn) -> "CorpusTensors":
        return replace(
            self,
            features={k: fn(v) for k, v in self.features.items()},
            modality_mask=fn(self.modality_mask),
            labels={k: fn(v) for k, v in self.labels.items()},
            label_mask={k: fn(v) for k, v in self.label_mask.items()},
            corpus_index=fn(self.corpus_index),
        )

    def to(self, device: str | torch.device) -> "CorpusTensors":
        return self._map(lambda t: t.to(device))

    def index(self, idx: Tensor, with_ids: bool = True) -> "CorpusTensors":
        """Rows ``idx`` (a LongTensor on the same device): the batching primitive.

        ``with_ids=False`` leaves ``sample_ids`` empty: picking them needs the indices on the
        host, a device synchronisation that a training step does not need.
        """
        out = self._map(lambda t: t.index_select(0, idx))
        out.sample_ids = self.sample_ids[idx.cpu().numpy()] if with_ids else np.array([], dtype=object)
        return out


def to_tensors(
    arrays: SplitArrays, modalities: Sequence[str], device: str | torch.device = "cpu"
) -> CorpusTensors:
    """Convert one validated split; ``modalities`` selects and orders the model's nodes."""
    missing = [m for m in modalities if m not in arrays.features]
    if missing:
        raise FeatureStoreError(f"{arrays.corpus}/{arrays.split}: store has no modality {missing}")
    n = len(arrays)
    labels, label_mask = {}, {}
    for task in TASK_NAMES:
        values = np.stack([arrays.labels[c] for c in TASKS[task].label_columns], axis=1)
        mask = ~np.isnan(values).any(axis=1)
        values = np.nan_to_num(values, nan=0.0)
        labels[task] = torch.from_numpy(
            values[:, 0].astype(np.int64) if task == "ah" else values.astype(np.float32)
        )
        label_mask[task] = torch.from_numpy(mask)
    out = CorpusTensors(
        modalities=tuple(modalities),
        corpora=(arrays.corpus,),
        sample_ids=arrays.sample_ids,
        features={m: torch.from_numpy(arrays.features[m]) for m in modalities},
        modality_mask=torch.from_numpy(np.stack([arrays.present[m] for m in modalities], axis=1)),
        labels=labels,
        label_mask=label_mask,
        corpus_index=torch.zeros(n, dtype=torch.int64),
    )
    return out.to(device)


def concat(parts: Sequence[CorpusTensors]) -> CorpusTensors:
    """Stack rows of several corpora (same modalities); ``corpus_index`` tells them apart."""
    if not parts:
        raise ValueError("nothing to concatenate")
    modalities = parts[0].modalities
    if any(p.modalities != modalities for p in parts):
        raise ValueError("all parts must have the same modalities")
    corpora = tuple(dict.fromkeys(c for p in parts for c in p.corpora))
    remapped = [
        torch.tensor([corpora.index(c) for c in p.corpora], device=p.device)[p.corpus_index] for p in parts
    ]
    cat = lambda get: torch.cat([get(p) for p in parts])  # noqa: E731
    return CorpusTensors(
        modalities=modalities,
        corpora=corpora,
        sample_ids=np.concatenate([p.sample_ids for p in parts]),
        features={m: cat(lambda p: p.features[m]) for m in modalities},
        modality_mask=cat(lambda p: p.modality_mask),
        labels={t: cat(lambda p: p.labels[t]) for t in TASK_NAMES},
        label_mask={t: cat(lambda p: p.label_mask[t]) for t in TASK_NAMES},
        corpus_index=torch.cat(remapped),
    )


def load_split(
    root: str | Path,
    corpus: str,
    split: str,
    modalities: Sequence[str],
    device: str | torch.device = "cpu",
    manifest: Manifest | None = None,
) -> CorpusTensors:
    """Read, validate and move one split to ``device``."""
    return to_tensors(read_split(root, corpus, split, manifest), modalities, device)
