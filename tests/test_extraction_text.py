"""The text-only path: the authors' published CSVs -> a valid feature store -> training runs on it."""

import csv
from pathlib import Path

import pytest
import ray
import torch

from extraction.config import load_extraction_config
from extraction.manifest import ManifestError, read_sources
from extraction.pipeline import run_extraction
from scd_core.config import load_config
from scd_core.features import read_split, validate_store
from scd_core.data import load_training_data
from scd_core.trainer import Trainer
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
REAL_TEXT = SHARED_DATA / "real_text"
pytestmark = pytest.mark.skipif(not REAL_TEXT.exists(), reason=f"{REAL_TEXT} is absent")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def config(tmp_path, limit=30, mosei_limit=250, meld_limit=100):
    """The shipped config on the first rows of each table (MOSEI's first rows come from few
    videos, so it needs more of them to fill three splits; MELD's fill whole batches of rows
    without descriptions)."""
    cfg = load_extraction_config(ROOT / "configs" / "extract_real_text.yaml",
                                 [f"output={tmp_path / 'store'}", f"data_root={REAL_TEXT}"])
    for source in cfg.sources:
        source.limit = {"mosei": mosei_limit, "meld": meld_limit}.get(source.corpus, limit)
    return cfg


def test_real_text_becomes_a_valid_store_that_trains(local_ray, tmp_path):
    cfg = config(tmp_path)
    summary = run_extraction(cfg, progress=False)
    splits, errors = validate_store(cfg.output)
    assert errors == []
    assert {(s.corpus, s.split) for s in splits} >= {("mosei", "train"), ("mosei", "dev"), ("fiv2", "train"),
                                                     ("fiv2", "dev"), ("bah", "train"), ("bah", "test"),
                                                     ("meld", "dev")}
    meld = read_split(cfg.output, "meld", "dev")
    assert meld.present["text"].all() and not meld.present["behavior"].any()  # MELD has no descriptions
    assert meld.features["text"].shape[1] == 768  # MiniLM: mean || std of 384-dim token embeddings
    bah = read_split(cfg.output, "bah", "test")
    assert set(bah.labels["ah"]) <= {0.0, 1.0} and bah.present["behavior"].all()
    mosei = read_split(cfg.output, "mosei", "train")
    video_ids = {sid.rsplit("_", 2)[0] for sid in mosei.sample_ids}
    other = {sid.rsplit("_", 2)[0] for s in ("dev", "test") for sid in read_split(cfg.output, "mosei", s).sample_ids}
    assert not video_ids & other  # whole videos stay in one split
    assert sum(summary.rows.values()) == 250 + 3 * 30 + 100

    run = load_config(None, ["data.modalities=[text, behavior]", "model.hidden_dim=32", "model.out_features=32",
                             "model.num_heads=4", "optim.epochs=2", "optim.lr=1e-3"])
    data = load_training_data(run, cfg.output, torch.device("cpu"))
    result = Trainer(run, data).fit()
    assert len(result.history) == 2 and result.history[-1].metrics["bah_uar"] >= 0


def test_rerun_skips_written_samples_and_keeps_them(local_ray, tmp_path):
    cfg = config(tmp_path, limit=10, mosei_limit=10, meld_limit=10)
    first = run_extraction(cfg, progress=False)
    parts = sorted((tmp_path / "store" / "_parts").rglob("part-*.parquet"))
    second = run_extraction(cfg, progress=False)
    assert second.skipped == sum(first.rows.values()) == 50
    assert sorted((tmp_path / "store" / "_parts").rglob("part-*.parquet")) == parts  # nothing recomputed
    assert second.rows == first.rows


def test_bad_manifest_names_file_row_and_column(tmp_path):
    bad = tmp_path / "bah.csv"
    with open(REAL_TEXT / "bah_dev.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[2]["presence_full"] = "7"  # file row 4: the header is row 1
    with open(bad, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cfg = config(tmp_path)
    cfg.sources = [s for s in cfg.sources if s.manifest == "bah_dev.csv"]
    cfg.sources[0].manifest = str(bad)
    cfg.sources[0].limit = None
    with pytest.raises(ManifestError, match=r"bah.csv: row 4, column presence_full: 7.0 outside \[0, 1\] for ah"):
        read_sources(cfg)


def test_sample_id_templates_name_columns_only(tmp_path):
    """``columns.sample_id`` is a str.format template over each CSV row: attribute and index
    lookups ({clip.__class__}), conversions and long specs ({clip:>999999999}, a GB per row) are
    refused when the config loads; a spec the value does not take names its row."""
    from scd_core.config import ConfigError

    (tmp_path / "clips.csv").write_text("clip,text\na1,hello there\nb2,good morning\n")
    yaml_text = ("output: out\ndata_root: {root}\nsources:\n  - corpus: unlabelled\n    split: test\n"
                 "    manifest: clips.csv\n    columns: {{sample_id: '{template}', transcript: text}}\n")
    path = tmp_path / "extract.yaml"

    def load(template):
        path.write_text(yaml_text.format(root=tmp_path, template=template))
        return load_extraction_config(path)

    assert [r["sample_id"] for r in read_sources(load("id-{clip:0>4}"))] == ["id-00a1", "id-00b2"]
    for template in ("{clip.__class__}", "{clip[0]}", "{0}", "{clip!r}", "{clip:>999999999}", "{clip"):
        with pytest.raises(ConfigError, match=r"sources\.0\.columns\.sample_id: sample_id template"):
            load(template)
    with pytest.raises(ManifestError, match=r"clips.csv: row 2: sample_id template '\{clip:d\}': Unknown format code"):
        read_sources(load("{clip:d}"))


def test_an_output_holding_another_store_is_refused_before_any_work(tmp_path):
    """Extracting into a store of other features used to run every sample, then fail when the store
    was written (its manifest differs), leaving its parts in that store's folder."""
    from extraction.pipeline import PARTS, check_output
    from scd_core.features import FeatureStoreError
    from scd_core.synthetic import generate

    other = generate(tmp_path / "synthetic", "demo", 0, dims={"video": 4, "audio": 4, "text": 4, "behavior": 4})
    (tmp_path / "clips.csv").write_text("clip,text\na1,hello there\n")
    path = tmp_path / "extract.yaml"
    path.write_text(f"output: {other}\ndata_root: {tmp_path}\nmodalities: [text]\nsources:\n  - corpus: unlabelled\n"
                    "    split: test\n    manifest: clips.csv\n    columns: {sample_id: '{clip}', transcript: text}\n")
    cfg = load_extraction_config(path)
    with pytest.raises(FeatureStoreError, match=r"synthetic: holds a feature store that no extraction wrote there "
                                                r"\(scd_core.synthetic --preset demo --seed 0\)"):
        run_extraction(cfg, progress=False)
    assert not (other / PARTS).exists()
    (other / PARTS).mkdir()  # as if an extraction of all four modalities had written it
    with pytest.raises(FeatureStoreError, match=r"its store has modalities \['audio', 'behavior', 'text', 'video'\], "
                                                r"this extraction writes \['text'\]"):
        check_output(cfg)
    file = tmp_path / "notes.txt"
    file.write_text("")
    with pytest.raises(FeatureStoreError, match="a file, not a folder"):
        check_output(load_extraction_config(path, [f"output={file}"]))
