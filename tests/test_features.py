"""Feature store: round trip, tensors and masks, and every kind of bad store named precisely."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from scd_core.features import (
    FeatureStoreError,
    FeatureStoreWriter,
    ModalityInfo,
    concat,
    load_split,
    read_split,
    split_path,
    validate_store,
)
from scd_core.features.__main__ import main as features_cli
from scd_core.tasks import LABEL_COLUMNS

DIMS = {"video": 4, "text": 6}


@pytest.fixture
def store(tmp_path):
    """A tiny valid store: MOSEI train (5 rows, one missing video) and BAH dev (3 rows)."""
    rng = np.random.default_rng(0)
    writer = FeatureStoreWriter(tmp_path, {m: ModalityInfo(encoder=f"test/{m}", dim=d) for m, d in DIMS.items()})
    emo = np.zeros((5, 7))
    emo[np.arange(5), [0, 4, 4, 1, 5]] = 1.0
    writer.write_split(
        "mosei", "train", [f"m{i}" for i in range(5)],
        {m: rng.normal(size=(5, d)) for m, d in DIMS.items()},
        {f"emo_{c}": emo[:, i] for i, c in enumerate(
            ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"])},
        present={"video": np.array([True, False, True, True, True])},
    )
    writer.write_split(
        "bah", "dev", ["b0", "b1", "b2"],
        {m: rng.normal(size=(3, d)) for m, d in DIMS.items()},
        {"ah": np.array([0, 1, 1])},
    )
    return tmp_path


def rewrite(root, corpus, split, change):
    """Apply ``change(table) -> table`` to a stored split, bypassing the writer."""
    path = split_path(root, corpus, split)
    pq.write_table(change(pq.read_table(path)), path)
    return path


def replace_column(table, name, array):
    return table.set_column(table.column_names.index(name), name, array)


def test_round_trip_and_tensors(store):
    arrays = read_split(store, "mosei", "train")
    assert list(arrays.sample_ids) == [f"m{i}" for i in range(5)]
    assert arrays.present["video"].tolist() == [True, False, True, True, True]
    assert np.all(arrays.features["video"][1] == 0)
    assert np.isnan(arrays.labels["ah"]).all()

    t = load_split(store, "mosei", "train", ["text", "video"])
    assert t.features["text"].shape == (5, 6) and t.features["text"].dtype == torch.float32
    assert t.modality_mask[:, 1].tolist() == [True, False, True, True, True]
    assert t.label_mask["emo"].all() and not t.label_mask["pt"].any() and not t.label_mask["ah"].any()
    assert t.labels["emo"].shape == (5, 7) and t.labels["ah"].dtype == torch.int64

    both = concat([t, load_split(store, "bah", "dev", ["text", "video"])])
    assert both.corpora == ("mosei", "bah") and len(both) == 8
    assert both.corpus_index.tolist() == [0] * 5 + [1] * 3
    assert both.labels["ah"][5:].tolist() == [0, 1, 1] and both.label_mask["ah"].sum() == 3
    batch = both.index(torch.tensor([0, 6]))
    assert list(batch.sample_ids) == ["m0", "b1"] and batch.labels["ah"][1] == 1

    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["corpora"] == {"mosei": {"train": 5}, "bah": {"dev": 3}}
    assert manifest["modalities"]["video"]["dim"] == 4


def test_validate_cli_accepts_valid_store(store, capsys):
    assert features_cli(["validate", str(store)]) == 0
    out = capsys.readouterr().out
    assert "mosei" in out and "bah" in out and "valid" in out
    assert features_cli(["summary", str(store)]) == 0


def _problems(root):
    splits, errors = validate_store(root)
    assert errors, "the bad store was accepted"
    return "\n".join(errors)


def test_wrong_feature_length(store):
    def change(table):
        values = table.column("f_text").to_pylist()
        values[2] = values[2][:5]
        return replace_column(table, "f_text", pa.array(values, pa.list_(pa.float32())))

    path = rewrite(store, "mosei", "train", change)
    msg = _problems(store)
    assert f"{path}: column f_text: row 2 (sample_id 'm2'): feature length 5 != manifest dim 6" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_features(store, bad):
    def change(table):
        values = table.column("f_video").to_pylist()
        values[3][1] = bad
        return replace_column(table, "f_video", pa.array(values, pa.list_(pa.float32())))

    path = rewrite(store, "mosei", "train", change)
    assert f"{path}: column f_video: row 3 (sample_id 'm3'): NaN or inf in features" in _problems(store)


def test_duplicate_sample_id(store):
    path = rewrite(store, "bah", "dev", lambda t: replace_column(t, "sample_id", pa.array(["b0", "b1", "b0"])))
    assert f"{path}: column sample_id: row 2 (sample_id 'b0'): duplicate sample_id" in _problems(store)


@pytest.mark.parametrize("column,value,row", [("ah", 2, 1), ("pt_openness", 1.5, 0), ("emo_fear", -0.1, 4)])
def test_label_out_of_range(store, column, value, row):
    corpus = "bah" if column == "ah" else "mosei"

    def change(table):
        values = table.column(column).to_pylist()
        values[row] = value
        return replace_column(table, column, pa.array(values, table.schema.field(column).type))

    if column.startswith("pt_"):  # a partial trait label is also reported; set them all
        def change(table):  # noqa: F811
            for c in [c for c in LABEL_COLUMNS if c.startswith("pt_")]:
                values = table.column(c).to_pylist()
                values[row] = value if c == column else 0.5
                table = replace_column(table, c, pa.array(values, pa.float32()))
            return table

    path = rewrite(store, corpus, "dev" if corpus == "bah" else "train", change)
    assert f"{path}: column {column}: row {row}" in (msg := _problems(store))
    assert "label out of range" in msg


def test_unknown_modality_column(store):
    path = rewrite(store, "bah", "dev", lambda t: t.append_column("f_smell", pa.array([[1.0]] * 3)))
    assert f"{path}: column f_smell: unknown modality 'smell'" in _problems(store)


def test_unknown_modality_in_manifest(store):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["modalities"]["smell"] = manifest["modalities"]["video"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert "field modalities.smell: unknown modality" in _problems(store)


def test_schema_version_mismatch(store):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (store / "manifest.json").write_text(json.dumps(manifest))
    msg = _problems(store)
    assert "manifest.json: field schema_version: store has 99, this code reads 1" in msg
    with pytest.raises(FeatureStoreError, match="schema_version"):
        read_split(store, "mosei", "train")


def test_read_split_raises_naming_place(store):
    rewrite(store, "bah", "dev", lambda t: replace_column(t, "sample_id", pa.array(["b0", "b0", "b0"])))
    with pytest.raises(FeatureStoreError, match=r"bah/dev.parquet: column sample_id: row 1 \(sample_id 'b0'\)"):
        read_split(store, "bah", "dev")


def test_corrupt_file_and_unlisted_split(store):
    split_path(store, "bah", "dev").write_bytes(b"not parquet")
    split_path(store, "fiv2", "train").parent.mkdir()
    split_path(store, "mosei", "train").rename(split_path(store, "fiv2", "train"))
    msg = _problems(store)
    assert "bah/dev.parquet: cannot read" in msg
    assert "fiv2/train.parquet: not listed" in msg
    assert "mosei/train.parquet: listed in" in msg


def test_writer_rejects_bad_input(tmp_path):
    writer = FeatureStoreWriter(tmp_path, {"video": ModalityInfo(encoder="x", dim=3)})
    with pytest.raises(FeatureStoreError, match="features 'video' have shape"):
        writer.write_split("mosei", "train", ["a"], {"video": np.zeros((1, 4))}, {})
    with pytest.raises(FeatureStoreError, match="unknown label column 'emo_joy'"):
        writer.write_split("mosei", "train", ["a"], {"video": np.zeros((1, 3))}, {"emo_joy": np.ones(1)})
    with pytest.raises(FeatureStoreError, match="unknown modalities"):
        FeatureStoreWriter(tmp_path / "other", {"smell": ModalityInfo(encoder="x", dim=3)})


def test_cli_exit_codes(store):
    ok = subprocess.run([sys.executable, "-m", "scd_core.features", "validate", str(store)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    rewrite(store, "bah", "dev", lambda t: replace_column(t, "ah", pa.array([0, 5, 1], pa.int8())))
    bad = subprocess.run([sys.executable, "-m", "scd_core.features", "validate", str(store)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "column ah: row 1 (sample_id 'b1'): label out of range [0, 1]" in bad.stderr


EMO = [f"emo_{c}" for c in ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")]


@pytest.mark.parametrize("neutral", ["zero", "absent"])
def test_writer_gives_rows_without_emotion_neutral(tmp_path, neutral):
    """Raw MOSEI intensities: neutral 0 (or no neutral column) where no emotion is present."""
    intensities = np.array([[0, 0, 0, 0, 0, 0],       # no emotion: neutral must become 1
                            [0, 1.5, 0, 0, 0.25, 0],  # emotions present: neutral 0
                            [0, 0, 0, 0, 0, 0]])
    labels = {c: intensities[:, i] for i, c in enumerate(EMO[1:])}
    if neutral == "zero":
        labels["emo_neutral"] = np.zeros(3)
    writer = FeatureStoreWriter(tmp_path, {"text": ModalityInfo(encoder="x", dim=2)})
    writer.write_split("mosei", "train", ["a", "b", "c"], {"text": np.zeros((3, 2))}, labels)
    writer.write_split("fiv2", "train", ["f"], {"text": np.zeros((1, 2))},
                       {f"pt_{t}": np.full(1, 0.5) for t in ("openness", "conscientiousness", "extraversion",
                                                              "agreeableness", "non_neuroticism")})
    assert validate_store(tmp_path)[1] == []
    stored = read_split(tmp_path, "mosei", "train").labels
    np.testing.assert_array_equal(stored["emo_neutral"], [1, 0, 1])
    np.testing.assert_array_equal(np.column_stack([stored[c] for c in EMO[1:]]), intensities)
    assert np.isnan(read_split(tmp_path, "fiv2", "train").labels["emo_neutral"]).all()  # no EMO label: none made


def test_emo_rows_without_mass_are_rejected_naming_row_and_sample(store):
    def change(table):  # row 0 was neutral; a store written before the writer set it
        values = table.column("emo_neutral").to_pylist()
        values[0] = 0.0
        return replace_column(table, "emo_neutral", pa.array(values, pa.float32()))

    path = rewrite(store, "mosei", "train", change)
    msg = _problems(store)
    assert f"{path}: column {','.join(EMO)}: row 0 (sample_id 'm0'): EMO label with no mass" in msg
    assert "row 1" not in msg


def test_empty_split_is_named_not_an_index_error(store):
    path = rewrite(store, "bah", "dev", lambda t: t.slice(0, 0))
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["corpora"]["bah"]["dev"] = 0
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert f"{path}: no rows" in _problems(store)
    with pytest.raises(FeatureStoreError, match="bah/dev.parquet: no rows"):
        read_split(store, "bah", "dev")


@pytest.mark.parametrize("manifest,field", [
    ([], "must be a JSON object, got list"),
    ({"schema_version": 1, "modalities": [], "corpora": {}}, "field modalities must be an object, got list"),
    ({"schema_version": 1, "modalities": {}, "corpora": {"bah": ["dev"]}},
     "field corpora.bah must map split names to row counts"),
    ({"schema_version": 1, "modalities": {"video": {"encoder": "x", "dim": True}}, "corpora": {}},
     "field modalities.video.dim must be a positive integer, got True"),
    ({"schema_version": 1, "modalities": {}, "corpora": {"bah": {"dev": "3"}}},
     "field corpora.bah.dev must be a row count, got '3'"),
])
def test_malformed_manifest_names_file_and_field(store, capsys, manifest, field):
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert features_cli(["validate", str(store)]) == 1
    assert f"{store / 'manifest.json'}: {field}" in capsys.readouterr().err


def test_float64_features_and_integer_ids_are_rejected(store):
    def change(table):
        table = replace_column(table, "f_text", pa.array(table.column("f_text").to_pylist(), pa.list_(pa.float64())))
        return replace_column(table, "sample_id", pa.array([0, 1, 2], pa.int64()))

    path = rewrite(store, "bah", "dev", change)
    msg = _problems(store)
    assert f"{path}: column sample_id: type int64: sample ids are strings" in msg
    path = rewrite(store, "bah", "dev", lambda t: replace_column(t, "sample_id", pa.array(["b0", "b1", "b2"])))
    assert f"{path}: column f_text: values of type double: features are float32 lists" in _problems(store)


def test_commands_name_a_store_that_is_a_file_or_holds_other_features(tmp_path, demo_store, capsys):
    from scd_core.features.__main__ import main as features_main
    from scd_core.synthetic import main as synthetic_main

    file = tmp_path / "notes.txt"
    file.write_text("not a store")
    assert features_main(["summary", str(file)]) == 1
    assert f"{file}/manifest.json: missing (not a feature store?)" in capsys.readouterr().err
    assert synthetic_main(["--out", str(file)]) == 2
    assert "Not a directory" in capsys.readouterr().err and file.read_text() == "not a store"
    manifest = (demo_store / "manifest.json").read_text()
    assert synthetic_main(["--out", str(demo_store), "--seed", "3"]) == 2  # other features: never mixed in
    assert f"{demo_store}/manifest.json: field modalities differs from the writer's" in capsys.readouterr().err
    assert (demo_store / "manifest.json").read_text() == manifest
