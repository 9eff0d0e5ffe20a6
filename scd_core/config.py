"""Typed configuration of a whole experiment, validated at the edge.

Defaults are the paper's best values (Tables 15 and 16, DESIGN.md). Load with
``load_config(yaml_path, ["model.hidden_dim=256", "ssl.lambda=0.2"])``; every invalid
value raises ``ConfigError`` naming the field and the allowed range or choices.
"""

from __future__ import annotations

import difflib
import inspect
import reprlib
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Mapping, Sequence, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scd_core.tasks import CorpusName, ModalityName, TaskName
from scd_core.yaml_io import parse_yaml, read_yaml


class ConfigError(ValueError):
    """A configuration value is invalid; the message names every offending field."""


DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?|mps)$"  # ExperimentConfig.device, and every --device


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, populate_by_name=True)


def _unique_nonempty(values: list[str], what: str) -> list[str]:
    if not values:
        raise ValueError(f"at least one {what} is required")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}s must be unique, got {values}")
    return values


class DataConfig(_Section):
    """Which feature store, corpora, modalities and tasks an experiment uses.

    Dropping a modality or a task here is the paper's "w/o <modality>" / "w/o <task>"
    ablation (Table 1, rows 11-17).
    """

    features: str | None = Field(None, description="feature-store root; None = synthetic demo corpora")
    train_corpora: list[CorpusName] = ["mosei", "fiv2", "bah"]
    zero_shot_corpora: list[CorpusName] = ["meld"]
    modalities: list[ModalityName] = ["video", "audio", "text", "behavior"]
    tasks: list[TaskName] = ["emo", "pt", "ah"]
    corpus_weights: dict[CorpusName, float] | None = Field(
        None, description="sampling proportions per training corpus; None = proportional to size"
    )
    select_without: list[ModalityName] = Field(
        [], description="model selection also scores the training corpora's dev splits with these modalities "
                        "masked (the pattern of a target corpus that lacks them, e.g. MELD without behaviour "
                        "descriptions); the dev score is the mean of the two")
    modality_dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="training only: each present modality of a row is masked with this probability "
                    "(never all of them), so the model learns rows with missing modalities",
    )

    @field_validator("train_corpora")
    @classmethod
    def _corpora(cls, v: list[str]) -> list[str]:
        return _unique_nonempty(v, "training corpus")

    @field_validator("zero_shot_corpora")
    @classmethod
    def _scored_corpora(cls, v: list[str]) -> list[str]:
        if "unlabelled" in v:
            raise ValueError("the unlabelled corpus has no labels to score; list it in data.train_corpora "
                             "(extra rows for SSL) or predict it with ray_jobs/predict.py")
        return v

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str]) -> list[str]:
        return _unique_nonempty(v, "modality")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        return _unique_nonempty(v, "task")

    @model_validator(mode="after")
    def _select_without_keeps_a_modality(self) -> "DataConfig":
        unknown = [m for m in self.select_without if m not in self.modalities]
        if unknown:
            raise ValueError(f"select_without {unknown} are not among data.modalities {self.modalities}")
        if set(self.select_without) >= set(self.modalities):
            raise ValueError(f"select_without {self.select_without} would mask every modality")
        return self

    @field_validator("corpus_weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
            raise ValueError(f"weights must be >= 0 with a positive sum, got {v}")
        return v

    @model_validator(mode="after")
    def _weights_of_training_corpora(self) -> "DataConfig":
        if self.corpus_weights is not None:
            others = sorted(set(self.corpus_weights) - set(self.train_corpora))
            if others:
                raise ValueError(f"corpus_weights: {others} not in train_corpora {self.train_corpora} "
                                 "(weights are sampling proportions of the training corpora)")
        return self


class ModelConfig(_Section):
    """MCDM architecture (paper section 2.3, Table 15). ``graph`` and ``attention`` name
    entries of the layer registries in ``scd_core.model``; ``graph="none"`` is the
    "w/o graph layers" ablation, ``attention="none"`` the "w/o attention layers" one."""

    hidden_dim: int = Field(512, ge=2)
    out_features: int = Field(512, ge=1)
    num_heads: int = Field(8, ge=1)
    dropout: float = Field(0.15, ge=0.0, lt=1.0)
    graph: str = "unitary"
    attention: str = "mha"
    task_projectors: bool = True
    guide_banks: bool = True
    graph_self_loops: bool | None = Field(
        None, description="self-loops in the graph layers' adjacency; None = the layer's default "
                          "(unitary: without, as the authors' code); only for layers with a self_loops switch")

    @field_validator("graph")
    @classmethod
    def _graph(cls, v: str) -> str:
        # Imported here, not at the top: the layers register when scd_core.model (torch) is
        # imported, and the modules that read only this file's helpers (extraction's config,
        # in every extraction actor) then start without torch.
        from scd_core.model import GRAPH_LAYERS

        try:  # resolves pyg:<Name> too; the registry's message lists the valid names
            GRAPH_LAYERS.get(v)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        return v

    @field_validator("attention")
    @classmethod
    def _attention(cls, v: str) -> str:
        from scd_core.model import ATTENTION_LAYERS  # here, not at the top: see _graph

        if v not in ATTENTION_LAYERS:
            raise ValueError(f"unknown attention layer {v!r}; choose one of {ATTENTION_LAYERS.names()}")
        return v

    @model_validator(mode="after")
    def _self_loop_switch(self) -> "ModelConfig":
        from scd_core.model import GRAPH_LAYERS  # here, not at the top: see _graph

        layer = GRAPH_LAYERS.get(self.graph)
        if self.graph_self_loops is not None and "self_loops" not in inspect.signature(layer).parameters:
            raise ValueError(f"graph_self_loops: graph layer {self.graph!r} has no self-loop switch; leave it null")
        return self

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "ModelConfig":
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class SSLConfig(_Section):
    """Semi-supervised cross-domain protocol (paper section 2.4, Table 16)."""

    enabled: bool = Field(True, description="pseudo-label loss on other corpora's rows")
    tau_emo: float = Field(0.6, gt=0.0, lt=1.0)
    tau_pt: float = Field(0.6, ge=0.5, lt=1.0)
    tau_ah: float = Field(0.6, gt=0.0, lt=1.0)
    gradnorm: bool = Field(True, description="False: fixed task weights of 1 (paper's baseline runs)")
    alpha_s: float = Field(1.25, ge=0.0)
    alpha_ss: float = Field(1.0, ge=0.0)
    eta_s: float = Field(0.01, gt=0.0)
    eta_ss: float = Field(0.005, gt=0.0)
    lambda_: float = Field(0.3, ge=0.0, alias="lambda", description="SSL budget S_ss = 3 * lambda")
    w_floor: float = Field(1e-3, gt=0.0, lt=1.0)
    emo_target: Literal["distribution", "argmax"] = Field(
        "distribution", description="supervised EMO target: the label distribution (paper) or its argmax "
                                    "(the authors' code)")
    logit_adjustment: float = Field(
        0.0, ge=0.0, le=2.0, description="EMO/AH supervised CE on z + tau * log(prior) (Menon et al. 2021), so that "
                                         "the logits rank classes for balanced error; tau, 0 = the paper")
    # Options beyond the paper (scd_core.pseudo_labels); each default is the paper's behaviour.
    warmup_epochs: int = Field(0, ge=0, description="no pseudo-label loss before this epoch")
    teacher: Literal["self", "ema"] = Field(
        "self", description="pseudo-labels from the model itself (paper) or an EMA of its weights (Mean Teacher)")
    ema_decay: float = Field(0.99, gt=0.0, lt=1.0, description="teacher=ema: weight of the old teacher per step")
    pseudo_labels: Literal["hard", "soft"] = Field(
        "hard", description="hard argmax / 0-1 targets (paper) or temperature-sharpened soft targets")
    temperature: float = Field(0.5, gt=0.0, le=1.0, description="pseudo_labels=soft: sharpening temperature")
    class_balance: Literal["none", "flexmatch", "align"] = Field(
        "none", description="EMO/AH pseudo-labels: one threshold (paper), FlexMatch per-class thresholds, "
                            "or distribution alignment to the labelled class prior")
    rebalance_epoch: int | None = Field(
        None, ge=1, description="at this epoch the pseudo-label branch's GradNorm weights restart from equal "
                                "shares of its budget (the paper's A.8 remark); None = never")


class OptimConfig(_Section):
    """Optimisation (Table 15)."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop", "lion"] = "adam"
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop only")
    scheduler: Literal["none", "plateau", "cosine", "onecycle"] = "plateau"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=2)
    early_stopping_patience: int = Field(10, ge=0, description="epochs without dev improvement; 0 = off")


class ExperimentConfig(_Section):
    """Everything one training run needs. (A sweep's own settings, such as the number of trials
    or ASHA's grace period, are ``tuning.sweep.SweepSettings``.)"""

    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    cuda_graph: Literal["auto", "on", "off"] = Field(
        "auto", description="replay the training step as one captured CUDA graph (scd_core.static_step): "
                            "auto = on when the device is CUDA; on = required (an error elsewhere); off = eager")
    fuse_elementwise: Literal["auto", "on", "off"] = Field(
        "auto", description="compile the step's elementwise stages (losses, pseudo-labels, GradNorm updates, the "
                            "epoch's sums) into a few fused kernels with torch.compile (scd_core.static_step.Fused): "
                            "auto = on when the device is CUDA; on = on any device (the CPU needs a C++ compiler); "
                            "off = eager")
    # Made per instance, not at import: validating a model section imports the layers (torch).
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    ssl: SSLConfig = Field(default_factory=SSLConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)

    @field_validator("cuda_graph", "fuse_elementwise", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v  # YAML reads on/off as booleans

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict with the YAML spelling of every key (``ssl.lambda``)."""
        return self.model_dump(mode="json", by_alias=True)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section that ``annotation`` is, or ``X | None`` holds; else None."""
    if get_origin(annotation) in (Union, UnionType):
        return next((a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _step(annotation: Any, part: Any) -> Any:
    """The type one step ``part`` of an error's location leads to from ``annotation``: a
    section's field, or an item of a list or dict (``sources.0``, ``resources.decode``)."""
    section = _section(annotation)
    if section is not None:
        field = section.model_fields.get(str(part))
        return None if field is None else field.annotation
    args = get_args(annotation)
    return args[-1] if args else None  # list[X], dict[str, X]


def _section_fields(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The field names of the section of ``root`` at ``loc`` (the path to an unknown key)."""
    annotation: Any = root
    for part in loc[:-1]:
        annotation = _step(annotation, part)
    section = _section(annotation)
    return [] if section is None else [field.alias or name for name, field in section.model_fields.items()]


def _shown(value: Any) -> str:
    """``repr(value)`` cut short: a YAML file's anchors can make a value of millions of items
    (nested aliases), whose full repr would be the error message."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxtuple = 2, 8, 8, 8
    short.maxstring = short.maxother = 200
    text = short.repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def format_errors(err: ValidationError, root: type[BaseModel]) -> str:
    """Every error of validating ``root``, one line each, naming its field (and, for an unknown
    key, the closest valid one)."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":  # a typo: name the closest valid key
            close = difflib.get_close_matches(str(e["loc"][-1]), _section_fields(root, e["loc"]), n=1)
            if close:
                msg += f"; did you mean {'.'.join([*map(str, e['loc'][:-1]), close[0]])}?"
        lines.append(f"  {where}: {msg} (got {_shown(e.get('input'))})")
    return "invalid configuration:\n" + "\n".join(lines)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["model.hidden_dim=256", "data.tasks=[emo,pt]"]`` -> nested dict (values parsed as YAML)."""
    flat: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        try:
            flat[key.strip()] = parse_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {err}") from None
    return nest(flat)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(values: dict[str, Any]) -> ExperimentConfig:
    """Validate a nested dict; raise ``ConfigError`` naming every bad field."""
    try:
        return ExperimentConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_errors(err, ExperimentConfig)) from None


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"model.hidden_dim": 256}`` -> ``{"model": {"hidden_dim": 256}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key {key!r} conflicts with another key setting {part!r}")
        node[leaf] = value
    return nested


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"hidden_dim": 256}}`` -> ``{"model.hidden_dim": 256}`` (the inverse of ``nest``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def with_overrides(cfg: ExperimentConfig, flat: dict[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-key values applied, validated like any config."""
    return build_config(deep_merge(cfg.to_dict(), nest(flat)))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file (or the defaults) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = read_yaml(path)
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping, got {type(loaded).__name__}")
        values = loaded or {}
    return build_config(deep_merge(values, parse_overrides(overrides)))


def describe(cfg: ExperimentConfig | None = None) -> str:
    """``cfg`` (default: the defaults) as YAML, each field with its description as a comment."""
    cfg = cfg or ExperimentConfig()
    values = cfg.to_dict()
    lines = []
    for name, field in ExperimentConfig.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            doc = " ".join((annotation.__doc__ or "").split()).split(". ")[0].rstrip(".")  # its first sentence
            lines.append(f"{name}:{f'  # {doc}' if doc else ''}")
            for sub_name, sub in annotation.model_fields.items():
                key = sub.alias or sub_name
                lines.append(_yaml_line(key, values[name][key], sub.description, "  "))
        else:
            lines.append(_yaml_line(name, values[name], field.description, ""))
    return "\n".join(lines) + "\n"


def _yaml_line(key: str, value: Any, description: str | None, indent: str) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()
    return f"{indent}{key}: {text}" + (f"  # {description}" if description else "")


if __name__ == "__main__":  # python -m scd_core.config [--config YAML] [key=value ...]
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m scd_core.config",
                                     description="Print an experiment config (default: the defaults) as YAML, "
                                                 "with each field's description.")
    parser.add_argument("--config", help="experiment YAML")
    parser.add_argument("overrides", nargs="*", help="section.field=value")
    args = parser.parse_args()
    try:
        print(describe(load_config(args.config, args.overrides)), end="")
    except ConfigError as err:
        sys.exit(f"error: {err}")
