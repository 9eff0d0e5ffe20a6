"""Evaluation metrics, bootstrap confidence intervals and rank statistics.

Pure NumPy (+ SciPy for ranks and the chi-square tail); no hidden state, no torch.
See DESIGN.md "Tasks and labels" for which metric belongs to which corpus:

* MOSEI (multi-label emotions): :func:`mosei_decode`, :func:`mosei_targets`,
  :func:`mwacc`, :func:`mmf1` (the paper's), :func:`mf1_present` (reported beside it).
* FIv2 (personality traits): :func:`macc`, :func:`mccc` (per trait, selection),
  :func:`mccc_pooled` (the authors' code, reported beside it).
* MELD / BAH (single-label classes): :func:`mf1`, :func:`wf1`, :func:`uar`.

Shapes and batching
-------------------
Arguments follow scikit-learn's order ``(target, pred)``. Every metric accepts optional
leading batch ("resample") dimensions: inputs ``[..., N, K]`` (or ``[..., N]`` for class
ids) give an array of shape ``[...]``, and unbatched inputs give a Python ``float``.
``target`` and ``pred`` are broadcast against each other, so one target can score a
batch of predictions. Metrics are vectorised over the batch, which is what lets
:func:`bootstrap_ci` evaluate all resamples in one call. With ``N == 0`` samples a
metric is NaN.

Degenerate cases (each documented on its function) follow scikit-learn where it has
a defined answer, so results can be cross-checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = [
    "FriedmanResult",
    "Interval",
    "bootstrap_ci",
    "confusion_matrix",
    "friedman",
    "macc",
    "mccc",
    "mccc_pooled",
    "mean_rank",
    "mf1",
    "mf1_present",
    "mmf1",
    "mosei_decode",
    "mosei_targets",
    "mwacc",
    "uar",
    "wf1",
]

Score = float | NDArray[np.float64]

# MOSEI decoding thresholds over the 7-way softmax (index 0 = Neutral).
NEUTRAL_THRESHOLD = 6 / 7
EMOTION_THRESHOLD = 1 / 7

# Bound on elements per bootstrap chunk (resamples x samples x columns); float64
# intermediates of that size are 64 MiB.
DEFAULT_MAX_ELEMENTS = 2**23


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _finish(x: NDArray[np.floating]) -> Score:
    """Return a Python float for unbatched results, the array otherwise."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _safe_div(num: NDArray, den: NDArray, fill: float) -> NDArray[np.float64]:
    """``num / den`` where ``den != 0``, ``fill`` elsewhere, without warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), fill, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _as_bool(x: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Presence flags; 0/1 numbers are accepted, anything else is an error.

    Refusing e.g. probabilities here avoids silently treating every non-zero as True.
    """
    a = np.asarray(x)
    if a.dtype == np.bool_:
        return a
    if not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or 0/1); decode probabilities first")
    return a.astype(bool)


def _pair(
    target: ArrayLike, pred: ArrayLike, min_ndim: int, cast: Callable[[ArrayLike, str], NDArray]
) -> tuple[NDArray, NDArray]:
    """Cast, broadcast and check the rank of a (target, pred) pair."""
    t, p = np.broadcast_arrays(cast(target, "target"), cast(pred, "pred"))
    if t.ndim < min_ndim:
        layout = "[..., N, K]" if min_ndim == 2 else "[..., N]"
        raise ValueError(f"expected inputs shaped {layout}, got {t.shape}")
    return t, p


def _as_float(x: ArrayLike, name: str) -> NDArray[np.float64]:
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------
# MOSEI: multi-label emotion presence
# ---------------------------------------------------------------------------


def mosei_decode(probs: ArrayLike) -> NDArray[np.bool_]:
    """Decode a 7-way emotion softmax into presence of the six emotions.

    ``probs``: ``[..., N, 7]`` softmax over (neutral, anger, disgust, fear, happiness,
    sadness, surprise). Returns bool ``[..., N, 6]`` (Neutral dropped)::

        present[k] = P(neutral) < 6/7  and  P(k) >= 1/7        k = 1..6

    Both comparisons are inclusive as in DESIGN.md. The thresholds are cast to the input's
    floating dtype, so a float32 value equal to float32(6/7) counts as "at" the threshold.
    """
    p = np.asarray(probs)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.ndim < 1 or p.shape[-1] != 7:
        raise ValueError(f"probs must have a last axis of 7 classes, got shape {p.shape}")
    neutral_thr = p.dtype.type(NEUTRAL_THRESHOLD)
    emotion_thr = p.dtype.type(EMOTION_THRESHOLD)
    not_neutral = p[..., :1] < neutral_thr
    return not_neutral & (p[..., 1:] >= emotion_thr)


def mosei_targets(labels: ArrayLike) -> NDArray[np.bool_]:
    """Presence targets from MOSEI labels.

    ``labels``: ``[..., N, 7]`` intensities or a label distribution (index 0 = neutral).
    Returns bool ``[..., N, 6]``: ``present[k] = labels[k] > 0`` for k = 1..6
    (NaN, i.e. a missing label, compares False; mask missing samples before scoring).
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim < 1 or y.shape[-1] != 7:
        raise ValueError(f"labels must have a last axis of 7 classes, got shape {y.shape}")
    return y[..., 1:] > 0


def _binary_counts(t: NDArray[np.bool_], p: NDArray[np.bool_]) -> tuple[NDArray, ...]:
    """Per-column TP, TN, positives and negatives over the sample axis (-2)."""
    tp = np.count_nonzero(t & p, axis=-2)
    tn = np.count_nonzero(~t & ~p, axis=-2)
    pos = np.count_nonzero(t, axis=-2)
    neg = t.shape[-2] - pos
    return tp, tn, pos, neg


def mwacc(target: ArrayLike, pred: ArrayLike) -> Score:
    """Mean weighted accuracy over emotions (MOSEI mWACC).

    ``target``, ``pred``: presence ``[..., N, K]`` (K = 6 emotions; any K works). Per
    column, with P positives and N negatives in the target::

        WA  = (TP * N / P + TN) / (2 N) = (TP / P + TN / N) / 2      (balanced accuracy)
        mWACC = mean_k WA_k

    Degenerate case: a column whose target has no positives (or no negatives) has an
    undefined TP/P (or TN/N); its WA is then the one recall that is defined, e.g. TN/N
    when the emotion never occurs. This is exactly what
    ``sklearn.metrics.balanced_accuracy_score(target[:, k], pred[:, k])`` returns in the
    one-class case (it averages only the recalls of classes present in ``y_true``).
    """
    t, p = _pair(target, pred, 2, _as_bool)
    tp, tn, pos, neg = _binary_counts(t, p)
    tpr = _safe_div(tp, pos, np.nan)
    tnr = _safe_div(tn, neg, np.nan)
    # Average the recalls that exist; both missing only when N == 0 -> NaN.
    defined = np.isfinite(tpr).astype(np.int64) + np.isfinite(tnr)
    wa = _safe_div(np.nan_to_num(tpr) + np.nan_to_num(tnr), defined, np.nan)
    return _finish(wa.mean(axis=-1))


def _class_f1(hits: NDArray, in_target: NDArray, in_pred: NDArray) -> NDArray[np.float64]:
    """Per-column F1 of one class, ``2 hits / (in_target + in_pred)``; NaN where the class
    occurs in neither target nor prediction (0/0)."""
    return _safe_div(2 * hits, in_target + in_pred, np.nan)


def mmf1(target: ArrayLike, pred: ArrayLike) -> Score:
    """Mean over emotions of the macro F1 over each emotion's two classes (MOSEI mMF1).

    The authors' definition (their ``measures.py``: per emotion
    ``classification_report(target[:, k], pred[:, k])['macro avg']``), on the paper's scale.
    ``target``, ``pred``: presence ``[..., N, K]``. Per column, with P / N the present /
    absent counts of the target and P' / N' those of the prediction::

        F1(present) = 2 TP / (P + P')        F1(absent) = 2 TN / (N + N')
        F1_k  = mean of F1(present), F1(absent) over the classes that occur
                (in the target or the prediction)
        mMF1 = mean_k F1_k

    Degenerate case: a class that occurs in neither target nor prediction (e.g. an
    emotion absent from both) is left out of its column's mean, as ``classification_report``
    and ``sklearn.metrics.f1_score(target[:, k], pred[:, k], average="macro")`` (labels =
    classes seen) leave it out: an emotion absent from both scores F1(absent) = 1. A class
    seen only in the prediction has F1 = 0.
    """
    t, p = _pair(target, pred, 2, _as_bool)
    tp, tn, pos, neg = _binary_counts(t, p)
    pred_pos = np.count_nonzero(p, axis=-2)
    pred_neg = p.shape[-2] - pred_pos
    f1 = np.stack([_class_f1(tp, pos, pred_pos), _class_f1(tn, neg, pred_neg)])
    seen = np.isfinite(f1).sum(axis=0)  # 0 only when N == 0 -> NaN
    per_emotion = _safe_div(np.nan_to_num(f1).sum(axis=0), seen, np.nan)
    return _finish(per_emotion.mean(axis=-1))


def mf1_present(target: ArrayLike, pred: ArrayLike) -> Score:
    """Mean over emotions of the F1 of "present" alone (reported as ``mosei_mf1_present``).

    ``target``, ``pred``: presence ``[..., N, K]``. Per column::

        F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (P_target + P_pred),   0 if that is 0/0
        mean_k F1_k

    Not the paper's mMF1 (:func:`mmf1`): it ignores the absent class, so on rare emotions it
    sits far below mWACC, where the paper's mMF1 sits beside it. The 0/0 case (emotion absent from target and
    prediction) scores 0, as ``sklearn.metrics.f1_score(target[:, k], pred[:, k],
    zero_division=0)`` does.
    """
    t, p = _pair(target, pred, 2, _as_bool)
    tp = np.count_nonzero(t & p, axis=-2)
    f1 = np.nan_to_num(_class_f1(tp, np.count_nonzero(t, axis=-2), np.count_nonzero(p, axis=-2)))
    if t.shape[-2] == 0:
        f1 = np.full_like(f1, np.nan)
    return _finish(f1.mean(axis=-1))


# ---------------------------------------------------------------------------
# FIv2: personality trait regression
# ---------------------------------------------------------------------------


def macc(target: ArrayLike, pred: ArrayLike) -> Score:
    """Mean accuracy over traits, ``mACC = mean_k (1 - mean_i |y_ik - yhat_ik|)``.

    ``target``, ``pred``: trait scores ``[..., N, K]`` in [0, 1] (K = 5 traits).
    """
    t, p = _pair(target, pred, 2, _as_float)
    if t.shape[-2] == 0:
        return _finish(np.full(t.shape[:-2], np.nan))
    mae = np.abs(t - p).mean(axis=-2)
    return _finish((1.0 - mae).mean(axis=-1))


def _ccc(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-column CCC over the sample axis (-2), ``[..., N, K] -> [..., K]`` (see :func:`mccc`)."""
    mx = x.mean(axis=-2, keepdims=True)
    my = y.mean(axis=-2, keepdims=True)
    dx, dy = x - mx, y - my
    cov = (dx * dy).mean(axis=-2)
    var_x = (dx * dx).mean(axis=-2)
    var_y = (dy * dy).mean(axis=-2)
    den = var_x + var_y + (mx - my)[..., 0, :] ** 2
    return _safe_div(2.0 * cov, den, 0.0)


def mccc(target: ArrayLike, pred: ArrayLike) -> Score:
    """Mean of per-trait Lin's concordance correlation coefficient (mCCC, ``fiv2_mccc``).

    ``target`` (x), ``pred`` (y): ``[..., N, K]``. Per trait, with population (1/N)
    moments::

        CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)
        mCCC = mean_k CCC_k

    This is the paper's text and the platform's selection metric; the authors' code pools
    the traits instead (:func:`mccc_pooled`). A constant prediction has cov = 0 and so
    CCC = 0 whenever the denominator is positive. The 0/0 case (target and prediction
    constant and equal) is defined as 0: a constant predictor carries no concordance
    information, whatever it hits.
    """
    x, y = _pair(target, pred, 2, _as_float)
    if x.shape[-2] == 0:
        return _finish(np.full(x.shape[:-2], np.nan))
    return _finish(_ccc(x, y).mean(axis=-1))


def mccc_pooled(target: ArrayLike, pred: ArrayLike) -> Score:
    """One CCC over all traits pooled, as the authors' code computes it (``fiv2_mccc_pooled``).

    ``target``, ``pred``: ``[..., N, K]``, flattened to ``[..., N * K]`` values; then the
    CCC of :func:`mccc` over those values (same moments, same 0/0 rule). The authors' code
    produced the paper's tables, so this is the FIv2 mCCC to set beside them; it differs
    from :func:`mccc` when the traits' means or spreads differ (between-trait variation
    counts as concordance here).
    """
    x, y = _pair(target, pred, 2, _as_float)
    if x.shape[-2] == 0:
        return _finish(np.full(x.shape[:-2], np.nan))
    flat = x.shape[:-2] + (-1, 1)
    return _finish(_ccc(x.reshape(flat), y.reshape(flat))[..., 0])


# ---------------------------------------------------------------------------
# MELD / BAH: single-label classification
# ---------------------------------------------------------------------------


def _class_counts(
    target: ArrayLike, pred: ArrayLike, num_classes: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Per-class TP, target support and predicted count, shape ``[..., C]``.

    Vectorised over the batch: row ``r`` of the flattened batch counts into bins
    ``r * C + class``, so one ``bincount`` covers every resample.
    """
    def cast(x: ArrayLike, name: str) -> NDArray[np.int64]:
        a = np.asarray(x)
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
            if a.size and not np.array_equal(a, np.round(a)):
                raise ValueError(f"{name} must hold integer class ids")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside [0, {num_classes})")
        return a

    if num_classes < 1:
        raise ValueError("num_classes must be positive")
    t, p = _pair(target, pred, 1, cast)
    batch = t.shape[:-1]
    rows = int(np.prod(batch, dtype=np.int64))
    offsets = (np.arange(rows, dtype=np.int64) * num_classes)[:, None]
    t2 = t.reshape(rows, -1) + offsets
    p2 = p.reshape(rows, -1) + offsets
    size = rows * num_classes

    def count(bins: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.bincount(bins.ravel(), minlength=size).reshape(*batch, num_classes)

    return count(t2[t2 == p2]), count(t2), count(p2)


def _per_class_f1(tp: NDArray, support: NDArray, predicted: NDArray) -> NDArray[np.float64]:
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); 0/0 -> 0.
    return _safe_div(2 * tp, support + predicted, 0.0)


def mf1(target: ArrayLike, pred: ArrayLike, num_classes: int) -> Score:
    """Macro F1 over all ``num_classes`` classes.

    ``target``, ``pred``: integer class ids ``[..., N]`` in ``[0, num_classes)``::

        F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)   (0 if 0/0)
        MF1  = (1 / C) * sum_c F1_c

    Every class counts, including one absent from both target and prediction, which
    scores F1 = 0 (so MF1 on a subset lacking a class is pulled down). Matches
    ``sklearn.metrics.f1_score(t, p, labels=range(C), average="macro", zero_division=0)``.
    """
    tp, support, predicted = _class_counts(target, pred, num_classes)
    f1 = _per_class_f1(tp, support, predicted).mean(axis=-1)
    return _finish(_nan_if_empty(f1, support))


def wf1(target: ArrayLike, pred: ArrayLike, num_classes: int) -> Score:
    """Support-weighted F1, ``WF1 = sum_c n_c F1_c / sum_c n_c`` (n_c = target support).

    ``target``, ``pred``: integer class ids ``[..., N]``. Classes absent from the target
    have weight 0. Matches ``sklearn.metrics.f1_score(t, p, labels=range(C),
    average="weighted", zero_division=0)``.
    """
    tp, support, predicted = _class_counts(target, pred, num_classes)
    f1 = _per_class_f1(tp, support, predicted)
    total = support.sum(axis=-1)
    return _finish(_safe_div((support * f1).sum(axis=-1), total, np.nan))


def uar(target: ArrayLike, pred: ArrayLike, num_classes: int) -> Score:
    """Unweighted average recall over the classes present in the target.

    ``target``, ``pred``: integer class ids ``[..., N]``::

        UAR = (1 / |S|) * sum_{c in S} TP_c / n_c,    S = {c : n_c > 0}

    Classes with no support are excluded (their recall is undefined), so a subset lacking
    a class is not penalised for it. Equals
    ``sklearn.metrics.recall_score(t, p, labels=np.unique(t), average="macro")`` and
    ``sklearn.metrics.balanced_accuracy_score(t, p)``. ``num_classes`` only sizes the
    counts and validates ids.
    """
    tp, support, predicted = _class_counts(target, pred, num_classes)
    recall = _safe_div(tp, support, 0.0)
    present = np.count_nonzero(support, axis=-1)
    return _finish(_safe_div(recall.sum(axis=-1), present, np.nan))


def confusion_matrix(target: ArrayLike, pred: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """Counts ``M[i, j]`` = number of samples of true class ``i`` predicted as class ``j``.

    ``target``, ``pred``: integer class ids ``[N]`` in ``[0, num_classes)``; returns
    ``[num_classes, num_classes]``. Matches ``sklearn.metrics.confusion_matrix(t, p,
    labels=range(C))``.
    """
    t = np.asarray(target)
    p = np.asarray(pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"target and pred must be 1-D of one length, got {t.shape} and {p.shape}")
    _class_counts(t, p, num_classes)  # validates the class ids
    flat = t.astype(np.int64) * num_classes + p.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _nan_if_empty(value: NDArray, support: NDArray) -> NDArray[np.float64]:
    """NaN where a batch row has no samples at all (N == 0)."""
    return np.where(support.sum(axis=-1) > 0, value, np.nan)


# ---------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float


def bootstrap_ci(
    metric: Callable[..., Score],
    *arrays: ArrayLike,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    **metric_kwargs: Any,
) -> Interval:
    """Percentile bootstrap confidence interval of ``metric(*arrays, **metric_kwargs)``.

    ``arrays`` are unbatched metric inputs sharing the sample axis 0 (length N), e.g.
    ``bootstrap_ci(mf1, target, pred, num_classes=7)``. Each resample r draws N sample
    indices with replacement, ``idx[r] ~ U{0..N-1}^N`` from ``np.random.default_rng(seed)``;
    the metric is evaluated once on the stacked ``[R, N, ...]`` inputs (it must accept a
    leading batch dimension, as every metric here does). With ``alpha = 1 - confidence``::

        value = metric(arrays)
        low, high = quantile(metric over resamples, [alpha / 2, 1 - alpha / 2])

    (``np.quantile``'s default linear interpolation). To bound memory, resamples are
    drawn and scored in chunks of about ``max_elements / (N * columns)``, in order from
    the one Generator, so the indices equal drawing the whole ``[R, N]`` matrix at once
    (the tests check this against a naive loop). A NaN in any resample (a metric
    undefined on it) makes the bounds NaN rather than silently dropping that resample.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one input array")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    data = [np.asarray(a) for a in arrays]
    n = data[0].shape[0] if data[0].ndim else 0
    if n == 0 or any(a.ndim == 0 or a.shape[0] != n for a in data):
        raise ValueError("all arrays need the same non-empty sample axis 0")

    value = float(metric(*data, **metric_kwargs))
    rng = np.random.default_rng(seed)
    per_sample = sum(int(np.prod(a.shape[1:], dtype=np.int64)) for a in data)
    chunk = max(1, max_elements // (n * per_sample))
    scores = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):  # a few chunks, not a loop over resamples
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        scores[start:stop] = metric(*(a[idx] for a in data), **metric_kwargs)

    alpha = 1.0 - confidence
    low, high = np.quantile(scores, [alpha / 2, 1 - alpha / 2])
    return Interval(value=value, low=float(low), high=float(high))


# ---------------------------------------------------------------------------
# Comparing runs across metrics
# ---------------------------------------------------------------------------


def _ranks(scores: ArrayLike, higher_is_better: bool | Sequence[bool]) -> NDArray[np.float64]:
    """Rank runs within each metric column: 1 = best, ties averaged, NaN last.

    NaNs in a column share the averaged worst ranks ``n_valid + 1 .. n_runs``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be [n_runs, n_metrics], got shape {s.shape}")
    better = np.broadcast_to(np.asarray(higher_is_better, dtype=bool), s.shape[1:])
    key = np.where(better, -s, s)  # ascending key: smallest = best
    ranks = stats.rankdata(key, method="average", axis=0, nan_policy="omit")
    missing = np.isnan(s)
    n_valid = s.shape[0] - missing.sum(axis=0)
    nan_rank = n_valid + (missing.sum(axis=0) + 1) / 2.0
    return np.where(missing, nan_rank, ranks)


def mean_rank(
    scores: ArrayLike, higher_is_better: bool | Sequence[bool] = True
) -> NDArray[np.float64]:
    """Mean rank of each run across metrics.

    ``scores``: ``[n_runs, n_metrics]``. Within each metric column runs are ranked with
    ``scipy.stats.rankdata(method="average")``: rank 1 = best, tied runs share the mean
    of their ranks. ``higher_is_better`` is one flag or one per metric (e.g. False for
    an error). Returns ``[n_runs]``: ``mean_j rank_ij``.

    NaN (a run missing a metric) ranks last in that column; several NaNs tie for last.
    """
    return _ranks(scores, higher_is_better).mean(axis=1)


class FriedmanResult(NamedTuple):
    statistic: float
    p_value: float


def friedman(scores: ArrayLike) -> FriedmanResult:
    """Friedman's chi-square test that all runs perform alike (Demsar 2006).

    ``scores``: ``[k runs (treatments), n metrics (blocks)]``, k >= 2. Runs are ranked
    within each metric (ties averaged; direction is irrelevant to the statistic). With
    R_j the mean rank of run j and ``t`` the sizes of tie groups::

        chi2_F = 12 n / (k (k + 1)) * (sum_j R_j^2 - k (k + 1)^2 / 4)
        chi2   = chi2_F / (1 - sum(t^3 - t) / (n k (k^2 - 1)))      (tie correction)
        p      = P(Chi2_{k-1} >= chi2)

    Identical to ``scipy.stats.friedmanchisquare(*scores)`` on NaN-free input. NaNs rank
    last within their metric, as in :func:`mean_rank`. If every metric ties all runs the
    statistic is 0/0; it is defined as 0 with p = 1 (no evidence of any difference).
    """
    ranks = _ranks(scores, higher_is_better=True)
    k, n = ranks.shape
    if k < 2 or n < 1:
        raise ValueError("friedman needs at least 2 runs and 1 metric")
    mean_ranks = ranks.mean(axis=1)
    chi2_f = 12.0 * n / (k * (k + 1)) * (np.sum(mean_ranks**2) - k * (k + 1) ** 2 / 4.0)
    tie_sum = sum(_tie_term(ranks[:, j]) for j in range(n))
    correction = 1.0 - tie_sum / (n * k * (k * k - 1))
    if correction <= 0:  # every block fully tied
        return FriedmanResult(0.0, 1.0)
    statistic = chi2_f / correction
    return FriedmanResult(float(statistic), float(stats.chi2.sf(statistic, k - 1)))


def _tie_term(column: NDArray[np.float64]) -> float:
    """``sum(t^3 - t)`` over the tie groups of one block's ranks."""
    _, t = np.unique(column, return_counts=True)
    return float(np.sum(t**3 - t))
