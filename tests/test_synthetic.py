"""Synthetic corpora: deterministic, realistic label marginals and correlations, learnable signal."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from scd_core import synthetic
from scd_core.features import read_split, validate_store
from scd_core.tasks import EMO_CLASSES, PAPER_FEATURE_DIMS, TASKS


def test_demo_store_is_valid_with_paper_dims(demo_store):
    splits, errors = validate_store(demo_store)
    assert errors == []
    assert {(s.corpus, s.split) for s in splits} == {
        (c, s) for c, sizes in synthetic.PRESETS["demo"].sizes.items() for s in sizes
    }
    for s in splits:
        assert {m: f.shape[1] for m, f in s.features.items()} == PAPER_FEATURE_DIMS
        present = np.stack(list(s.present.values()), axis=1)
        assert present.any(axis=1).all() and not present.all()  # some samples miss a modality
        own = TASKS[synthetic.CORPORA[s.corpus].task].label_columns
        assert not np.isnan(s.labels[own[0]]).any()
        others = [c for c in s.labels if c not in own]
        assert all(np.isnan(s.labels[c]).all() for c in others)  # each corpus labels only its task


def test_deterministic_for_a_seed(tmp_path):
    small = {"video": 8, "text": 8}
    a = synthetic.generate(tmp_path / "a", "demo", seed=3, dims=small)
    b = synthetic.generate(tmp_path / "b", "demo", seed=3, dims=small)
    c = synthetic.generate(tmp_path / "c", "demo", seed=4, dims=small)
    ra, rb, rc = (read_split(r, "fiv2", "dev") for r in (a, b, c))
    assert np.array_equal(ra.features["video"], rb.features["video"])
    assert np.array_equal(ra.labels["pt_openness"], rb.labels["pt_openness"])
    assert not np.array_equal(ra.features["video"], rc.features["video"])


def test_latent_correlations_follow_fig8():
    s = synthetic.sample_latent(50000, "mosei", np.random.default_rng(0))
    r = np.corrcoef(s.T)
    i = {n: k for k, n in enumerate(synthetic.LATENT_NAMES)}
    for emotion in ("sadness", "fear", "disgust"):
        assert r[i["ambivalence"], i[emotion]] > 0.15
    assert r[i["ambivalence"], i["happiness"]] < -0.15
    for trait in ("extraversion", "conscientiousness", "non_neuroticism"):
        assert r[i["happiness"], i[trait]] > 0.1
    assert r[i["anger"], i["disgust"]] > 0.4


def test_label_marginals_like_the_real_corpora():
    rng = np.random.default_rng(0)
    mosei = synthetic.make_labels("mosei", synthetic.sample_latent(20000, "mosei", rng), rng)
    presence = {c: (mosei[f"emo_{c}"] > 0).mean() for c in EMO_CLASSES}
    assert max(presence, key=presence.get) == "happiness"
    assert 0.05 < presence["neutral"] < 0.4  # Neutral exactly when no emotion is present
    emotions = np.stack([mosei[f"emo_{c}"] for c in EMO_CLASSES[1:]], axis=1)
    assert np.array_equal(mosei["emo_neutral"] > 0, emotions.sum(axis=1) == 0)
    assert ((emotions > 0).sum(axis=1) > 1).mean() > 0.05  # multi-label
    dist = np.stack([mosei[f"emo_{c}"] for c in EMO_CLASSES], axis=1)
    assert np.allclose(dist.sum(axis=1), 1)

    fiv2 = synthetic.make_labels("fiv2", synthetic.sample_latent(20000, "fiv2", rng), rng)
    traits = np.stack(list(fiv2.values()), axis=1)
    assert ((traits >= 0.4) & (traits <= 0.7)).mean() > 0.75 and traits.min() >= 0 and traits.max() <= 1

    bah = synthetic.make_labels("bah", synthetic.sample_latent(20000, "bah", rng), rng)["ah"]
    assert 0.5 < bah.mean() < 0.65

    meld = synthetic.make_labels("meld", synthetic.sample_latent(20000, "meld", rng), rng)
    onehot = np.stack([meld[f"emo_{c}"] for c in EMO_CLASSES], axis=1)
    assert np.all(onehot.sum(axis=1) == 1)  # single-label
    share = dict(zip(EMO_CLASSES, onehot.mean(axis=0)))
    assert max(share, key=share.get) == "neutral" and share["fear"] < 0.05 and share["disgust"] < 0.05


def _xy(root, corpus, split):
    a = read_split(root, corpus, split)
    x = np.concatenate([a.features[m] for m in sorted(a.features)], axis=1)
    return x, a.labels


def test_simple_model_beats_chance_on_every_task(demo_store):
    """Logistic/ridge regression on the concatenated features, scored on the dev split."""
    def fit(corpus):
        x_train, y_train = _xy(demo_store, corpus, "train")
        x_dev, y_dev = _xy(demo_store, corpus, "dev")
        scaler = StandardScaler().fit(x_train)
        return scaler.transform(x_train), y_train, scaler.transform(x_dev), y_dev

    x, y, xd, yd = fit("mosei")
    for emotion in ("happiness", "sadness", "anger"):
        clf = LogisticRegression(C=0.01, max_iter=300).fit(x, y[f"emo_{emotion}"] > 0)
        assert balanced_accuracy_score(yd[f"emo_{emotion}"] > 0, clf.predict(xd)) > 0.62, emotion

    x, y, xd, yd = fit("fiv2")
    for trait in TASKS["pt"].label_columns:
        pred = Ridge(alpha=3000.0).fit(x, y[trait]).predict(xd)
        mae, baseline = np.abs(pred - yd[trait]).mean(), np.abs(y[trait].mean() - yd[trait]).mean()
        assert mae < 0.85 * baseline, trait
        assert np.corrcoef(pred, yd[trait])[0, 1] > 0.5, trait

    x, y, xd, yd = fit("bah")
    clf = LogisticRegression(C=0.01, max_iter=300).fit(x, y["ah"])
    assert balanced_accuracy_score(yd["ah"], clf.predict(xd)) > 0.65


@pytest.mark.slow
def test_paper_preset_sizes_and_validity(tmp_path):
    root = synthetic.generate(tmp_path / "paper", "paper", seed=0)
    splits, errors = validate_store(root)
    assert errors == []
    sizes = {(s.corpus, s.split): len(s) for s in splits}
    assert sizes[("mosei", "train")] == 16327 and sizes[("fiv2", "dev")] == 2000
    assert sizes[("bah", "test")] == 392 and sizes[("meld", "test")] == 2610
