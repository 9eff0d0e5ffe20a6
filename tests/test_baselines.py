"""The trivial baselines, against the same predictions scored independently with scikit-learn."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from scd_core.baselines import trivial_baselines
from scd_core.tasks import EMO_CLASSES


def labels(store, corpus, split, prefix):
    frame = pd.read_parquet(store / corpus / f"{split}.parquet")
    return frame[[c for c in frame.columns if c.startswith(prefix)]]


def test_baselines_match_scikit_learn_on_the_demo_corpora(demo_store):
    scores, what = trivial_baselines(demo_store, ["text"], {"mosei": "dev", "bah": "dev", "meld": "dev"},
                                     n_resamples=10)

    train = labels(demo_store, "bah", "train", "ah")["ah"].to_numpy()
    dev = labels(demo_store, "bah", "dev", "ah")["ah"].to_numpy()
    majority = np.bincount(train.astype(int)).argmax()
    pred = np.full(len(dev), majority)
    assert scores["bah_mf1"]["value"] == pytest.approx(f1_score(dev, pred, average="macro", labels=[0, 1]))
    assert scores["bah_uar"]["value"] == pytest.approx(recall_score(dev, pred, average="macro", labels=[0, 1]))

    emotions = [f"emo_{e}" for e in EMO_CLASSES[1:]]
    train = labels(demo_store, "mosei", "train", "emo_")[emotions].to_numpy() > 0
    dev = labels(demo_store, "mosei", "dev", "emo_")[emotions].to_numpy() > 0
    patterns, counts = np.unique(train, axis=0, return_counts=True)
    pred = np.broadcast_to(patterns[counts.argmax()], dev.shape)
    assert scores["mosei_mmf1"]["value"] == pytest.approx(
        np.mean([f1_score(dev[:, k], pred[:, k], average="macro", labels=[0, 1]) for k in range(6)]))
    assert scores["mosei_mwacc"]["value"] == pytest.approx(
        np.mean([balanced_accuracy_score(dev[:, k], pred[:, k]) if dev[:, k].any() and not dev[:, k].all() else 0.5
                 for k in range(6)]))

    meld = labels(demo_store, "meld", "dev", "emo_")[[f"emo_{e}" for e in EMO_CLASSES]].to_numpy().argmax(axis=1)
    assert scores["meld_uar"]["value"] == pytest.approx(
        recall_score(meld, np.zeros_like(meld), average="macro", labels=range(7), zero_division=0))
    assert what["meld"] == "always neutral" and "fiv2" not in what
