"""Metrics: agreement with scikit-learn/SciPy, hand-computed cases, degenerate cases, bootstrap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from scd_core.metrics import (
    confusion_matrix,
    Interval,
    bootstrap_ci,
    friedman,
    macc,
    mccc,
    mccc_pooled,
    mean_rank,
    mf1,
    mf1_present,
    mmf1,
    mosei_decode,
    mosei_targets,
    mwacc,
    uar,
    wf1,
)

SEEDS = range(5)


# --- reference implementations built from sklearn / scipy --------------------------------


def ref_mwacc(t: np.ndarray, p: np.ndarray) -> float:
    # sklearn warns on one-class columns; those are among the cases under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = [skm.balanced_accuracy_score(t[:, k], p[:, k]) for k in range(t.shape[1])]
    return float(np.mean(scores))


def ref_mmf1(t: np.ndarray, p: np.ndarray) -> float:
    # The authors' measures.py: per emotion, classification_report's macro average.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined precision / recall of a class are among the cases
        scores = [skm.classification_report(t[:, k], p[:, k], output_dict=True)["macro avg"]["f1-score"]
                  for k in range(t.shape[1])]
    return float(np.mean(scores))


def ref_mf1_present(t: np.ndarray, p: np.ndarray) -> float:
    scores = [skm.f1_score(t[:, k], p[:, k], zero_division=0) for k in range(t.shape[1])]
    return float(np.mean(scores))


def ref_macc(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(1 - skm.mean_absolute_error(t, p, multioutput="raw_values")))


def ref_ccc(x: np.ndarray, y: np.ndarray) -> float:
    # Textbook form via Pearson r: CCC = 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2), 1/N moments.
    r = stats.pearsonr(x, y).statistic
    sx, sy = x.std(), y.std()
    return 2 * r * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


def ref_mccc(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([ref_ccc(t[:, k], p[:, k]) for k in range(t.shape[1])]))


def ref_mccc_pooled(t: np.ndarray, p: np.ndarray) -> float:
    return float(ref_ccc(t.ravel(), p.ravel()))


def ref_mf1(t: np.ndarray, p: np.ndarray, c: int) -> float:
    return skm.f1_score(t, p, labels=range(c), average="macro", zero_division=0)


def ref_wf1(t: np.ndarray, p: np.ndarray, c: int) -> float:
    return skm.f1_score(t, p, labels=range(c), average="weighted", zero_division=0)


def ref_uar(t: np.ndarray, p: np.ndarray, c: int) -> float:
    return skm.recall_score(t, p, labels=np.unique(t), average="macro", zero_division=0)


Pair = tuple[np.ndarray, np.ndarray]


def random_presence(rng: np.random.Generator, shape: tuple[int, ...]) -> Pair:
    # Sparse emotions, so one-class columns occur in small samples too. The last emotion
    # never occurs in the target; the prediction finds it now and then.
    rates = rng.uniform(0.05, 0.5, size=shape[-1])
    t = rng.random(shape) < rates
    t[..., -1] = False
    p = np.where(rng.random(shape) < 0.7, t, rng.random(shape) < rates)
    return t, p


def random_traits(rng: np.random.Generator, shape: tuple[int, ...]) -> Pair:
    t = rng.random(shape)
    return t, np.clip(0.6 * t + 0.4 * rng.random(shape), 0, 1)


def random_classes(rng: np.random.Generator, shape: tuple[int, ...], c: int) -> Pair:
    t = rng.integers(0, c, size=shape)
    p = np.where(rng.random(shape) < 0.5, t, rng.integers(0, c, size=shape))
    return t, p


# --- agreement with sklearn/scipy on random data ------------------------------------------

MULTILABEL = [(mwacc, ref_mwacc), (mmf1, ref_mmf1), (mf1_present, ref_mf1_present)]
TRAITS = [(macc, ref_macc), (mccc, ref_mccc), (mccc_pooled, ref_mccc_pooled)]
CLASSES = [(mf1, ref_mf1), (wf1, ref_wf1), (uar, ref_uar)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [12, 200])
@pytest.mark.parametrize(("metric", "ref"), MULTILABEL)
def test_multilabel_matches_sklearn(metric, ref, seed, n):
    t, p = random_presence(np.random.default_rng(seed), (n, 6))
    value = metric(t, p)
    assert isinstance(value, float)
    assert value == pytest.approx(ref(t, p), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("metric", "ref"), TRAITS)
def test_traits_match_reference(metric, ref, seed):
    t, p = random_traits(np.random.default_rng(seed), (50, 5))
    value = metric(t, p)
    assert isinstance(value, float)
    assert value == pytest.approx(ref(t, p), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), [(8, 7), (300, 7), (40, 2)])
@pytest.mark.parametrize(("metric", "ref"), CLASSES)
def test_classes_match_sklearn(metric, ref, seed, n, c):
    # n=8 with 7 classes: some classes are missing from target and/or prediction.
    t, p = random_classes(np.random.default_rng(seed), (n,), c)
    value = metric(t, p, num_classes=c)
    assert isinstance(value, float)
    assert value == pytest.approx(ref(t, p, c), abs=1e-12)


def test_uar_equals_balanced_accuracy():
    t, p = random_classes(np.random.default_rng(0), (30,), 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.balanced_accuracy_score(t, p)
    assert uar(t, p, 7) == pytest.approx(expected)


# --- batched inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "ref"), MULTILABEL)
def test_multilabel_batched(metric, ref):
    t, p = random_presence(np.random.default_rng(1), (2, 3, 15, 6))
    out = metric(t, p)
    assert out.shape == (2, 3)
    expected = [[ref(t[i, j], p[i, j]) for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize(("metric", "ref"), TRAITS)
def test_traits_batched(metric, ref):
    t, p = random_traits(np.random.default_rng(2), (4, 20, 5))
    out = metric(t, p)
    assert out.shape == (4,)
    np.testing.assert_allclose(out, [ref(t[i], p[i]) for i in range(4)], atol=1e-12)


@pytest.mark.parametrize(("metric", "ref"), CLASSES)
def test_classes_batched(metric, ref):
    t, p = random_classes(np.random.default_rng(3), (2, 5, 10), 7)
    out = metric(t, p, num_classes=7)
    assert out.shape == (2, 5)
    expected = [[ref(t[i, j], p[i, j], 7) for j in range(5)] for i in range(2)]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_target_broadcasts_against_batched_predictions():
    rng = np.random.default_rng(4)
    t = rng.integers(0, 3, size=20)
    preds = rng.integers(0, 3, size=(6, 20))
    np.testing.assert_allclose(mf1(t, preds, 3), [ref_mf1(t, p, 3) for p in preds])


# --- hand-computed cases ------------------------------------------------------------------


def test_mwacc_and_mmf1_by_hand():
    t = np.array([1, 1, 0, 0, 0], dtype=bool)[:, None]
    p = np.array([1, 0, 0, 0, 1], dtype=bool)[:, None]
    # TP=1, P=2, TN=2, N=3: WA = (1 * 3/2 + 2) / (2 * 3)
    assert mwacc(t, p) == pytest.approx((1 * 3 / 2 + 2) / 6)
    # present: F1 = 2 TP / (2 TP + FP + FN) = 2 / (2 + 1 + 1); absent: 2 TN / (2 TN + FN + FP) = 4 / 6
    assert mf1_present(t, p) == pytest.approx(0.5)
    assert mmf1(t, p) == pytest.approx((0.5 + 4 / 6) / 2)
    # 0/1 integers are accepted as presence flags
    assert mwacc(t.astype(int), p.astype(int)) == mwacc(t, p)


def test_macc_and_mccc_by_hand():
    assert macc([[0.5, 0.2]], [[0.7, 0.2]]) == pytest.approx(1 - (0.2 + 0.0) / 2)
    # x = 1,2,3 ; y = x + 1: var = cov = 2/3, mean diff 1 -> CCC = (4/3) / (4/3 + 1) = 4/7
    x = np.array([[1.0], [2.0], [3.0]])
    assert mccc(x, x + 1) == pytest.approx(4 / 7)
    assert mccc(x, x) == pytest.approx(1.0)
    assert mccc(x, 4 - x) == pytest.approx(-1.0)
    # Pooled over two traits: x = 1,2,3,11,12,13 against itself is 1 either way; against
    # each trait's own mean, per-trait CCC is 0 while pooling sees the between-trait spread.
    two = np.hstack([x, x + 10])
    assert mccc_pooled(two, two) == pytest.approx(1.0)
    means = np.broadcast_to(two.mean(axis=0), two.shape)
    assert mccc(two, means) == pytest.approx(0.0, abs=1e-12)
    # pooled: var(x) = 25 + 2/3, var(y) = 25, cov = 25, equal means -> 50 / (50 + 2/3)
    assert mccc_pooled(two, means) == pytest.approx(50 / (50 + 2 / 3))


def test_class_metrics_by_hand():
    t, p = [0, 0, 1, 1], [0, 1, 1, 1]
    # F1: class 0 = 2/3, class 1 = 4/5, class 2 (absent from both) = 0
    assert mf1(t, p, 3) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    assert wf1(t, p, 3) == pytest.approx((2 * 2 / 3 + 2 * 4 / 5) / 4)
    # recalls: class 0 = 1/2, class 1 = 1; class 2 has no support and is excluded
    assert uar(t, p, 3) == pytest.approx(0.75)


# --- degenerate cases ---------------------------------------------------------------------


def test_class_never_predicted():
    t = np.array([0, 1, 2, 2, 1, 0])
    p = np.array([0, 1, 1, 1, 1, 0])  # class 2 never predicted
    for metric, ref in CLASSES:
        assert metric(t, p, 3) == pytest.approx(ref(t, p, 3))
    assert uar(t, p, 3) == pytest.approx((1 + 1 + 0) / 3)


def test_mosei_emotion_never_present_uses_available_recall():
    t = np.zeros((4, 1), dtype=bool)
    p = np.array([[1], [0], [0], [0]], dtype=bool)
    assert mwacc(t, p) == pytest.approx(3 / 4)  # TN / N only
    assert mwacc(t, p) == pytest.approx(ref_mwacc(t, p))
    assert mf1_present(t, p) == 0.0
    assert mf1_present(t, t) == 0.0  # 0/0 -> 0, like zero_division=0
    # paper scale: "present" seen only in the prediction scores 0, beside F1(absent) = 6/7
    assert mmf1(t, p) == pytest.approx((0 + 6 / 7) / 2)
    assert mmf1(t, t) == 1.0  # "present" seen nowhere: only F1(absent) = 1 counts
    assert mmf1(~t, ~t) == 1.0
    assert mwacc(~t, ~t) == 1.0  # all positive and all found: TP / P


def test_ccc_constant_predictions():
    t = np.array([[0.1], [0.5], [0.9]])
    assert mccc(t, np.full_like(t, 0.5)) == pytest.approx(0.0, abs=1e-12)
    assert mccc(np.full_like(t, 0.3), np.full_like(t, 0.5)) == 0.0  # both constant, different
    assert mccc(np.full_like(t, 0.5), np.full_like(t, 0.5)) == 0.0  # 0/0 defined as 0


def test_all_neutral_predictions():
    probs = np.zeros((10, 7))
    probs[:, 0] = 0.9
    probs[:, 1:] = 0.1 / 6
    pred = mosei_decode(probs)
    assert pred.shape == (10, 6) and not pred.any()
    t = np.zeros((10, 6), dtype=bool)
    t[:5] = True  # each emotion: 5 positives, 5 negatives
    assert mwacc(t, pred) == pytest.approx(0.5)  # (0 + N) / (2N)
    assert mf1_present(t, pred) == 0.0
    assert mmf1(t, pred) == pytest.approx((0 + 2 * 5 / (5 + 10)) / 2)  # F1(absent) = 2 TN / (N + N')


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mosei_decode_thresholds(dtype):
    rows = np.array(
        [
            [6 / 7, 1 / 7, 0, 0, 0, 0, 0],  # neutral exactly at 6/7: all absent
            [5 / 7, 1 / 7, 1 / 7, 0, 0, 0, 0],  # emotions exactly at 1/7: present
            [5 / 7, 1 / 7 - 1e-6, 1 / 7 + 1e-6, 0, 0, 0, 0],  # just below / above 1/7
            [6 / 7 - 1e-6, 1 / 7 + 1e-6, 0, 0, 0, 0, 0],  # neutral just below 6/7
        ],
        dtype=dtype,
    )
    expected = np.zeros((4, 6), dtype=bool)
    expected[1, [0, 1]] = True
    expected[2, 1] = True
    expected[3, 0] = True
    np.testing.assert_array_equal(mosei_decode(rows), expected)
    # batched decoding keeps leading dims
    assert mosei_decode(np.stack([rows, rows])).shape == (2, 4, 6)


def test_mosei_targets():
    labels = [[0.0, 0.0, 1.5, 0, 0, 0.3, 0], [2.0, 0, 0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(
        mosei_targets(labels),
        [[False, True, False, False, True, False], [False] * 6],
    )


def test_input_validation():
    with pytest.raises(ValueError, match="boolean"):
        mwacc(np.zeros((3, 6), dtype=bool), np.full((3, 6), 0.4))
    with pytest.raises(ValueError, match="outside"):
        mf1([0, 1, 7], [0, 1, 1], num_classes=7)
    with pytest.raises(ValueError, match="7 classes"):
        mosei_decode(np.zeros((3, 6)))


# --- bootstrap ----------------------------------------------------------------------------


def naive_bootstrap(metric, *arrays, n_resamples, confidence, seed, **kw) -> Interval:
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    idx = rng.integers(0, n, size=(n_resamples, n))
    values = [metric(*(a[i] for a in arrays), **kw) for i in idx]
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return Interval(metric(*arrays, **kw), float(low), float(high))


@pytest.mark.parametrize("max_elements", [2**23, 7])  # one chunk; one resample per chunk
def test_bootstrap_equals_naive_loop(max_elements):
    rng = np.random.default_rng(6)
    t, p = random_classes(rng, (25,), 4)
    got = bootstrap_ci(
        mf1, t, p, n_resamples=50, confidence=0.9, seed=3, max_elements=max_elements, num_classes=4
    )
    want = naive_bootstrap(mf1, t, p, n_resamples=50, confidence=0.9, seed=3, num_classes=4)
    assert got.value == pytest.approx(want.value)
    assert got.low == pytest.approx(want.low)
    assert got.high == pytest.approx(want.high)


def test_bootstrap_multilabel_equals_naive_loop():
    t, p = random_presence(np.random.default_rng(7), (30, 6))
    got = bootstrap_ci(mwacc, t, p, n_resamples=40, seed=1)
    want = naive_bootstrap(mwacc, t, p, n_resamples=40, confidence=0.95, seed=1)
    assert (got.low, got.high) == pytest.approx((want.low, want.high))


def test_bootstrap_deterministic_and_seed_dependent():
    t, p = random_traits(np.random.default_rng(8), (100, 5))
    a = bootstrap_ci(macc, t, p, n_resamples=200, seed=11)
    b = bootstrap_ci(macc, t, p, n_resamples=200, seed=11)
    c = bootstrap_ci(macc, t, p, n_resamples=200, seed=12)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_bootstrap_contains_point_and_narrows_with_more_samples():
    rng = np.random.default_rng(9)
    small = random_traits(rng, (50, 5))
    large = random_traits(rng, (2000, 5))
    ci_small = bootstrap_ci(mccc, *small, n_resamples=500)
    ci_large = bootstrap_ci(mccc, *large, n_resamples=500)
    for ci in (ci_small, ci_large):
        assert ci.low <= ci.value <= ci.high
    assert ci_large.high - ci_large.low < 0.5 * (ci_small.high - ci_small.low)


def test_bootstrap_rejects_mismatched_arrays():
    with pytest.raises(ValueError):
        bootstrap_ci(macc, np.zeros((5, 5)), np.zeros((4, 5)))


# --- ranks and Friedman -------------------------------------------------------------------


def test_mean_rank_ties_direction_and_nan():
    scores = np.array([[0.9, 0.5], [0.8, 0.5], [0.7, 0.6]])
    # metric 0 ranks 1, 2, 3; metric 1: 0.6 -> 1, the two 0.5 tie at 2.5
    np.testing.assert_allclose(mean_rank(scores), [1.75, 2.25, 2.0])
    np.testing.assert_allclose(mean_rank(scores, higher_is_better=False), [2.25, 1.75, 2.0])
    np.testing.assert_allclose(mean_rank(scores, higher_is_better=[True, False]), [1.25, 1.75, 3.0])
    with_nan = np.array([[0.9, np.nan], [np.nan, 0.5], [np.nan, 0.6]])
    # metric 0: run 0 best, two NaNs share ranks 2 and 3; metric 1: NaN last
    np.testing.assert_allclose(mean_rank(with_nan), [(1 + 3) / 2, (2.5 + 2) / 2, (2.5 + 1) / 2])


def test_mean_rank_matches_rankdata():
    scores = np.random.default_rng(10).integers(0, 4, size=(6, 9)).astype(float)
    expected = stats.rankdata(-scores, method="average", axis=0).mean(axis=1)
    np.testing.assert_allclose(mean_rank(scores), expected)


def test_friedman_by_hand():
    # Ranks per metric (columns): (1,2,3), (1,3,2), (2,1,3), (1,2,3); mean ranks 1.25, 2, 2.75.
    scores = np.array([[0.9, 0.9, 0.8, 0.6], [0.8, 0.7, 0.9, 0.5], [0.7, 0.8, 0.7, 0.4]])
    # chi2 = 12 n / (k (k+1)) * (sum R^2 - k (k+1)^2 / 4) = 12*4/12 * (13.125 - 12) = 4.5
    stat, p = friedman(scores)
    assert stat == pytest.approx(4.5)
    assert p == pytest.approx(math.exp(-4.5 / 2))  # chi2 survival with 2 dof
    ref = stats.friedmanchisquare(*scores)
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))


@pytest.mark.parametrize("seed", SEEDS)
def test_friedman_matches_scipy_with_ties(seed):
    # Few distinct values, so ties are frequent and the tie correction matters.
    scores = np.random.default_rng(seed).integers(0, 3, size=(4, 12)).astype(float)
    result = friedman(scores)
    ref = stats.friedmanchisquare(*scores)
    assert result.statistic == pytest.approx(ref.statistic)
    assert result.p_value == pytest.approx(ref.pvalue)


def test_friedman_all_tied():
    assert friedman(np.ones((3, 4))) == (0.0, 1.0)


def test_empty_sample_is_nan():
    assert math.isnan(mf1(np.zeros(0, int), np.zeros(0, int), 3))
    assert math.isnan(mwacc(np.zeros((0, 6), bool), np.zeros((0, 6), bool)))
    assert math.isnan(mccc(np.zeros((0, 5)), np.zeros((0, 5))))
    assert math.isnan(mccc_pooled(np.zeros((0, 5)), np.zeros((0, 5))))
    assert math.isnan(mmf1(np.zeros((0, 6), bool), np.zeros((0, 6), bool)))
    assert math.isnan(mf1_present(np.zeros((0, 6), bool), np.zeros((0, 6), bool)))


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    t, p = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    np.testing.assert_array_equal(confusion_matrix(t, p, 7), skm.confusion_matrix(t, p, labels=range(7)))
    assert confusion_matrix(t[:0], p[:0], 3).sum() == 0
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
