"""Trivial baselines: what a model must beat before its numbers mean anything.

Each is fitted on a corpus's training split and scored on its evaluation split with the
corpus's own metrics and percentile-bootstrap 95% intervals:

* MOSEI: the most frequent training presence pattern of the six emotions, for every row;
* FIv2: the training mean of each trait;
* BAH: the training majority class;
* MELD (zero-shot, no training split): always "neutral".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from scd_core.evaluation import metric_targets, target_intervals
from scd_core.features import Manifest, load_split
from scd_core.tasks import CORPORA, EMO_CLASSES


def trivial_baselines(store: str | Path, modalities: Sequence[str], splits: Mapping[str, str],
                      n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Score the baselines of the corpora in ``splits`` (corpus -> evaluation split).

    Returns ``(metric -> {corpus, metric, value, low, high, n}, what each baseline predicts)``;
    a corpus whose splits are absent from the store is left out.
    """
    manifest = Manifest.read(Path(store))

    def labelled(corpus: str, split: str) -> np.ndarray | None:
        if split not in manifest.corpora.get(corpus, {}):
            return None
        data = load_split(store, corpus, split, list(modalities), "cpu", manifest)
        task = CORPORA[corpus].task
        return data.labels[task].numpy()[data.label_mask[task].numpy()]

    out: dict[str, dict[str, Any]] = {}
    what: dict[str, Any] = {}

    def score(corpus: str, labels: np.ndarray, pred: np.ndarray) -> None:
        target = metric_targets(corpus, labels)
        for key, ci in target_intervals(corpus, target, pred, n_resamples, seed).items():
            out[key] = {"corpus": corpus, "metric": key.removeprefix(f"{corpus}_"), "value": ci.value,
                        "low": ci.low, "high": ci.high, "n": len(target)}

    def pair(corpus: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        if corpus not in splits:
            return None, None
        return labelled(corpus, "train"), labelled(corpus, splits[corpus])

    train, test = pair("mosei")
    if train is not None and test is not None:
        patterns, counts = np.unique(metric_targets("mosei", train), axis=0, return_counts=True)
        pattern = patterns[np.argmax(counts)]
        score("mosei", test, np.broadcast_to(pattern, (len(test), len(pattern))).copy())
        names = [e for e, on in zip(EMO_CLASSES[1:], pattern) if on] or ["none (all absent)"]
        what["mosei_train_neutral_argmax"] = float(np.mean(train.argmax(axis=1) == 0))
        what["mosei"] = (f"most frequent training presence pattern: {' + '.join(names)} "
                         f"({counts.max()} of {len(train)} training rows)")
    train, test = pair("fiv2")
    if train is not None and test is not None:
        mean = train.mean(axis=0)
        score("fiv2", test, np.broadcast_to(mean, test.shape).copy())
        what["fiv2"] = "training mean per trait: " + ", ".join(f"{v:.3f}" for v in mean)
    train, test = pair("bah")
    if train is not None and test is not None:
        majority = int(np.bincount(train, minlength=2).argmax())
        score("bah", test, np.full(len(test), majority))
        what["bah"] = f"training majority class: {('absence', 'presence')[majority]}"
    meld = labelled("meld", splits["meld"]) if "meld" in splits else None
    if meld is not None:
        score("meld", meld, np.zeros(len(meld), dtype=np.int64))
        what["meld"] = "always neutral"
    return out, what


__all__ = ["trivial_baselines"]
