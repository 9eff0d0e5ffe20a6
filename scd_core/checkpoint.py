"""Checkpoints that load without executing pickled code.

A checkpoint is a directory:

* ``model.safetensors``: the MCDM weights;
* ``config.json``: the experiment config, modality input sizes and tasks (enough to rebuild),
  and what the training store's manifest recorded about each modality's extractor
  (``store_modalities``: encoder, fingerprint, frames, settings; absent in checkpoints
  written before it existed), so that prediction can rebuild the same extraction;
* ``optimizer.safetensors`` + ``state.json`` (training checkpoints only): optimiser tensors,
  and as JSON the optimiser's scalar state and param groups, the scheduler, both GradNorm
  branches, the early-stopping counters and the epoch history;
* ``training.safetensors`` (training checkpoints whose options keep tensors: the EMA
  teacher's weights, the pseudo-labeller's class memory): those tensors by name.

Directories are written next to their destination and renamed into place, so a crash
never leaves a half-written checkpoint where a reader looks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from scd_core.config import ExperimentConfig, build_config
from scd_core.features.schema import ModalityInfo

FORMAT_VERSION = 1


@dataclass
class ModelSpec:
    """What it takes to rebuild a model: the config and the data's shape; and how its
    features were made (``store_modalities``: the training store's manifest entries of the
    model's modalities, None when unknown)."""

    config: ExperimentConfig
    modality_dims: dict[str, int]
    tasks: list[str]
    store_modalities: dict[str, ModalityInfo] | None = None

    def to_json(self) -> str:
        store = None if self.store_modalities is None else {m: asdict(i) for m, i in self.store_modalities.items()}
        return json.dumps({"format_version": FORMAT_VERSION, "experiment": self.config.to_dict(),
                           "modality_dims": self.modality_dims, "tasks": self.tasks, "store_modalities": store},
                          indent=2)

    @classmethod
    def from_json(cls, text: str, where: Path) -> "ModelSpec":
        raw = json.loads(text)
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where}: checkpoint format {raw.get('format_version')!r}, expected {FORMAT_VERSION}")
        store = raw.get("store_modalities")
        return cls(build_config(raw["experiment"]), dict(raw["modality_dims"]), list(raw["tasks"]),
                   None if store is None else {m: ModalityInfo(**info) for m, info in store.items()})


def build_model(spec: ModelSpec) -> nn.Module:
    from scd_core.model import MCDM

    return MCDM.from_config(spec.config.model, spec.modality_dims, spec.tasks)


def write_atomic_dir(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create ``path`` by filling a sibling temporary directory and renaming it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        fill(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _optimizer_to_safe(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (safetensors) and JSON-able scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return _contiguous(tensors), {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    training_state: dict[str, Any] | None = None,
    training_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a model checkpoint (and, with an optimiser, a resumable training checkpoint)."""

    def fill(tmp: Path) -> None:
        save_file(_contiguous(model.state_dict()), tmp / "model.safetensors")
        (tmp / "config.json").write_text(spec.to_json())
        if optimizer is not None:
            tensors, meta = _optimizer_to_safe(optimizer)
            save_file(tensors, tmp / "optimizer.safetensors")
            state = {"optimizer": meta, "scheduler": None if scheduler is None else scheduler.state_dict(),
                     **(training_state or {})}
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
        if training_tensors:
            save_file(_contiguous(training_tensors), tmp / "training.safetensors")

    return write_atomic_dir(path, fill)


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    return ModelSpec.from_json((path / "config.json").read_text(), path / "config.json")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` (no pickle)."""
    path = Path(path)
    spec = load_spec(path)
    model = build_model(spec)
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model.to(device), spec


def training_history(path: str | Path) -> list[dict[str, Any]]:
    """The epoch history of a training checkpoint (``EpochReport`` fields, one dict per epoch)."""
    return json.loads((Path(path) / "state.json").read_text())["history"]


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None
) -> dict[str, Any]:
    """Restore model, optimiser and scheduler in place; return the rest of ``state.json``."""
    path = Path(path)
    device = next(model.parameters()).device
    model.load_state_dict(load_file(path / "model.safetensors", device=str(device)))
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(path / "optimizer.safetensors", device=str(device))
    optimizer.load_state_dict(_optimizer_from_safe(tensors, state.pop("optimizer")))
    scheduler_state = state.pop("scheduler")
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return state


def load_training_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The ``training.safetensors`` tensors of a training checkpoint ({} when it has none)."""
    file = Path(path) / "training.safetensors"
    return load_file(file, device=str(device)) if file.exists() else {}
