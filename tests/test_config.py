"""Experiment configuration: paper defaults, YAML + overrides, errors that name the field."""

from pathlib import Path

import pytest
import yaml

from scd_core.config import ConfigError, ExperimentConfig, load_config, with_overrides


def test_defaults_are_the_papers_best_values():
    cfg = load_config()
    assert (cfg.model.hidden_dim, cfg.model.out_features, cfg.model.num_heads) == (512, 512, 8)
    assert cfg.model.dropout == 0.15 and (cfg.model.graph, cfg.model.attention) == ("unitary", "mha")
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.scheduler) == ("adam", 1e-4, "plateau")
    s = cfg.ssl
    assert (s.tau_emo, s.tau_pt, s.tau_ah) == (0.6, 0.6, 0.6)
    assert (s.alpha_s, s.alpha_ss, s.eta_s, s.eta_ss, s.lambda_, s.w_floor) == (1.25, 1.0, 0.01, 0.005, 0.3, 1e-3)
    assert cfg.data.modalities == ["video", "audio", "text", "behavior"]
    assert cfg.data.tasks == ["emo", "pt", "ah"]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  hidden_dim: 256\n  graph: gat\nssl:\n  lambda: 0.2\n")
    cfg = load_config(path, ["model.dropout=0.3", "data.tasks=[emo, ah]", "optim.optimizer=lion"])
    assert cfg.model.hidden_dim == 256 and cfg.model.graph == "gat" and cfg.model.dropout == 0.3
    assert cfg.ssl.lambda_ == 0.2 and cfg.data.tasks == ["emo", "ah"] and cfg.optim.optimizer == "lion"
    assert cfg.to_dict()["ssl"]["lambda"] == 0.2
    assert ExperimentConfig.model_validate(cfg.to_dict()) == cfg  # round trip through plain data


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.dropout=1.5", "model.dropout: Input should be less than 1"),
        ("model.hidden_dim=0", "model.hidden_dim: Input should be greater than or equal to 2"),
        ("optim.optimizer=adagrad", "optim.optimizer: Input should be 'adam', 'adamw', 'sgd', 'rmsprop' or 'lion'"),
        ("optim.scheduler=step", "optim.scheduler: Input should be 'none', 'plateau', 'cosine' or 'onecycle'"),
        ("model.graph=gcn", "model.graph: unknown graph layer 'gcn'; choose one of"),
        ("model.attention=lstm", "model.attention: unknown attention layer 'lstm'; choose one of"),
        ("ssl.tau_pt=0.4", "ssl.tau_pt: Input should be greater than or equal to 0.5"),
        ("ssl.lambda=-1", "ssl.lambda: Input should be greater than or equal to 0"),
        ("data.modalities=[video, smell]", "data.modalities.1: Input should be 'video', 'audio', 'text' or 'behavior'"),
        ("data.tasks=[]", "data.tasks: at least one task is required"),
        ("data.tasks=[emo, emo]", "data.tasks: tasks must be unique"),
        ("model.num_heads=7", "hidden_dim (512) must be divisible by num_heads (7)"),
        ("model.hiden_dim=3", "model.hiden_dim: Extra inputs are not permitted"),
        ("device=tpu", "device: String should match pattern"),
    ],
)
def test_invalid_values_name_field_and_range(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)


def test_bad_override_syntax_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="not of the form section.field=value"):
        load_config(None, ["model.hidden_dim"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_graph_self_loops_is_a_config_switch_of_layers_that_have_one():
    assert load_config(None, []).model.graph_self_loops is None  # the layer's own default
    assert load_config(None, ["model.graph_self_loops=true"]).model.graph_self_loops is True
    assert load_config(None, ["model.graph=gat", "model.graph_self_loops=null"]).model.graph_self_loops is None
    with pytest.raises(ConfigError, match="model: .*graph_self_loops: graph layer 'gat' has no self-loop switch"):
        load_config(None, ["model.graph=gat", "model.graph_self_loops=false"])


def test_graph_self_loops_is_searchable_from_a_space():
    from tuning.spaces import SearchSpace

    space = SearchSpace.from_dict({"strategy": "grid", "parameters": {"model.graph_self_loops": [None, True, False]}})
    values = [with_overrides(load_config(), space.resolve({"model.graph_self_loops": v}, "grid")).model.graph_self_loops
              for v in space.param_space("grid")["model.graph_self_loops"]["grid_search"]]
    assert values == [None, True, False]


def test_unknown_key_suggests_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"model.hiddendim: .*did you mean model.hidden_dim\?"):
        load_config(None, ["model.hiddendim=256"])
    with pytest.raises(ConfigError, match=r"did you mean ssl.lambda\?"):
        load_config(None, ["ssl.lamda=0.2"])


def test_printed_defaults_are_described_and_read_back():
    from scd_core.config import ExperimentConfig, build_config, describe

    text = describe()
    assert "  hidden_dim: 512\n" in text
    assert "  modality_dropout: 0.0  # training only:" in text
    assert "model:  # MCDM architecture (paper section 2.3, Table 15)\n" in text
    assert build_config(yaml.safe_load(text)) == ExperimentConfig()
    changed = describe(load_config(None, ["ssl.lambda=0.2"]))
    assert "  lambda: 0.2  # SSL budget" in changed


def test_the_example_experiment_config_is_the_papers_best():
    """configs/experiment.yaml says it writes out the defaults (MCDM-2, Tables 15-16): keep it so."""
    from scd_core.config import ExperimentConfig, load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "experiment.yaml"
    assert load_config(str(path)) == ExperimentConfig()


def test_an_extraction_config_names_the_key_meant_at_any_depth(tmp_path):
    """Suggestions come from the config being read (here the extraction's), through lists,
    dicts and optional sections."""
    from extraction.config import load_extraction_config

    path = tmp_path / "extract.yaml"
    path.write_text("sources: [{corpus: mosei, split: train, videos: ., colums: {}, group_split: {grop: x}}]\n"
                    "video_encodr: {name: clip}\nresources: {decode: {num_cpu: 1}}\n")
    with pytest.raises(ConfigError) as err:
        load_extraction_config(path)
    for typo, meant in [("video_encodr", "video_encoder"), ("sources.0.colums", "sources.0.columns"),
                        ("sources.0.group_split.grop", "sources.0.group_split.group"),
                        ("resources.decode.num_cpu", "resources.decode.num_cpus")]:
        assert f"{typo}: Extra inputs are not permitted; did you mean {meant}?" in str(err.value), str(err.value)


def test_a_yaml_alias_bomb_gets_a_short_error_naming_each_key(tmp_path):
    """Nested YAML aliases make a value of 9^8 (43 million) items from 9 lines; the error names
    the keys and shows a bounded excerpt of each value (it used to print 226 MB)."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "model: {hidden_dim: 64}"]) + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(bomb, [])
    message = str(err.value)
    assert all(f"  a{i}: Extra inputs are not permitted (got [" in message for i in range(8))
    assert len(message) < 4000


def test_a_binary_file_given_as_config_is_named(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes([0xC9, 0x00, 0xFF]) * 100)
    with pytest.raises(ConfigError, match=rf"{binary}: not UTF-8 text \(invalid continuation byte at byte 0\)"):
        load_config(binary, [])
