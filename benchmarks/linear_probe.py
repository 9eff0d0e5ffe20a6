"""Linear probes: what a linear model gets from the same features as the MCDM.

    python benchmarks/linear_probe.py --store WORK/store [--out benchmarks/results]
        [--compare benchmarks/results/real_text.json] [--resamples 1000] [--seed 0]

The reference point that tells a researcher whether the fusion model earns its keep, and how
much of a corpus's score the features alone allow. Per task, on its own corpus (EMO on MOSEI,
PT on FIv2, AH on BAH), standardised features feed:
- EMO: a logistic regression on the argmax of the label distribution;
- AH: a logistic regression;
- PT: a ridge regression per trait, clipped to [0, 1].

The regularisation is chosen on the dev split by the dev score that selects the MCDM
(``scd_core.evaluation.dev_score``); MELD never selects. The chosen probe is scored on the
test splits. A zero-shot EMO corpus (MELD: no training split) is scored with the MOSEI probe on
its test split, else its dev split, as ``real_text.py`` does.

There are two inputs: the transcript alone (``text``), and the transcript with the behaviour
description (``text + behavior``, as the MCDM sees them). A modality a row lacks (a failed
extraction; MELD has no behaviour descriptions at all) is imputed with the training mean, the
linear counterpart of the MCDM masking that node; the report counts the imputed rows.

Probes are deterministic, so an interval resamples test rows only. With ``--compare``
(a ``real_text.json``), that report's rows (its MCDM settings and trivial baselines) stand
beside the probes. Writes
``OUT/linear_probe.md`` and ``OUT/linear_probe.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from scd_core.evaluation import CORPUS_METRICS, corpus_metrics, dev_score, metric_inputs, target_intervals  # noqa: E402
from scd_core.features import CorpusTensors, Manifest, load_split  # noqa: E402
from scd_core.tasks import CORPORA, EMO_CLASSES  # noqa: E402

TASK_CORPUS = {"emo": "mosei", "pt": "fiv2", "ah": "bah"}
INPUTS = {"text": ("text",), "text + behavior": ("text", "behavior")}
# Inverse regularisation strength C (ridge: alpha = 1 / C), chosen on dev.
STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
COLUMNS = [f"{c}_{m}" for c in ("mosei", "fiv2", "bah", "meld") for m in CORPUS_METRICS[c]]


@dataclass
class Probe:
    """One fitted probe: ``outputs`` gives what the MCDM's head would, for the metrics."""

    task: str
    scaler: StandardScaler
    model: LogisticRegression | Ridge
    strength: float

    def outputs(self, x: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows [N, D] (NaN where a modality is missing) -> {task: PT scores [N, 5], or
        log-probabilities [N, C] as logits}."""
        z = np.nan_to_num(self.scaler.transform(x), nan=0.0)  # standardised: 0 is the training mean
        if self.task == "pt":
            return {"pt": torch.from_numpy(np.clip(self.model.predict(z), 0.0, 1.0)).float()}
        classes = len(EMO_CLASSES) if self.task == "emo" else 2
        proba = np.zeros((len(z), classes))  # a class absent from training is never predicted
        proba[:, self.model.classes_] = self.model.predict_proba(z)
        return {self.task: torch.from_numpy(np.log(np.clip(proba, 1e-12, 1.0))).float()}


def features(data: CorpusTensors, modalities: Sequence[str]) -> tuple[np.ndarray, int]:
    """The rows' modalities side by side [N, sum of dims], NaN where a row lacks one (the
    scaler skips NaN when fitting); and how many rows lack at least one."""
    blocks = []
    for m in modalities:
        block = data.features[m].numpy().astype(np.float64)
        block[~data.modality_mask[:, data.modalities.index(m)].numpy()] = np.nan
        blocks.append(block)
    x = np.concatenate(blocks, axis=1)
    return x, int(np.isnan(x).any(axis=1).sum())


def probe_targets(task: str, data: CorpusTensors) -> tuple[np.ndarray, np.ndarray]:
    """(labelled rows as a bool mask, their training targets: class index, or PT scores)."""
    rows = data.label_mask[task].numpy()
    labels = data.labels[task].numpy()[rows]
    return rows, labels.argmax(axis=1) if task == "emo" else labels


def fit_probe(task: str, train: CorpusTensors, dev: CorpusTensors, modalities: Sequence[str]) -> tuple[Probe, float]:
    """The probe with the best dev score over ``STRENGTHS``, and that score."""
    corpus = TASK_CORPUS[task]
    (x_train, _), (x_dev, _) = features(train, modalities), features(dev, modalities)
    rows, y = probe_targets(task, train)
    scaler = StandardScaler().fit(x_train[rows])
    z_train = np.nan_to_num(scaler.transform(x_train[rows]), nan=0.0)
    best: tuple[Probe, float] | None = None
    for strength in STRENGTHS:
        model = (Ridge(alpha=1.0 / strength) if task == "pt" else
                 LogisticRegression(C=strength, max_iter=5000)).fit(z_train, y)
        probe = Probe(task, scaler, model, strength)
        score = dev_score(corpus_metrics(corpus, probe.outputs(x_dev), dev), [task])
        if best is None or score > best[1]:
            best = (probe, score)
    return best


def run(store: Path, n_resamples: int, seed: int) -> dict[str, Any]:
    """Fit and score every probe; the report's numbers."""
    manifest = Manifest.read(store)
    modalities = list(manifest.modalities)

    loaded: dict[tuple[str, str], CorpusTensors] = {}

    def split(corpus: str, name: str) -> CorpusTensors:  # each split read once, for both probes
        if (corpus, name) not in loaded:
            loaded[corpus, name] = load_split(store, corpus, name, modalities, "cpu", manifest)
        return loaded[corpus, name]

    zero_shot = [c for c, splits in manifest.corpora.items()
                 if CORPORA.get(c) is not None and CORPORA[c].task == "emo" and "train" not in splits]
    rows: dict[str, dict[str, Any]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    imputed: dict[str, dict[str, int]] = {}  # probe -> corpus/split -> rows with a modality imputed
    for name, inputs in INPUTS.items():
        if not set(inputs) <= set(modalities):
            continue
        rows[name], chosen[name], imputed[name] = {}, {}, {}
        for task, corpus in TASK_CORPUS.items():
            if not {"train", "dev", "test"} <= set(manifest.corpora.get(corpus, {})):
                continue
            probe, score = fit_probe(task, split(corpus, "train"), split(corpus, "dev"), inputs)
            chosen[name][task] = {"strength": probe.strength, "dev_score": score}
            targets = [(corpus, "test")] + ([(c, "test" if "test" in manifest.corpora[c] else "dev")
                                             for c in zero_shot] if task == "emo" else [])
            for scored, split_name in targets:
                data = split(scored, split_name)
                x, imputed[name][f"{scored}/{split_name}"] = features(data, inputs)
                _, target, pred = metric_inputs(scored, probe.outputs(x), data)
                for key, ci in target_intervals(scored, target, pred, n_resamples, seed).items():
                    rows[name][key] = {"value": ci.value, "low": ci.low, "high": ci.high}
    return {"rows": rows, "chosen": chosen, "imputed": imputed, "zero_shot": zero_shot}


def cell(entry: dict[str, float] | None) -> str:
    if entry is None:
        return "—"
    return f"{100 * entry['value']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "linear_probe.json", out / "linear_probe.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Linear probes on the same features as the MCDM", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}  ", f"Store: `{report['store']}`", "",
             "Test-set metrics in %, with a 95% bootstrap interval over test rows "
             f"({report['n_resamples']} resamples, seed {report['seed']}). Each probe's regularisation was chosen "
             "on the dev split by the dev score that selects the MCDM; "
             f"{', '.join(report['zero_shot']) or 'no corpus'} zero-shot (never selects).", "",
             "| Model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, metrics in report["rows"].items():
        lines.append(f"| linear probe, {name} | " + " | ".join(cell(metrics.get(k)) for k in COLUMNS) + " |")
    for name, metrics in report.get("compared", {}).items():  # real_text's settings are "(a) ...", "(c*) ..."
        model = f"MCDM {name}" if name.startswith("(") else name
        lines.append(f"| {model} | " + " | ".join(cell(metrics.get(k)) for k in COLUMNS) + " |")
    lines += ["", "Chosen regularisation (C; ridge alpha = 1/C) and its dev score:", ""]
    for name, tasks in report["chosen"].items():
        lines.append(f"- {name}: " + ", ".join(f"{t} C={c['strength']:g} (dev {c['dev_score']:.4f})"
                                               for t, c in tasks.items()))
    lines += ["", "Test rows with a modality imputed (the training mean), per probe: " + "; ".join(
        f"{name}: " + ", ".join(f"{where} {n}" for where, n in counts.items()) for name, counts in report["imputed"].items())]
    if report.get("compared_from"):
        lines += ["", f"The other rows: from `{report['compared_from']}` (MCDM: the mean over its training seeds, "
                      "intervals over test rows and seeds), on the same test splits when `--store` is that "
                      "report's store."]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, type=Path, help="a feature store (real_text.py's WORK/store)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the report goes")
    parser.add_argument("--compare", type=Path, help="a real_text.json whose MCDM rows stand beside the probes")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    if not (args.store / "manifest.json").is_file():
        parser.error(f"--store {args.store}: no feature store there (no manifest.json)")
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare {args.compare}: no such file")
    report = {"command": "python benchmarks/linear_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "store": str(args.store),
              "n_resamples": args.resamples, "seed": args.seed, **run(args.store, args.resamples, args.seed)}
    if args.compare is not None:
        table = json.loads(args.compare.read_text())["table"]
        report["compared_from"] = str(args.compare)
        report["compared"] = {name: {k: v for k, v in row.items() if k in COLUMNS and math.isfinite(v["value"])}
                              for name, row in table.items()}
    md, js = write_report(report, args.out)
    print(md.read_text())
    print(f"report {md} and {js}")
    return report


if __name__ == "__main__":
    main()
