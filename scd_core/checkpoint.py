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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from scd_core.config import ConfigError, ExperimentConfig, build_config
from scd_core.features.schema import ModalityInfo

FORMAT_VERSION = 1


# Checkpoints written before the sweep settings left the experiment config carry them in a
# section that nothing reads; it is dropped so that those checkpoints still load.
LEGACY_SEARCH_SECTION = "search"


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message names the file and what is wrong with it."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (is {path.parent} a checkpoint directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON: {err}") from None


def _read_tensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file (never a pickle: a renamed pickle fails here, it is not executed)."""
    if not path.exists():
        raise CheckpointError(f"{path}: missing (is {path.parent} a checkpoint directory?)")
    try:
        return load_file(path, device=device)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); truncated or another format?") \
            from None


def _load_weights(module: nn.Module, path: Path, device: str = "cpu") -> None:
    try:
        module.load_state_dict(_read_tensors(path, device))
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise CheckpointError(f"{path}: weights do not fit the model its config.json describes: {err}") from None


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
    def from_dict(cls, raw: Any, where: Path) -> "ModelSpec":
        """``raw``: the parsed ``config.json`` at ``where`` (named in errors)."""
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: must be a JSON object, got {type(raw).__name__}")
        if raw.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: field format_version: {raw.get('format_version')!r}, "
                                  f"expected {FORMAT_VERSION}")
        store = raw.get("store_modalities")
        try:
            experiment = {k: v for k, v in raw["experiment"].items() if k != LEGACY_SEARCH_SECTION}
            return cls(build_config(experiment), dict(raw["modality_dims"]), list(raw["tasks"]),
                       None if store is None else {m: ModalityInfo(**info) for m, info in store.items()})
        except KeyError as err:
            raise CheckpointError(f"{where}: field {err.args[0]} is missing") from None
        except (AttributeError, ConfigError, TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: field experiment/modality_dims/tasks/store_modalities: {err}") from None


def build_model(spec: ModelSpec) -> nn.Module:
    from scd_core.model import MCDM

    return MCDM.from_config(spec.config.model, spec.modality_dims, spec.tasks)


def _available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: CUDA's own count, the kernel's MemAvailable for the CPU, None
    where neither is known (no check)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def build_on_meta(spec: ModelSpec, where: str = "config") -> nn.Module:
    """The model of ``spec`` on torch's meta device: its shapes and parameter counts, nothing
    allocated. ConfigError, naming the size fields, for sizes past what torch can count."""
    try:
        with torch.device("meta"):
            return build_model(spec)
    except RuntimeError as err:
        if "overflow" not in str(err):
            raise
        model = spec.config.model
        raise ConfigError(f"{where}: model.hidden_dim={model.hidden_dim}, model.out_features={model.out_features}, "
                          f"model.graph={model.graph}, model.attention={model.attention} make a tensor with more "
                          f"elements than torch can count") from None


def check_fits(spec: ModelSpec, device: torch.device, bytes_per_parameter: int, where: str = "config",
               batch_rows: int = 0) -> None:
    """Refuse, naming the fields, a model whose ``bytes_per_parameter`` per parameter, plus the
    float32 features of a batch of ``batch_rows`` rows, exceed the memory free on ``device``,
    before anything is allocated: a mistyped ``model.hidden_dim`` or ``optim.batch_size`` would
    otherwise fail deep in torch's allocator, or be killed by the kernel's out-of-memory killer
    without a word. The model is counted on the meta device (:func:`build_on_meta`); the batch's
    activations are not counted, so what is refused could never fit."""
    model = spec.config.model
    fields = (f"{where}: model.hidden_dim={model.hidden_dim}, model.out_features={model.out_features}, "
              f"model.graph={model.graph}, model.attention={model.attention}")
    params = sum(p.numel() for p in build_on_meta(spec, where).parameters())
    weights, batch = params * bytes_per_parameter, batch_rows * sum(spec.modality_dims.values()) * 4
    free = _available_bytes(torch.device(device))
    if free is not None and weights + batch > free:
        also = f" and optim.batch_size={batch_rows} rows of features take {batch / 1e9:.1f} GB" if batch_rows else ""
        raise ConfigError(f"{fields} make {params:,} parameters, {weights / 1e9:.1f} GB at {bytes_per_parameter} "
                          f"bytes each{also}: more than the {free / 1e9:.1f} GB free on {device}")


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
    where = Path(path) / "config.json"
    return ModelSpec.from_dict(_read_json(where), where)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` (no pickle)."""
    path = Path(path)
    spec = load_spec(path)
    check_fits(spec, torch.device("cpu"), 4, str(path / "config.json"))  # built there, in float32
    model = build_model(spec)
    _load_weights(model, path / "model.safetensors")
    return model.to(device), spec


def training_history(path: str | Path) -> list[dict[str, Any]]:
    """The epoch history of a training checkpoint (``EpochReport`` fields, one dict per epoch)."""
    state = _read_json(Path(path) / "state.json")
    if not isinstance(state, dict) or "history" not in state:
        raise CheckpointError(f"{Path(path) / 'state.json'}: field history is missing")
    return state["history"]


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None
) -> dict[str, Any]:
    """Restore model, optimiser and scheduler in place; return the rest of ``state.json``."""
    path = Path(path)
    device = next(model.parameters()).device
    _load_weights(model, path / "model.safetensors", str(device))
    state = _read_json(path / "state.json")
    tensors = _read_tensors(path / "optimizer.safetensors", str(device))
    optimizer.load_state_dict(_optimizer_from_safe(tensors, state.pop("optimizer")))
    scheduler_state = state.pop("scheduler")
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return state


def load_training_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The ``training.safetensors`` tensors of a training checkpoint ({} when it has none)."""
    file = Path(path) / "training.safetensors"
    return load_file(file, device=str(device)) if file.exists() else {}
