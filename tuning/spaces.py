"""Search spaces: YAML files -> validated :class:`SearchSpace` -> Ray Tune param spaces.

A search space names what a sweep varies; everything else comes from the experiment
config (``scd_core.config``). Format (every top-level key but ``parameters``/``variants``
is optional, and one of those two must be non-empty)::

    name: demo                        # default: the file's stem
    description: every kind of dimension
    strategy: optuna                  # optuna | grid | oat (the CLI may override)
    num_samples: 20                   # optuna only: trials to sample
    fixed:                            # dotted config keys applied to every trial
      optim.epochs: 30
    baseline:                         # centre of the searched parameters
      tau_emo_ah: 0.8
      ssl.alpha_s: 1.0
    parameters:
      ssl.alpha_s: [1.0, 1.25, 1.5, 1.75]                  # a list: grid / categorical
      tau_emo_ah: {values: [0.6, 0.8], targets: [ssl.tau_emo, ssl.tau_ah]}  # one dimension, two keys
      optim.lr: {distribution: loguniform, low: 1.0e-5, high: 1.0e-3}
      model.dropout: {distribution: uniform, low: 0.0, high: 0.3}
      optim.epochs: {distribution: quniform, low: 10, high: 30, q: 5}
      optim.batch_size: {distribution: randint, low: 16, high: 65}   # low <= x < high (Ray's rule)
      model.hidden_dim: {distribution: choice, values: [128, 256]}
    variants:                         # named override sets, one categorical dimension "variant"
      full: {}
      no_graph: {model.graph: none}

A parameter without ``targets`` sets the config key of its own name. Config keys use the
YAML spelling (``ssl.lambda``). ``1e-5`` is read as a float (YAML 1.2), not as a string.

Strategies:

- ``grid``: the Cartesian product of every list parameter (and of ``variants``); a space
  with a distribution cannot be a grid.
- ``oat``: one factor at a time from the baseline (paper appendix A.7/A.8): the
  ``baseline`` trial, then per list parameter one trial per other value (named like
  ``ssl.alpha_s=1.5``), then one trial per non-empty variant. Every list parameter needs a
  baseline value.
- ``optuna``: lists and ``choice`` become ``tune.choice``, the other distributions their
  ``tune`` counterparts; the baseline is Optuna's first point when every dimension has one
  (the first variant stands for the ``variant`` dimension).

A trial's overrides (:meth:`SearchSpace.resolve`) apply, later winning: ``fixed``, the
baseline, the trial's sampled values, then its variant's overrides.

Every key and value is checked when the file is loaded, before any trial starts: config
keys against the pydantic models, and each listed value, distribution bound, the baseline
and each variant by building the config (defaults + ``fixed`` + baseline + that value).
Combinations of grid values are not checked beforehand (a grid can be huge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

import yaml
from pydantic import BaseModel

from scd_core.config import ConfigError, ExperimentConfig, load_config, with_overrides
from scd_core.yaml_io import read_yaml

__all__ = ["SpaceError", "Parameter", "SearchSpace", "load_space", "available_spaces", "SPACES_DIR",
           "STRATEGIES", "DISTRIBUTIONS", "VARIANT"]

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
Strategy = Literal["optuna", "grid", "oat"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
DEFAULT_STRATEGY: Strategy = "optuna"
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice")
VARIANT = "variant"  # the name of the variants' search dimension
BASELINE = "baseline"  # the name of OAT's centre trial
_TOP_LEVEL = ("name", "description", "strategy", "num_samples", "fixed", "baseline", "parameters", "variants")
_BOUNDS = {"uniform": ("low", "high"), "loguniform": ("low", "high"), "quniform": ("low", "high", "q"),
           "randint": ("low", "high"), "choice": ("values",), "grid": ("values",)}


class SpaceError(ValueError):
    """A search space is invalid; the message names the file and the offending key."""


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` apart from ``1`` but lets ``1`` equal ``1.0``."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _plain(value: Any) -> Any:
    """NumPy scalars (Ray's randint samples) -> Python scalars, for pydantic and MLflow."""
    return value.item() if type(value).__module__ == "numpy" and hasattr(value, "item") else value


def _config_key_problem(key: Any) -> str | None:
    """Why ``key`` is not a dotted config field (None if it is), walking the pydantic sections."""
    if not isinstance(key, str) or not key:
        return "config keys are non-empty strings"
    node: type[BaseModel] = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.alias or name: f for name, f in node.model_fields.items()}
        where = ".".join(parts[:i]) or "the config"
        if part not in fields:
            return f"unknown config key ({where} has: {', '.join(fields)})"
        annotation = fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if i == len(parts) - 1 and is_section:
            names = (f.alias or n for n, f in annotation.model_fields.items())
            return f"{key} is a config section; set one of its fields ({', '.join(names)})"
        if i < len(parts) - 1 and not is_section:
            return f"{'.'.join(parts[:i + 1])} is a config field, not a section"
        node = annotation
    return None


def _is_integer_field(key: str) -> bool:
    """Whether the config field at dotted ``key`` (a valid key) holds an integer."""
    node: type[BaseModel] = ExperimentConfig
    for part in key.split("."):
        fields = {f.alias or name: f for name, f in node.model_fields.items()}
        node = fields[part].annotation
    kinds = get_args(node) or (node,)
    return int in kinds and float not in kinds and bool not in kinds


@lru_cache(maxsize=1)
def _defaults() -> ExperimentConfig:
    return load_config()


@dataclass(frozen=True)
class Parameter:
    """One search dimension: a list of values (``distribution="grid"``) or a distribution.

    Its value is written to every key of ``targets`` (``(name,)`` unless the YAML says).
    """

    name: str
    targets: tuple[str, ...]
    distribution: str = "grid"
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    q: float | None = None

    @property
    def is_list(self) -> bool:
        """A plain list: enumerable by grid and OAT."""
        return self.distribution == "grid"

    def overrides(self, value: Any) -> dict[str, Any]:
        """The dotted config overrides that setting this dimension to ``value`` means."""
        value = _plain(value)
        return {target: value for target in self.targets}

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can take."""
        if self.values:
            return any(_same(value, v) for v in self.values)
        if not _is_number(value):
            return False
        if self.distribution == "randint":
            return isinstance(value, int) and self.low <= value < self.high
        return self.low <= value <= self.high

    def extremes(self) -> tuple[Any, ...]:
        """The values checked against the config at load time: every listed value, or the
        bounds a sample can reach (randint's high is exclusive, quniform rounds to q)."""
        if self.values:
            return self.values
        if self.distribution == "randint":
            return self.low, self.high - 1
        if self.distribution == "quniform":
            return tuple(round(b / self.q) * self.q for b in (self.low, self.high))
        return self.low, self.high

    def domain(self, strategy: str) -> Any:
        """The Ray Tune object for this dimension under ``strategy`` ("grid" or "optuna")."""
        from ray import tune  # imported here: loading and validating a space needs no Ray

        if strategy == "grid":
            return tune.grid_search(list(self.values))
        if self.values:  # a list or a choice
            return tune.choice(list(self.values))
        if self.distribution == "quniform":
            return tune.quniform(self.low, self.high, self.q)
        return getattr(tune, self.distribution)(self.low, self.high)

    def to_dict(self) -> Any:
        """The YAML spelling (a bare list when that is enough)."""
        out: dict[str, Any] = {} if self.is_list else {"distribution": self.distribution}
        for key in _BOUNDS[self.distribution]:
            out[key] = list(self.values) if key == "values" else getattr(self, key)
        if self.targets != (self.name,):
            out["targets"] = list(self.targets)
        return out["values"] if list(out) == ["values"] else out


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; build it with :func:`load_space` or :meth:`from_dict`."""

    name: str
    description: str = ""
    strategy: str = DEFAULT_STRATEGY
    num_samples: int | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Parameter] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = field(default="<dict>", compare=False)  # the file, for error messages

    # ------------------------------------------------------------------ building

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", name: str | None = None) -> "SearchSpace":
        """Parse and validate the YAML structure; raise :class:`SpaceError` naming the key."""

        def fail(key: str, msg: str) -> SpaceError:
            return SpaceError(f"{source}: {key}: {msg}")

        def mapping(key: str, value: Any) -> dict:
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise fail(key, f"must be a mapping, got {type(value).__name__}")
            return dict(value)

        def config_keys(key: str, values: Mapping[str, Any]) -> None:
            for k in values:
                if (problem := _config_key_problem(k)) is not None:
                    raise fail(f"{key}.{k}", problem)

        if not isinstance(data, dict):
            raise SpaceError(f"{source}: a search space must be a mapping, got {type(data).__name__}")
        unknown = [k for k in data if k not in _TOP_LEVEL]
        if unknown:
            raise fail(str(unknown[0]), f"unknown top-level key (allowed: {', '.join(_TOP_LEVEL)})")

        space_name = data.get("name", name or Path(source).stem)
        if not isinstance(space_name, str) or not space_name:
            raise fail("name", "must be a non-empty string")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise fail("description", "must be a string")
        strategy = data.get("strategy", DEFAULT_STRATEGY)
        if strategy not in STRATEGIES:
            raise fail("strategy", f"unknown strategy {strategy!r} (choose one of {', '.join(STRATEGIES)})")
        num_samples = data.get("num_samples")
        if num_samples is not None and (not isinstance(num_samples, int) or isinstance(num_samples, bool)
                                        or num_samples < 1):
            raise fail("num_samples", f"must be an integer >= 1, got {num_samples!r}")

        fixed = mapping("fixed", data.get("fixed"))
        config_keys("fixed", fixed)

        parameters: dict[str, Parameter] = {}
        owners: dict[str, str] = {}  # config key -> the parameter that sets it
        for pname, spec in mapping("parameters", data.get("parameters")).items():
            param = _parse_parameter(pname, spec, lambda msg, p=pname: fail(f"parameters.{p}", msg))
            for target in param.targets:
                if target in owners:
                    raise fail(f"parameters.{pname}", f"{target} is already set by parameter {owners[target]}")
                owners[target] = pname
            parameters[pname] = param

        baseline = mapping("baseline", data.get("baseline"))
        for pname, value in baseline.items():
            if pname not in parameters:
                raise fail(f"baseline.{pname}", f"not a parameter (parameters: {', '.join(map(str, parameters))})")
            param = parameters[pname]
            if not param.contains(value):
                allowed = list(param.values) if param.values else f"[{param.low}, {param.high}]"
                raise fail(f"baseline.{pname}", f"{value!r} is not among the parameter's values {allowed}")

        variants: dict[str, dict[str, Any]] = {}
        for vname, overrides in mapping("variants", data.get("variants")).items():
            if not isinstance(vname, str) or not vname or vname == BASELINE or "=" in vname:
                raise fail(f"variants.{vname}", f"variant names are strings other than {BASELINE!r}, without '='")
            variants[vname] = mapping(f"variants.{vname}", overrides)
            config_keys(f"variants.{vname}", variants[vname])

        if not parameters and not variants:
            raise fail("parameters", "nothing to search: give parameters or variants")

        # Values are checked against the config with the other dimensions at their centre,
        # i.e. exactly the trials OAT runs.
        def build(key: str, base: ExperimentConfig, overrides: dict[str, Any], what: str = "") -> ExperimentConfig:
            try:
                return with_overrides(base, overrides)
            except ConfigError as err:
                raise fail(key, f"{what}{err}") from None

        centre = build("fixed", _defaults(), fixed)
        centre = build("baseline", centre, _expand(parameters, baseline))
        for param in parameters.values():
            for value in param.extremes():
                build(f"parameters.{param.name}", centre, param.overrides(value), f"value {value!r}: ")
        for vname, overrides in variants.items():
            build(f"variants.{vname}", centre, overrides)

        space = cls(space_name, description, strategy, num_samples, fixed, baseline, parameters, variants, source)
        space._require(strategy)
        return space

    # ------------------------------------------------------------------ strategies

    def _strategy(self, strategy: str | None) -> str:
        strategy = self.strategy if strategy is None else strategy
        self._require(strategy)
        return strategy

    def _require(self, strategy: str) -> None:
        """Raise unless this space can be searched with ``strategy``."""
        if strategy not in STRATEGIES:
            raise SpaceError(f"{self.source}: unknown strategy {strategy!r} (choose one of {', '.join(STRATEGIES)})")
        if strategy == "optuna":
            return
        for param in self.parameters.values():
            if not param.is_list:
                raise SpaceError(f"{self.source}: parameters.{param.name}: a {param.distribution} distribution "
                                 f"cannot be enumerated by {strategy}; give a list of values")
            if strategy == "oat" and param.name not in self.baseline:
                raise SpaceError(f"{self.source}: baseline.{param.name}: "
                                 "oat needs a baseline value for every parameter")

    def _dimensions(self, strategy: str) -> list[str]:
        """The keys of ``param_space(strategy)``."""
        if strategy == "oat":
            return [VARIANT]
        return list(self.parameters) + ([VARIANT] if self.variants else [])

    def grid_size(self) -> int:
        """Number of grid points (variants count as one more dimension)."""
        self._require("grid")
        return math.prod(len(p.values) for p in self.parameters.values()) * max(len(self.variants), 1)

    def oat_variants(self) -> dict[str, dict[str, Any]]:
        """One-factor-at-a-time trials: name -> the overrides that trial adds to the baseline.

        ``"baseline"`` first, then ``"<parameter>=<value>"`` for each non-baseline value of
        each list parameter, then every variant with overrides (an empty one, like
        ``full: {}``, is the baseline trial again and is left out).
        """
        self._require("oat")
        trials: dict[str, dict[str, Any]] = {BASELINE: {}}
        for param in self.parameters.values():
            for value in param.values:
                if not _same(value, self.baseline[param.name]):
                    trials[f"{param.name}={value}"] = param.overrides(value)
        for vname, overrides in self.variants.items():
            if overrides:
                if vname in trials:
                    raise SpaceError(f"{self.source}: variants.{vname}: the name clashes with an oat trial")
                trials[vname] = dict(overrides)
        return trials

    def param_space(self, strategy: str | None = None) -> dict[str, Any]:
        """``param_space`` for ``ray.tune.Tuner`` (default strategy: the space's own)."""
        from ray import tune

        strategy = self._strategy(strategy)
        if strategy == "oat":
            return {VARIANT: tune.grid_search(list(self.oat_variants()))}
        space = {name: param.domain(strategy) for name, param in self.parameters.items()}
        if self.variants:
            names = list(self.variants)
            space[VARIANT] = tune.grid_search(names) if strategy == "grid" else tune.choice(names)
        return space

    def num_trials(self, strategy: str | None = None, num_samples: int | None = None) -> int:
        """Trials a sweep runs: the grid size, the OAT trial count, or Optuna's samples.

        Grid and OAT spaces enumerate their trials, so pass ``num_samples=1`` to the Tuner.
        """
        strategy = self._strategy(strategy)
        if strategy == "grid":
            return self.grid_size()
        if strategy == "oat":
            return len(self.oat_variants())
        samples = num_samples if num_samples is not None else self.num_samples
        if samples is None:
            raise SpaceError(f"{self.source}: num_samples: optuna needs a number of samples")
        return samples

    def points_to_evaluate(self) -> list[dict[str, Any]]:
        """Optuna's first point: the baseline in ``param_space`` keys, or ``[]`` when some
        parameter has none. The first variant stands for the ``variant`` dimension."""
        if any(name not in self.baseline for name in self.parameters):
            return []
        point = {name: self.baseline[name] for name in self.parameters}
        if self.variants:
            point[VARIANT] = next(iter(self.variants))
        return [point]

    def resolve(self, trial_config: Mapping[str, Any], strategy: str | None = None) -> dict[str, Any]:
        """The flat dotted overrides of one trial (``trial_config`` as Ray passes it).

        ``fixed``, then the baseline, then the sampled values, then the variant's overrides.
        """
        strategy = self._strategy(strategy)
        expected = self._dimensions(strategy)
        unknown = [k for k in trial_config if k not in expected]
        missing = [k for k in expected if k not in trial_config]
        if unknown or missing:
            raise SpaceError(f"{self.source}: trial config {dict(trial_config)} does not match the {strategy} "
                             f"space (unknown: {unknown}, missing: {missing}; expected {expected})")
        out = {**self.fixed, **_expand(self.parameters, self.baseline),
               **_expand(self.parameters, {k: v for k, v in trial_config.items() if k != VARIANT})}
        if VARIANT in trial_config:
            variants = self.oat_variants() if strategy == "oat" else self.variants
            variant = trial_config[VARIANT]
            if variant not in variants:
                raise SpaceError(f"{self.source}: unknown {strategy} variant {variant!r} "
                                 f"(choose one of {list(variants)})")
            out.update(variants[variant])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The space in its YAML spelling (for logging; ``from_dict`` reads it back)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "strategy": self.strategy}
        if self.num_samples is not None:
            out["num_samples"] = self.num_samples
        out.update(fixed=dict(self.fixed), baseline=dict(self.baseline),
                   parameters={n: p.to_dict() for n, p in self.parameters.items()},
                   variants={n: dict(v) for n, v in self.variants.items()})
        return out


def _expand(parameters: Mapping[str, Parameter], values: Mapping[str, Any]) -> dict[str, Any]:
    """Dimension values -> dotted config overrides, through each parameter's targets."""
    return {key: v for name, value in values.items() for key, v in parameters[name].overrides(value).items()}


def _parse_parameter(name: Any, spec: Any, fail) -> Parameter:
    """One entry of ``parameters``; ``fail(msg)`` builds the SpaceError for its key."""
    if not isinstance(name, str) or not name or name == VARIANT:
        raise fail(f"parameter names are non-empty strings other than {VARIANT!r}")
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise fail("give a list of values or a mapping with `values` or `distribution` "
                   "(a constant belongs in `fixed`)")
    distribution = spec.get("distribution", "grid" if "values" in spec else None)
    if distribution not in _BOUNDS or (distribution == "grid" and "distribution" in spec):
        raise fail(f"unknown distribution {spec.get('distribution')!r} (choose one of {', '.join(DISTRIBUTIONS)})")
    needed = _BOUNDS[distribution]
    allowed = {"distribution", "targets", *needed}
    extra = [k for k in spec if k not in allowed]
    if extra:
        raise fail(f"unknown key {extra[0]!r} for a {distribution} parameter (allowed: {', '.join(sorted(allowed))})")
    absent = [k for k in needed if k not in spec]
    if absent:
        raise fail(f"a {distribution} parameter needs {', '.join(needed)} (missing {', '.join(absent)})")

    targets = spec.get("targets", [name])
    targets = [targets] if isinstance(targets, str) else targets
    if not isinstance(targets, list) or not targets:
        raise fail("targets must be a non-empty list of config keys")
    for target in targets:
        if (problem := _config_key_problem(target)) is not None:
            raise fail(problem if "targets" not in spec else f"targets: {target}: {problem}")
    if len(set(targets)) != len(targets):
        raise fail(f"targets repeat a key: {targets}")

    if "values" in needed:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise fail("values must be a non-empty list")
        for i, v in enumerate(values):
            if any(_same(v, w) for w in values[:i]):
                raise fail(f"value {v!r} is listed twice")
        return Parameter(name, tuple(targets), distribution, values=tuple(values))

    bounds = {k: spec[k] for k in needed}
    for key, value in bounds.items():
        if not _is_number(value) or (distribution == "randint" and not isinstance(value, int)):
            kind = "an integer" if distribution == "randint" else "a finite number"
            raise fail(f"{key} must be {kind}, got {value!r}")
    if bounds["low"] >= bounds["high"]:
        raise fail(f"low ({bounds['low']}) must be below high ({bounds['high']})")
    if distribution == "loguniform" and bounds["low"] <= 0:
        raise fail(f"a loguniform low must be > 0, got {bounds['low']}")
    if distribution == "quniform" and bounds["q"] <= 0:
        raise fail(f"q must be > 0, got {bounds['q']}")
    # An integer field takes integers only; checking the bounds alone would let a float through.
    integer_targets = [t for t in targets if _is_integer_field(t)]
    draws_floats = distribution in ("uniform", "loguniform") or (
        distribution == "quniform" and not all(isinstance(b, int) for b in bounds.values()))
    if integer_targets and draws_floats:
        raise fail(f"{integer_targets[0]} is an integer field but a {distribution} distribution draws floats; "
                   "use randint, quniform with integer low, high and q, choice or a list of integers")
    return Parameter(name, tuple(targets), distribution, **bounds)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search space: a YAML path, or the name of one in ``search_spaces/``."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        path = SPACES_DIR / f"{path}.yaml"
    try:
        data = read_yaml(path)
    except (OSError, yaml.YAMLError) as err:
        raise SpaceError(f"{path}: cannot read the search space: {err}") from None
    return SearchSpace.from_dict(data, source=str(path))


def available_spaces(directory: str | Path = SPACES_DIR) -> list[Path]:
    """The shipped search-space files, sorted."""
    return sorted(Path(directory).glob("*.yaml"))

