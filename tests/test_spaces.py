"""Search spaces: the shipped YAML files, the trials they produce, and the load-time errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform

from scd_core.config import ExperimentConfig, load_config, with_overrides
from tuning.spaces import SearchSpace, SpaceError, available_spaces, load_space

SHIPPED = {p.stem: p for p in available_spaces()}


def trial_configs(space: SearchSpace, strategy: str | None = None, samples: int = 8) -> list[dict]:
    """Every trial config Ray would pass for grid/oat; for optuna the baseline point, the
    distributions' bounds and seeded samples of the Ray domains themselves."""
    strategy = strategy or space.strategy
    param_space = space.param_space(strategy)
    if strategy in ("grid", "oat"):
        names = list(param_space)
        return [dict(zip(names, combo)) for combo in itertools.product(*(param_space[n]["grid_search"] for n in names))]
    rng = np.random.default_rng(0)
    configs = space.points_to_evaluate()
    configs += [{n: d.sample(random_state=rng) for n, d in param_space.items()} for _ in range(samples)]
    for end in (0, -1):  # the reachable extremes: first/last value, or the distribution's bounds
        configs.append({n: space.parameters[n].extremes()[end] if n in space.parameters else list(space.variants)[end]
                        for n in param_space})
    return configs


def build(space: SearchSpace, trial: dict, strategy: str | None = None) -> ExperimentConfig:
    return with_overrides(load_config(), space.resolve(trial, strategy))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- shipped spaces


def test_the_paper_spaces_ship():
    assert {"table15_model", "table16_ssl", "table1_ablations", "layers", "quick"} <= set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_trial_of_a_shipped_space_is_a_valid_config(name):
    space = load_space(SHIPPED[name])
    assert space.name == name and space.description
    trials = trial_configs(space)
    assert len(trials) >= space.num_trials(num_samples=1)
    for trial in trials:
        build(space, trial)  # raises ConfigError if any trial is invalid
    assert load_space(name) == space  # a bare name finds the shipped file


def test_trial_counts():
    layers = load_space("layers")  # Tables 13/14: one factor at a time from GAT + MHA
    assert layers.num_trials() == len(layers.oat_variants()) == 1 + 4 + 4
    ablations = load_space("table1_ablations")
    assert ablations.num_trials() == len(ablations.variants) == 16
    for name in ("table15_model", "table16_ssl"):
        space = load_space(name)
        expected = 1 + sum(len(p.values) - 1 for p in space.parameters.values())
        assert space.num_trials() == len(space.oat_variants()) == expected == 24
    quick = load_space("quick")
    assert quick.num_trials() == 4 and quick.num_trials(num_samples=9) == 9


@pytest.mark.parametrize("name", ["table15_model", "table16_ssl"])
def test_oat_trials_differ_from_the_baseline_in_exactly_one_factor(name):
    space = load_space(name)
    centre = build(space, {"variant": "baseline"}).to_dict()
    for trial in space.oat_variants():
        if trial == "baseline":
            continue
        cfg = build(space, {"variant": trial}).to_dict()
        changed = {f"{s}.{k}" for s in centre if isinstance(centre[s], dict) for k in centre[s]
                   if centre[s][k] != cfg[s][k]}
        param, _, value = trial.partition("=")
        assert changed == set(space.parameters[param].targets), trial
        assert str(space.resolve({"variant": trial})[space.parameters[param].targets[0]]) == value


def test_baselines_and_best_values_match_the_paper():
    # Tables 15/16 "Best value" are the config defaults; the searched lists contain them.
    defaults = load_config().to_dict()
    for name in ("table15_model", "table16_ssl"):
        for param in load_space(name).parameters.values():
            section, _, key = param.targets[0].partition(".")
            assert defaults[section][key] in param.values, param.name
    table15 = build(load_space("table15_model"), {"variant": "baseline"})
    assert (table15.model.hidden_dim, table15.model.out_features, table15.model.dropout, table15.optim.scheduler,
            table15.model.graph, table15.model.attention, table15.ssl.gradnorm) == (256, 256, 0.2, "none",
                                                                                 "unitary", "mha", False)
    table16 = build(load_space("table16_ssl"), {"variant": "baseline"})
    assert (table16.ssl.tau_emo, table16.ssl.tau_ah, table16.ssl.tau_pt, table16.ssl.alpha_ss, table16.ssl.lambda_,
            table16.model.hidden_dim, table16.ssl.gradnorm) == (0.8, 0.8, 0.5, 0.25, 0.1, 512, True)


def test_tied_targets_set_both_keys():
    space = load_space("table16_ssl")
    assert space.parameters["tau_emo_ah"].targets == ("ssl.tau_emo", "ssl.tau_ah")
    cfg = build(space, {"variant": "tau_emo_ah=0.5"})
    assert cfg.ssl.tau_emo == cfg.ssl.tau_ah == 0.5 and cfg.ssl.tau_pt == 0.5


def test_table1_variants_are_the_ablations():
    space = load_space("table1_ablations")
    cfg = {v: build(space, {"variant": v}) for v in space.variants}
    best = cfg["best"]
    assert best.model_dump() == load_config().model_dump()  # Exp-6 = the config's defaults
    assert (cfg["mcdm1"].model.graph, cfg["mcdm1"].model.attention, cfg["mcdm1"].model.hidden_dim) == ("gat", "mha", 256)
    assert (cfg["mcdm3"].model.graph, cfg["mcdm3"].model.attention) == ("unitary", "mta")
    assert cfg["tuned_model"].model == best.model and not cfg["tuned_model"].ssl.gradnorm
    assert cfg["no_graph"].model.graph == "none" and cfg["no_attention"].model.attention == "none"
    assert "video" not in cfg["no_video"].data.modalities and len(cfg["no_video"].data.modalities) == 3
    assert cfg["no_emo"].data.tasks == ["pt", "ah"] and cfg["no_emo"].data.train_corpora == ["fiv2", "bah"]
    assert cfg["no_pt"].data.train_corpora == ["mosei", "bah"] and cfg["no_ah"].data.tasks == ["emo", "pt"]


# ---------------------------------------------------------------------- Ray Tune objects


def test_param_space_returns_ray_tune_objects():
    quick = load_space("quick").param_space()
    assert isinstance(quick["model.hidden_dim"], Categorical) and quick["model.hidden_dim"].categories == [64, 128]
    assert isinstance(quick["optim.lr"], Float) and isinstance(quick["optim.lr"].get_sampler(), LogUniform)
    assert isinstance(quick["model.dropout"].get_sampler(), Uniform)
    assert quick["optim.lr"].lower == 3e-4 and quick["optim.lr"].upper == 3e-3

    space = SearchSpace.from_dict({"parameters": {
        "optim.epochs": {"distribution": "randint", "low": 2, "high": 5},
        "model.dropout": {"distribution": "quniform", "low": 0.0, "high": 0.3, "q": 0.1},
        "model.graph": ["gat", "unitary"]},
        "variants": {"full": {}, "no_attention": {"model.attention": "none"}}})
    optuna = space.param_space("optuna")
    assert isinstance(optuna["optim.epochs"], Integer) and (optuna["optim.epochs"].lower, optuna["optim.epochs"].upper) == (2, 5)
    assert isinstance(optuna["model.dropout"].get_sampler(), Quantized)
    assert isinstance(optuna["model.graph"], Categorical) and optuna["variant"].categories == ["full", "no_attention"]

    layers = load_space("layers").param_space("grid")
    assert layers == {"model.graph": {"grid_search": ["gat", "ncgnn", "edgnn", "unitary", "hgnn"]},
                      "model.attention": {"grid_search": ["mha", "mta", "crossmpt", "bica", "fa"]}}
    assert load_space("table16_ssl").param_space()["variant"]["grid_search"][:2] == ["baseline", "tau_emo_ah=0.5"]
    assert load_space("table1_ablations").param_space()["variant"]["grid_search"][0] == "mcdm1"
    # a list space is also an Optuna space (categorical dimensions) and an OAT one
    assert isinstance(load_space("layers").param_space("optuna")["model.graph"], Categorical)
    assert load_space("layers").num_trials("grid") == 25


def test_distributions_cannot_be_enumerated():
    quick = load_space("quick")
    for strategy in ("grid", "oat"):
        with pytest.raises(SpaceError, match=r"quick\.yaml: parameters\.model\.hidden_dim: a choice distribution"):
            quick.param_space(strategy)
    with pytest.raises(SpaceError, match="unknown strategy 'random'"):
        quick.param_space("random")


def test_optuna_searcher_takes_the_space_and_starts_at_the_baseline():
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("quick")
    searcher = OptunaSearch(metric="dev_score", mode="max", points_to_evaluate=space.points_to_evaluate(), seed=0)
    searcher.set_search_properties("dev_score", "max", space.param_space("optuna"))
    suggested = [searcher.suggest(f"trial_{i}") for i in range(3)]
    assert suggested[0] == space.baseline
    for trial in suggested:
        cfg = build(space, trial)
        assert cfg.optim.epochs == 4 and cfg.model.out_features == 64 and 3e-4 <= cfg.optim.lr <= 3e-3


# ---------------------------------------------------------------------- resolve


def test_resolve_layers_fixed_baseline_sample_and_variant():
    space = SearchSpace.from_dict({
        "fixed": {"model.dropout": 0.3, "optim.epochs": 3},
        "baseline": {"model.dropout": 0.1, "optim.lr": 1e-4},
        "parameters": {"model.dropout": [0.1, 0.2], "optim.lr": [1e-4, 1e-3]},
        "variants": {"plain": {}, "small": {"model.hidden_dim": 64, "optim.lr": 5e-4}}})
    assert space.resolve({"model.dropout": 0.2, "optim.lr": 1e-3, "variant": "plain"}, "grid") == {
        "model.dropout": 0.2, "optim.epochs": 3, "optim.lr": 1e-3}
    assert space.resolve({"model.dropout": 0.2, "optim.lr": 1e-3, "variant": "small"}, "grid")["optim.lr"] == 5e-4
    oat = space.oat_variants()
    assert list(oat) == ["baseline", "model.dropout=0.2", "optim.lr=0.001", "small"]  # empty "plain" = baseline
    assert space.resolve({"variant": "baseline"}, "oat") == {"model.dropout": 0.1, "optim.epochs": 3, "optim.lr": 1e-4}
    assert space.points_to_evaluate() == [{"model.dropout": 0.1, "optim.lr": 1e-4, "variant": "plain"}]
    # Ray's randint samples are NumPy integers; the overrides are plain Python
    value = space.resolve({"model.dropout": np.float64(0.2), "optim.lr": 1e-3, "variant": "plain"}, "grid")["model.dropout"]
    assert type(value) is float


@pytest.mark.parametrize("trial, strategy, match", [
    ({"model.dropout": 0.1, "optim.lr": 1e-4, "variant": "plain", "extra": 1}, "grid", r"unknown: \['extra'\]"),
    ({"model.dropout": 0.1, "variant": "plain"}, "optuna", r"missing: \['optim.lr'\]"),
    ({"model.dropout": 0.1, "optim.lr": 1e-4, "variant": "huge"}, "grid", "unknown grid variant 'huge'"),
    ({"variant": "model.dropout=0.7"}, "oat", "unknown oat variant"),
    ({"model.dropout": 0.1, "optim.lr": 1e-4, "variant": "plain"}, "oat", r"unknown: \['model.dropout', 'optim.lr'\]"),
])
def test_resolve_is_strict(trial, strategy, match):
    space = SearchSpace.from_dict({
        "baseline": {"model.dropout": 0.1, "optim.lr": 1e-4},
        "parameters": {"model.dropout": [0.1, 0.2], "optim.lr": [1e-4, 1e-3]}, "variants": {"plain": {}}})
    with pytest.raises(SpaceError, match=match):
        space.resolve(trial, strategy)


def test_points_to_evaluate_needs_every_baseline_and_optuna_needs_samples():
    space = SearchSpace.from_dict({"parameters": {"model.dropout": [0.1, 0.2]}})
    assert space.points_to_evaluate() == [] and space.strategy == "optuna"
    with pytest.raises(SpaceError, match="num_samples"):
        space.num_trials()
    assert space.num_trials(num_samples=3) == 3


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_to_dict_reads_back(name):
    space = load_space(SHIPPED[name])
    assert SearchSpace.from_dict(space.to_dict(), source="copy") == space


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    space = load_space(write(tmp_path, "parameters:\n  optim.lr: {distribution: loguniform, low: 1e-5, high: 1e-3}\n"))
    assert space.parameters["optim.lr"].low == 1e-5


# ---------------------------------------------------------------------- bad files

BAD = [
    ("parameters: [unclosed", "cannot read the search space"),
    ("- just\n- a list\n", "must be a mapping"),
    ("parameter:\n  model.dropout: [0.1]\n", "parameter: unknown top-level key"),
    ("parameters:\n  model.hidden_dimm: [128]\n",
     "parameters.model.hidden_dimm: unknown config key (model has: hidden_dim, out_features,"),
    ("parameters:\n  modle.dropout: [0.1]\n", "parameters.modle.dropout: unknown config key (the config has: seed,"),
    ("parameters:\n  model: [1]\n", "parameters.model: model is a config section"),
    ("parameters:\n  model.dropout.x: [1]\n", "model.dropout is a config field, not a section"),
    ("parameters:\n  model.dropout: [0.1, 1.5]\n", "parameters.model.dropout: value 1.5: invalid configuration"),
    ("parameters:\n  model.num_heads: [8, 7]\n", "parameters.model.num_heads: value 7: invalid configuration"),
    ("parameters:\n  model.graph: [gat, transformer]\n", "unknown graph layer 'transformer'"),
    ("parameters:\n  model.dropout: []\n", "parameters.model.dropout: values must be a non-empty list"),
    ("parameters:\n  model.dropout: [0.1, 0.1]\n", "parameters.model.dropout: value 0.1 is listed twice"),
    ("parameters:\n  model.dropout: 0.1\n", "parameters.model.dropout: give a list of values"),
    ("parameters:\n  model.dropout: {distribution: uniform, low: 0.3, high: 0.1}\n",
     "parameters.model.dropout: low (0.3) must be below high (0.1)"),
    ("parameters:\n  model.dropout: {distribution: uniform, low: 0.0, high: 1.0}\n",
     "parameters.model.dropout: value 1.0: invalid configuration"),
    ("parameters:\n  optim.lr: {distribution: loguniform, low: 0, high: 0.1}\n", "optim.lr: a loguniform low must be > 0"),
    ("parameters:\n  optim.epochs: {distribution: randint, low: 1.5, high: 4}\n", "optim.epochs: low must be an integer"),
    ("parameters:\n  optim.lr: {distribution: normal, low: 0, high: 1}\n", "optim.lr: unknown distribution 'normal'"),
    ("parameters:\n  optim.lr: {distribution: uniform, low: 0.1, high: 0.2, q: 0.1}\n", "optim.lr: unknown key 'q'"),
    ("parameters:\n  optim.lr: {distribution: quniform, low: 0.1, high: 0.2}\n", "optim.lr: a quniform parameter needs"),
    ("parameters:\n  tau: {values: [0.5], targets: [ssl.tau_emo, ssl.tau_ahh]}\n",
     "parameters.tau: targets: ssl.tau_ahh: unknown config key (ssl has:"),
    ("parameters:\n  tau: {values: [0.5], targets: [ssl.tau_emo]}\n  ssl.tau_emo: [0.6]\n",
     "parameters.ssl.tau_emo: ssl.tau_emo is already set by parameter tau"),
    ("parameters:\n  variant: [a]\n", "parameters.variant: parameter names are non-empty strings other than 'variant'"),
    ("baseline:\n  model.hidden_dim: 256\nparameters:\n  model.dropout: [0.1]\n",
     "baseline.model.hidden_dim: not a parameter (parameters: model.dropout)"),
    ("baseline:\n  model.dropout: 0.15\nparameters:\n  model.dropout: [0.1, 0.2]\n",
     "baseline.model.dropout: 0.15 is not among the parameter's values [0.1, 0.2]"),
    ("baseline:\n  model.hidden_dim: 100\nparameters:\n  model.hidden_dim: [100, 128]\n",
     "baseline: invalid configuration"),
    ("strategy: random\nparameters:\n  model.dropout: [0.1]\n", "strategy: unknown strategy 'random'"),
    ("strategy: grid\nparameters:\n  model.dropout: {distribution: uniform, low: 0.0, high: 0.3}\n",
     "parameters.model.dropout: a uniform distribution cannot be enumerated by grid"),
    ("strategy: oat\nparameters:\n  model.dropout: [0.1, 0.2]\n", "baseline.model.dropout: oat needs a baseline"),
    ("num_samples: 0\nparameters:\n  model.dropout: [0.1]\n", "num_samples: must be an integer >= 1"),
    ("fixed:\n  optim.epoch: 3\nparameters:\n  model.dropout: [0.1]\n", "fixed.optim.epoch: unknown config key"),
    ("fixed:\n  optim.epochs: 0\nparameters:\n  model.dropout: [0.1]\n", "fixed: invalid configuration"),
    ("fixed: [1]\nparameters:\n  model.dropout: [0.1]\n", "fixed: must be a mapping"),
    ("variants:\n  a: {model.grph: none}\n", "variants.a.model.grph: unknown config key"),
    ("variants:\n  a: {data.tasks: []}\n", "variants.a: invalid configuration"),
    ("variants:\n  baseline: {}\n", "variants.baseline: variant names"),
    ("name: empty\n", "parameters: nothing to search"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_files_fail_naming_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_missing_file_fails():
    with pytest.raises(SpaceError, match="no_such_space.yaml: cannot read"):
        load_space("no_such_space")
