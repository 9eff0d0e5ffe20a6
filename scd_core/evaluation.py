"""Per-corpus evaluation: predictions, the paper's metrics, the dev score, bootstrap intervals.

Metric names are ``<corpus>_<metric>``. The eight of the paper's Table 1 are ``METRICS``;
``REPORTED_METRICS`` adds those reported beside them: ``mosei_mf1_present`` (F1 of
"present" alone), ``fiv2_mccc_pooled`` (the authors' pooled CCC) and ``meld_uar``. Model
selection (dev score, mean rank, promotion) uses only ``selection_metrics`` of the trained
tasks: in-domain dev metrics, never MELD's.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from scd_core import metrics as M
from scd_core.features import CorpusTensors
from scd_core.tasks import CORPORA, TASK_NAMES, TASKS

# Each corpus's metrics, ``fn(target, pred)`` on the inputs of ``metric_inputs``, by short name.
CORPUS_METRICS: dict[str, dict[str, Callable[..., M.Score]]] = {
    "mosei": {"mmf1": M.mmf1, "mwacc": M.mwacc, "mf1_present": M.mf1_present},
    "fiv2": {"macc": M.macc, "mccc": M.mccc, "mccc_pooled": M.mccc_pooled},
    "bah": {"mf1": partial(M.mf1, num_classes=2), "uar": partial(M.uar, num_classes=2)},
    "meld": {name: partial(fn, num_classes=TASKS["emo"].num_outputs)
             for name, fn in (("mf1", M.mf1), ("wf1", M.wf1), ("uar", M.uar))},
}
# Table 1 order. Every metric here is higher-is-better.
METRICS = ("mosei_mmf1", "mosei_mwacc", "fiv2_macc", "fiv2_mccc", "bah_mf1", "bah_uar", "meld_mf1", "meld_wf1")
REPORTED_METRICS = (*METRICS, *(n for n in (f"{c}_{m}" for c, fns in CORPUS_METRICS.items() for m in fns)
                                 if n not in METRICS))
# Which dev metrics stand for each task in model selection: its own corpus's, on the paper's scale.
TASK_METRICS = {"emo": ("mosei_mmf1", "mosei_mwacc"), "pt": ("fiv2_macc", "fiv2_mccc"), "ah": ("bah_mf1", "bah_uar")}


def selection_metrics(tasks: Sequence[str] = TASK_NAMES) -> tuple[str, ...]:
    """The dev metrics that model selection uses for trials trained on ``tasks``.

    The in-domain metrics of each trained task (``TASK_METRICS``); MELD is never among them.
    The dev score averages them per task; the mean rank ranks trials on them.
    """
    return tuple(m for t in TASK_NAMES if t in tasks for m in TASK_METRICS[t])


class NonFiniteOutputError(FloatingPointError):
    """The model's outputs hold NaN or inf: metrics of them would be meaningless numbers."""


def _check_finite(corpus: str, task: str, out: Tensor) -> None:
    bad = int((~torch.isfinite(out.reshape(len(out), -1))).any(dim=1).sum())
    if bad:
        raise NonFiniteOutputError(f"{corpus}: {bad} of {len(out)} rows have non-finite {task} outputs (NaN or inf);"
                                   " the model's weights are broken (check the checkpoint)")


@torch.no_grad()
def predict(model: nn.Module, data: CorpusTensors, batch_size: int = 1024) -> dict[str, Tensor]:
    """Model outputs for every row of ``data`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.device)
        batch = data.index(idx)
        for task, out in model(batch.features, batch.modality_mask).items():
            chunks.setdefault(task, []).append(out)
    model.train(was_training)
    return {task: torch.cat(parts) for task, parts in chunks.items()}


def metric_targets(corpus: str, labels: np.ndarray) -> np.ndarray:
    """The corpus's labels as its metrics read them: MOSEI ``[n, 6]`` presence (intensity > 0),
    MELD the class index, FIv2 the five traits, BAH the class as stored."""
    task = CORPORA[corpus].task
    if task == "emo":
        return labels.argmax(axis=1) if CORPORA[corpus].emo_single_label else M.mosei_targets(labels)
    return labels


def metric_inputs(corpus: str, outputs: Mapping[str, Tensor], data: CorpusTensors):
    """(metric functions, target, prediction) for the corpus's own task, labelled rows only."""
    task = CORPORA[corpus].task
    _check_finite(corpus, task, outputs[task])
    rows = data.label_mask[task].cpu().numpy()
    out = outputs[task].detach().float().cpu().numpy()[rows]
    target = metric_targets(corpus, data.labels[task].cpu().numpy()[rows])
    fns = CORPUS_METRICS[corpus]
    if task == "emo" and not CORPORA[corpus].emo_single_label:
        return fns, target, M.mosei_decode(torch.softmax(torch.from_numpy(out), dim=1).numpy())
    return fns, target, out if task == "pt" else out.argmax(axis=1)


def corpus_metrics(corpus: str, outputs: Mapping[str, Tensor], data: CorpusTensors) -> dict[str, float]:
    """The corpus's metrics (DESIGN.md "Tasks and labels") on its labelled rows."""
    fns, target, pred = metric_inputs(corpus, outputs, data)
    return {f"{corpus}_{name}": float(fn(target, pred)) for name, fn in fns.items()}


def corpus_intervals(
    corpus: str, outputs: Mapping[str, Tensor], data: CorpusTensors, n_resamples: int = 1000, seed: int = 0
) -> dict[str, M.Interval]:
    """Percentile-bootstrap 95% intervals of the corpus's metrics (resampling its rows)."""
    _, target, pred = metric_inputs(corpus, outputs, data)
    return target_intervals(corpus, target, pred, n_resamples, seed)


def target_intervals(corpus: str, target: np.ndarray, pred: np.ndarray, n_resamples: int = 1000,
                     seed: int = 0) -> dict[str, M.Interval]:
    """The corpus's metrics with percentile-bootstrap 95% intervals, on targets and predictions
    already in the metrics' form (:func:`metric_targets`)."""
    return {f"{corpus}_{name}": M.bootstrap_ci(fn, target, pred, n_resamples=n_resamples, seed=seed)
            for name, fn in CORPUS_METRICS[corpus].items()}


def evaluate(model: nn.Module, splits: Mapping[str, CorpusTensors], batch_size: int = 1024) -> dict[str, float]:
    """Metrics of every corpus in ``splits`` (corpus -> its rows)."""
    results: dict[str, float] = {}
    for corpus, data in splits.items():
        results.update(corpus_metrics(corpus, predict(model, data, batch_size), data))
    return results


def dev_score(metrics: Mapping[str, float], tasks: Sequence[str]) -> float:
    """The scalar that model selection and the searcher maximise.

    score = mean over trained tasks t of mean(metrics of t on its own dev corpus):
    EMO (MOSEI mMF1 on the paper's scale, mWACC), PT (FIv2 mACC, per-trait mCCC), AH (BAH
    MF1, UAR), i.e. ``selection_metrics(tasks)`` grouped by task. MELD is left out: it is
    the zero-shot test, never a selection signal. A missing or NaN metric makes the score
    NaN, so a broken trial cannot look good.
    """
    per_task = [np.mean([metrics.get(m, np.nan) for m in selection_metrics([t])]) for t in tasks]
    return float(np.mean(per_task))


def interval_report(
    model: nn.Module, splits: Mapping[str, CorpusTensors], n_resamples: int = 1000, seed: int = 0
) -> list[dict[str, float | str | int]]:
    """Rows ``{corpus, metric, value, low, high, n}`` with percentile-bootstrap 95% intervals."""
    rows = []
    for corpus, data in splits.items():
        outputs = predict(model, data)
        n = int(data.label_mask[CORPORA[corpus].task].sum())
        for name, ci in corpus_intervals(corpus, outputs, data, n_resamples, seed).items():
            rows.append({"corpus": corpus, "metric": name.split("_", 1)[1], "value": ci.value,
                         "low": ci.low, "high": ci.high, "n": n})
    return rows
