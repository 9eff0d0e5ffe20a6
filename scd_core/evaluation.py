"""Per-corpus evaluation: predictions, the paper's metrics, the dev score, bootstrap intervals.

Metric names are ``<corpus>_<metric>``. The eight of the paper's Table 1 are
``METRICS``; MELD also reports ``meld_uar``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from scd_core import metrics as M
from scd_core.features import CorpusTensors
from scd_core.tasks import CORPORA, TASKS

# Table 1 order. Every one is higher-is-better.
METRICS = ("mosei_mmf1", "mosei_mwacc", "fiv2_macc", "fiv2_mccc", "bah_mf1", "bah_uar", "meld_mf1", "meld_wf1")
# Which dev metrics stand for each task in the dev score.
TASK_METRICS = {"emo": ("mosei_mmf1", "mosei_mwacc"), "pt": ("fiv2_macc", "fiv2_mccc"), "ah": ("bah_mf1", "bah_uar")}


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


def metric_inputs(corpus: str, outputs: Mapping[str, Tensor], data: CorpusTensors):
    """(metric functions, target, prediction) for the corpus's own task, labelled rows only."""
    task = CORPORA[corpus].task
    _check_finite(corpus, task, outputs[task])
    rows = data.label_mask[task].cpu().numpy()
    out = outputs[task].detach().float().cpu().numpy()[rows]
    label = data.labels[task].cpu().numpy()[rows]
    if task == "emo" and CORPORA[corpus].emo_single_label:
        classes = TASKS["emo"].num_outputs
        fns = {n: (lambda f: lambda t, p: f(t, p, classes))(f) for n, f in
               (("mf1", M.mf1), ("wf1", M.wf1), ("uar", M.uar))}
        return fns, label.argmax(axis=1), out.argmax(axis=1)
    if task == "emo":
        probs = torch.softmax(torch.from_numpy(out), dim=1).numpy()
        return {"mmf1": M.mmf1, "mwacc": M.mwacc}, M.mosei_targets(label), M.mosei_decode(probs)
    if task == "pt":
        return {"macc": M.macc, "mccc": M.mccc}, label, out
    fns = {"mf1": lambda t, p: M.mf1(t, p, 2), "uar": lambda t, p: M.uar(t, p, 2)}
    return fns, label, out.argmax(axis=1)


def corpus_metrics(corpus: str, outputs: Mapping[str, Tensor], data: CorpusTensors) -> dict[str, float]:
    """The corpus's metrics (DESIGN.md "Tasks and labels") on its labelled rows."""
    fns, target, pred = metric_inputs(corpus, outputs, data)
    return {f"{corpus}_{name}": float(fn(target, pred)) for name, fn in fns.items()}


def corpus_intervals(
    corpus: str, outputs: Mapping[str, Tensor], data: CorpusTensors, n_resamples: int = 1000, seed: int = 0
) -> dict[str, M.Interval]:
    """Percentile-bootstrap 95% intervals of the corpus's metrics (resampling its rows)."""
    fns, target, pred = metric_inputs(corpus, outputs, data)
    return {f"{corpus}_{name}": M.bootstrap_ci(fn, target, pred, n_resamples=n_resamples, seed=seed)
            for name, fn in fns.items()}


def evaluate(model: nn.Module, splits: Mapping[str, CorpusTensors], batch_size: int = 1024) -> dict[str, float]:
    """Metrics of every corpus in ``splits`` (corpus -> its rows)."""
    results: dict[str, float] = {}
    for corpus, data in splits.items():
        results.update(corpus_metrics(corpus, predict(model, data, batch_size), data))
    return results


def dev_score(metrics: Mapping[str, float], tasks: Sequence[str]) -> float:
    """The scalar that model selection and the searcher maximise.

    score = mean over trained tasks t of mean(metrics of t on its own dev corpus):
    EMO (MOSEI mMF1, mWACC), PT (FIv2 mACC, mCCC), AH (BAH MF1, UAR). MELD is left out:
    it is the zero-shot test, never a selection signal. A missing or NaN metric makes the
    score NaN, so a broken trial cannot look good.
    """
    per_task = [np.mean([metrics.get(m, np.nan) for m in TASK_METRICS[t]]) for t in tasks]
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
