"""Reading a run's data from the feature store onto the training device.

``load_training_data`` reads what training needs (train and dev splits, checked against the
config); ``load_eval_splits`` reads one split for evaluation. The trainer, the sweep, the
report and the evaluate job share these, so none of them imports the trainer to read data.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scd_core.augment import without_modalities
from scd_core.config import DEVICE_PATTERN, ConfigError, ExperimentConfig
from scd_core.features import CorpusTensors, FeatureStoreError, Manifest, ModalityInfo, concat, load_split
from scd_core.tasks import CORPORA

__all__ = ["TrainingData", "load_eval_splits", "load_training_data", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda[:N]`` or ``mps``.

    Raises ConfigError, naming the device, for another name or a device this machine lacks,
    rather than letting the first tensor moved there fail deep inside torch."""
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: this machine has no CUDA device (torch {torch.__version__}, "
                              f"CUDA {torch.version.cuda or 'not built in'}); use device=auto or cpu")
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available on this machine; use device=auto or cpu")
    return device


@dataclass
class TrainingData:
    """Everything a run reads, loaded once onto the training device.

    ``train`` concatenates the training corpora (``corpus_index`` tells them apart);
    ``dev`` maps corpus -> its dev split, zero-shot corpora (MELD) included; ``dev_without``
    the training corpora's dev splits without ``data.select_without``'s modalities (empty when
    that is empty). Test splits are not read here: evaluation loads them
    (``load_eval_splits``) once training is done.
    """

    train: CorpusTensors
    dev: dict[str, CorpusTensors]
    modality_dims: dict[str, int]
    manifest_digest: str
    store_modalities: dict[str, ModalityInfo] | None = None  # the manifest's entries of the config's modalities
    dev_without: dict[str, CorpusTensors] = field(default_factory=dict)


def _drop_rows_without_modalities(data: CorpusTensors, where: str) -> CorpusTensors:
    """A modality ablation can leave a row with none of the chosen modalities: drop it, loudly."""
    keep = data.modality_mask.any(dim=1)
    if bool(keep.all()):
        return data
    warnings.warn(f"{where}: dropped {int((~keep).sum())} rows that have none of the modalities {data.modalities}")
    return data.index(torch.nonzero(keep).squeeze(1))


def _read_manifest(cfg: ExperimentConfig, root: str | Path) -> Manifest:
    manifest = Manifest.read(Path(root))
    absent = [m for m in cfg.data.modalities if m not in manifest.modalities]
    if absent:
        raise FeatureStoreError(f"{root}: the feature store has no modality {absent} (it has {sorted(manifest.modalities)})")
    return manifest


def _load(root: str | Path, corpus: str, split: str, cfg: ExperimentConfig, manifest: Manifest,
          device: torch.device) -> CorpusTensors:
    data = load_split(root, corpus, split, cfg.data.modalities, device, manifest)
    return _drop_rows_without_modalities(data, f"{corpus}/{split}")


def load_eval_splits(cfg: ExperimentConfig, root: str | Path, split: str, device: torch.device,
                     modality_dims: dict[str, int] | None = None) -> dict[str, CorpusTensors]:
    """``split`` of every training and zero-shot corpus that has it and whose task the model
    predicts (a single-task run trains on other corpora without scoring them): corpus -> rows.

    ``modality_dims``: the input sizes a trained model expects (its checkpoint's); a store whose
    features have other sizes (another encoder) raises FeatureStoreError naming both."""
    manifest = _read_manifest(cfg, root)
    other = {m: (dim, manifest.modalities[m].dim) for m, dim in (modality_dims or {}).items()
             if m in manifest.modalities and manifest.modalities[m].dim != dim}
    if other:
        raise FeatureStoreError(f"{root}: the model takes " + ", ".join(f"{m} features of size {a}, this store has {b}"
                                                                         for m, (a, b) in other.items())
                                + " (features of another encoder?)")
    corpora = [c for c in (*cfg.data.train_corpora, *cfg.data.zero_shot_corpora) if CORPORA[c].task in cfg.data.tasks]
    return {c: _load(root, c, split, cfg, manifest, device) for c in corpora if split in manifest.corpora.get(c, {})}


def load_training_data(cfg: ExperimentConfig, root: str | Path, device: torch.device) -> TrainingData:
    """Load the config's corpora from the feature store at ``root``."""
    manifest = _read_manifest(cfg, root)
    for corpus in cfg.data.train_corpora:
        # A corpus without labels (your own clips) trains SSL only: it has nothing to score on dev.
        for split in ("train", "dev") if CORPORA[corpus].task is not None else ("train",):
            if split not in manifest.corpora.get(corpus, {}):
                raise FeatureStoreError(f"{root}: training corpus {corpus!r} has no {split} split")
    trained_tasks = {CORPORA[c].task for c in cfg.data.train_corpora}
    missing = [t for t in cfg.data.tasks if t not in trained_tasks]
    if missing:
        raise ConfigError(f"task(s) {missing} have no training corpus in data.train_corpora {cfg.data.train_corpora}")
    dev = load_eval_splits(cfg, root, "dev", device)
    return TrainingData(
        train=concat([_load(root, c, "train", cfg, manifest, device) for c in cfg.data.train_corpora]),
        dev=dev,
        dev_without={c: without_modalities(dev[c], cfg.data.select_without) for c in cfg.data.train_corpora
                     if c in dev} if cfg.data.select_without else {},
        modality_dims={m: manifest.modalities[m].dim for m in cfg.data.modalities},
        manifest_digest=manifest.digest(),
        store_modalities={m: manifest.modalities[m] for m in cfg.data.modalities},
    )
