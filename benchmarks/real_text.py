"""Real-data benchmark on the authors' published annotation tables (text-only path), Table 2 style.

    python benchmarks/real_text.py --data ../shared/data/real_text [--out benchmarks/results]
        [--work DIR] [--epochs N] [--quick]

1. Features. ``configs/extract_real_text.yaml`` through ``extraction.pipeline.run_extraction``:
   transcripts (``text``) and Qwen2.5-VL behaviour descriptions (``behavior``) of every row,
   encoded by the offline MiniLM (mean || std of token embeddings, 768 dims). Splits come from
   that config: MOSEI held out by whole video and FIv2 by person (group splits 0.6/0.2/0.2),
   BAH train split by participant into train/dev (0.8/0.2) with BAH's own dev CSV as the
   test, MELD dev as ``meld/dev`` (zero-shot test only; it has no behaviour descriptions). The
   store lives in ``WORK/store``; a rerun with the same ``--work`` skips what is written.
2. Trainings (``scd_core.trainer.Trainer``; best epoch chosen on the dev splits only, from
   ``scd_core.evaluation.dev_score`` of the run's own tasks). The three settings of the
   paper's Table 2, as configs:

   (a) single-task supervised, per task t: ``data.train_corpora=[t's corpus]``,
       ``data.tasks=[t]``, ``ssl.enabled=false`` (MELD zero-shot only for EMO);
   (b) single-task with SSL on the other corpora, per task t:
       ``data.train_corpora=[mosei, fiv2, bah]``, ``data.tasks=[t]``, ``ssl.enabled=true``.
       The model has only t's head, so the supervised loss reads only t's labels (the
       other corpora's labels for their own tasks are never used); the other corpora's rows
       have no t label and get t's pseudo-label loss;
   (c) multitask SSL, the full protocol: all corpora, all tasks, SSL on (the defaults).

   Every run has the same model and optimiser settings and seed (``MODEL`` below, plus
   ``--epochs``, default 40 with early-stopping patience 10; one torch thread, ``--threads``). Each run is scored on the corpora of its own tasks
   (``load_eval_splits`` loads only those).
3. Test. The ``best`` checkpoint on the held-out test splits (MELD: its dev, never seen in
   training nor used for selection) with ``scd_core.evaluation.interval_report`` (percentile
   bootstrap 95% intervals, resampling rows with a fixed seed), and trivial baselines on the
   same rows with the same metric functions and bootstrap: MOSEI the training set's most
   frequent presence pattern, FIv2 the training mean per trait, BAH the training majority
   class, MELD "neutral". Paired bootstrap intervals of the differences (b) - (a),
   (c) - (a) and (c) - (b) (same resampled rows for both runs) say whether a gain is more
   than resampling noise.

Writes ``OUT/real_text.md`` (table, command, date, machine, wall times, split sizes, model
settings, discussion) and ``OUT/real_text.json`` (the same numbers). ``--quick`` runs a tiny
subset with a tiny model (for the test), into ``OUT/real_text_quick.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from tuning.local_ray import keep_local_ray_on_loopback  # noqa: E402

keep_local_ray_on_loopback()  # before anything imports ray

from scd_core import metrics as M  # noqa: E402
from scd_core.baselines import trivial_baselines  # noqa: E402
from scd_core.checkpoint import load_model  # noqa: E402
from scd_core.config import ExperimentConfig, load_config  # noqa: E402
from scd_core.evaluation import metric_inputs, interval_report, predict  # noqa: E402
from scd_core.features import Manifest, load_split  # noqa: E402
from scd_core.tasks import CORPORA, EMO_CLASSES  # noqa: E402
from scd_core.trainer import Trainer, load_eval_splits, load_training_data  # noqa: E402

EXTRACT_CONFIG = ROOT / "configs" / "extract_real_text.yaml"
TASK_CORPUS = {"emo": "mosei", "pt": "fiv2", "ah": "bah"}
TRAIN_CORPORA = ["mosei", "fiv2", "bah"]
MODALITIES = ["text", "behavior"]
# Table columns: (corpus, metric, header).
COLUMNS = [("mosei", "mmf1", "MOSEI mMF1"), ("mosei", "mwacc", "MOSEI mWACC"),
           ("fiv2", "macc", "FIv2 mACC"), ("fiv2", "mccc", "FIv2 mCCC"),
           ("bah", "mf1", "BAH MF1"), ("bah", "uar", "BAH UAR"),
           ("meld", "mf1", "MELD MF1"), ("meld", "wf1", "MELD WF1"), ("meld", "uar", "MELD UAR")]
# One model for every run (the paper's best MCDM-2 is 512-wide; ~2.6k training rows of 2 x 768
# features on a 2-core CPU call for a smaller one).
MODEL = {"model.hidden_dim": 256, "model.out_features": 256, "model.num_heads": 8, "model.dropout": 0.15,
         "optim.lr": 1e-3, "optim.batch_size": 32, "optim.early_stopping_patience": 10}
QUICK_MODEL = {**MODEL, "model.hidden_dim": 32, "model.out_features": 32, "model.num_heads": 4}
# --quick: the first rows of each table (MOSEI: its first rows come from few videos; row 153 is the first of a dev video).
QUICK_LIMITS = {"mosei_part.csv": 160, "fiv2_dev.csv": 40, "bah_train.csv": 30, "bah_dev.csv": 15, "meld_dev.csv": 20}
SETTINGS = {
    "a": "(a) single-task supervised",
    "b": "(b) single-task + SSL on the other corpora",
    "c": "(c) multitask SSL (full protocol)",
}
BASELINE = "majority class / mean trait"


# --------------------------------------------------------------------------- features


def extract(data: Path, store: Path, quick: bool) -> tuple[dict[str, Any], float]:
    """Run (or resume) the text-path extraction into ``store``; returns its summary and seconds."""
    import ray

    from extraction.config import load_extraction_config
    from extraction.pipeline import run_extraction

    cfg = load_extraction_config(EXTRACT_CONFIG, [f"output={store}", f"data_root={data.resolve()}"])
    if quick:
        for source in cfg.sources:
            source.limit = QUICK_LIMITS.get(Path(source.manifest).name)
    tic = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        summary = run_extraction(cfg, progress=False)
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - tic
    info = {"rows": {f"{c}/{s}": n for (c, s), n in sorted(summary.rows.items())}, "skipped": summary.skipped,
            "failures": {f"{s}: {r}": n for (s, r), n in summary.failures.items()},
            "unwritable": summary.unwritable, "seconds_per_stage": summary.seconds_per_stage}
    return info, seconds


def split_sizes(store: Path) -> dict[str, dict[str, int]]:
    """Rows (and rows labelled for the corpus's task) per corpus/split of the store."""
    manifest = Manifest.read(store)
    sizes = {}
    for corpus, splits in sorted(manifest.corpora.items()):
        for split in ("train", "dev", "test"):
            if split in splits:
                data = load_split(store, corpus, split, MODALITIES, "cpu", manifest)
                sizes[f"{corpus}/{split}"] = {
                    "rows": len(data), "labelled": int(data.label_mask[CORPORA[corpus].task].sum()),
                    "behavior_present": int(data.modality_mask[:, MODALITIES.index("behavior")].sum())}
    return sizes


# --------------------------------------------------------------------------- runs


def run_config(setting: str, task: str | None, model: dict[str, Any], epochs: int, seed: int) -> ExperimentConfig:
    """The experiment config of one training run (see the module docstring)."""
    tasks = ["emo", "pt", "ah"] if setting == "c" else [task]
    corpora = [TASK_CORPUS[task]] if setting == "a" else TRAIN_CORPORA
    overrides = {
        "seed": seed, "device": "cpu",
        "data.modalities": MODALITIES, "data.train_corpora": corpora, "data.tasks": tasks,
        "data.zero_shot_corpora": ["meld"] if "emo" in tasks else [],
        "ssl.enabled": setting != "a", "optim.epochs": epochs, **model,
    }
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def train_and_test(cfg: ExperimentConfig, store: Path, out_dir: Path, n_resamples: int, seed: int):
    """Train one config, then test its best checkpoint; returns (run info, interval rows, metric inputs)."""
    device = torch.device("cpu")
    tasks = list(cfg.data.tasks)
    data = load_training_data(cfg, store, device)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a fresh run, never a resume of an older one
    tic = time.perf_counter()
    result = Trainer(cfg, data, out_dir).fit()
    seconds = time.perf_counter() - tic
    model, _ = load_model(out_dir / "best", device)
    splits = load_eval_splits(cfg, store, "test", device)
    if "emo" in tasks and "meld" in data.dev:  # MELD's only split: its zero-shot test
        splits["meld"] = data.dev["meld"]
    rows = interval_report(model, splits, n_resamples=n_resamples, seed=seed)
    inputs = {c: metric_inputs(c, predict(model, d), d) for c, d in splits.items()}
    test_seconds = time.perf_counter() - tic - seconds
    best = result.history[result.best_epoch]
    info = {"tasks": tasks, "train_corpora": list(cfg.data.train_corpora), "ssl": cfg.ssl.enabled,
            "train_rows": len(data.train), "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "best_dev_score": result.best_score, "best_dev_metrics": best.metrics,
            "stopped_early": result.stopped_early, "seconds": seconds, "test_seconds": test_seconds,
            "pseudo_label_acceptance_at_best": best.acceptance, "task_weights_at_best": best.weights}
    if "meld" in inputs:  # what the zero-shot EMO head predicts on MELD (class shares)
        target, pred = inputs["meld"][1], inputs["meld"][2]
        info["meld_shares"] = {"true": dict(zip(EMO_CLASSES, np.bincount(target, minlength=7) / len(target))),
                               "predicted": dict(zip(EMO_CLASSES, np.bincount(pred, minlength=7) / len(pred)))}
    return info, rows, inputs


# --------------------------------------------------------------------------- baselines


def paired_differences(first: dict, second: dict, n_resamples: int, seed: int) -> dict[str, dict[str, float]]:
    """Bootstrap intervals of metric(second) - metric(first) on the same resampled rows."""
    diffs = {}
    for corpus in first.keys() & second.keys():
        fns, target, pred_a = first[corpus]
        _, target_b, pred_b = second[corpus]
        assert np.array_equal(target, target_b)
        for name, fn in fns.items():
            ci = M.bootstrap_ci(lambda t, a, b, fn=fn: fn(t, b) - fn(t, a), target, pred_a, pred_b,
                                n_resamples=n_resamples, seed=seed)
            diffs[f"{corpus}_{name}"] = {"value": ci.value, "low": ci.low, "high": ci.high}
    return diffs


# --------------------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPU cores visible, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}, {platform.system()}")


def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def cell(entry: dict[str, float] | None) -> str:
    if entry is None:
        return "—"
    return f"{pct(entry['value'])} [{pct(entry['low'])}, {pct(entry['high'])}]"


def table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    head = "| Setting | " + " | ".join(h for _, _, h in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(metrics.get(f"{c}_{m}")) for c, m, _ in COLUMNS) + " |")
    return "\n".join(lines)


def diff_table(diffs: dict[str, dict[str, dict[str, float]]]) -> str:
    head = "| Difference | " + " | ".join(h for _, _, h in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, metrics in diffs.items():
        cells = []
        for c, m, _ in COLUMNS:
            d = metrics.get(f"{c}_{m}")
            cells.append("—" if d is None else
                         f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    r = report
    lines = [
        "# Real-data benchmark: text + behaviour descriptions (MiniLM), Table 2 style",
        "",
        f"Command: `{r['command']}`  ",
        f"Date: {r['date']}  ",
        f"Machine: {r['machine']}  ",
        f"Wall time: {r['wall_seconds']['total']:.0f} s in all (extraction {r['wall_seconds']['extraction']:.0f} s, "
        f"trainings {r['wall_seconds']['training']:.0f} s, tests and baselines {r['wall_seconds']['testing']:.0f} s)",
        "",
        "Test-set metrics in %, each with its percentile-bootstrap 95% interval "
        f"({r['bootstrap']['n_resamples']} resamples of the test rows, seed {r['bootstrap']['seed']}). "
        "MOSEI, FIv2, BAH: held-out test splits; MELD: its dev table, zero-shot (never trained on nor "
        "used for model selection). Rows (a) and (b) combine three single-task models (EMO, PT, AH); "
        "MELD is scored by the EMO model. Higher is better everywhere.",
        "",
        table(r["table"]),
        "",
        "Paired bootstrap of the differences (percentage points; both runs scored on the same "
        "resampled rows; an interval excluding 0 is a difference beyond resampling noise of the test rows, "
        "not of training seeds):",
        "",
        diff_table(r["differences"]),
        "",
        "## Discussion",
        "",
        *r["discussion"],
        "",
        "## Baselines",
        "",
        *[f"- {c}: {w}" for c, w in r["baselines"].items()],
        "",
        "## Settings as configs",
        "",
        "- (a) single-task supervised, per task t: `data.train_corpora=[t's corpus] data.tasks=[t] ssl.enabled=false`"
        " (`data.zero_shot_corpora=[meld]` for EMO only).",
        "- (b) single-task + SSL, per task t: `data.train_corpora=[mosei,fiv2,bah] data.tasks=[t] ssl.enabled=true`: "
        "the model has t's head only, so only t's labels enter the supervised loss; the other corpora's rows "
        "are unlabelled for t and get t's pseudo-label loss (their own labels are unused).",
        "- (c) multitask SSL: `data.train_corpora=[mosei,fiv2,bah] data.tasks=[emo,pt,ah] ssl.enabled=true`.",
        "- Shared by all: " + ", ".join(f"`{k}={v}`" for k, v in r["model"].items()) + ". Everything else is the "
        "config default (paper values: Adam, plateau scheduler, GradNorm on both branches, tau 0.6, lambda 0.3, "
        "alpha_s 1.25, alpha_ss 1.0). Best epoch and early stopping on the dev split of the run's own task(s) "
        "(`scd_core.evaluation.dev_score`).",
        "",
        "## Training runs",
        "",
        "| Run | Train corpora | Tasks | SSL | Train rows | Epochs run | Best epoch | Best dev score | Seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {name} | {', '.join(i['train_corpora'])} | {', '.join(i['tasks'])} | {'on' if i['ssl'] else 'off'} | "
          f"{i['train_rows']} | {i['epochs_run']} | {i['best_epoch']} | {i['best_dev_score']:.4f} | {i['seconds']:.0f} |"
          for name, i in r["runs"].items()],
        "",
        "## Data (rows per split of the feature store)",
        "",
        "| Split | Rows | Labelled for its task | With behaviour description |",
        "|---|---|---|---|",
        *[f"| {k} | {v['rows']} | {v['labelled']} | {v['behavior_present']} |" for k, v in r["sizes"].items()],
        "",
        f"Features: {r['features']}",
        "",
    ]
    md_path.write_text("\n".join(lines))
    return md_path, json_path


def discuss(report: dict[str, Any]) -> list[str]:
    """Number-driven remarks (so they stay true for whatever run wrote the report), then caveats."""
    t, d, runs, sizes = report["table"], report["differences"], report["runs"], report["sizes"]
    base = t[BASELINE]
    notes = []
    beats = []
    for c, m, h in COLUMNS:
        key = f"{c}_{m}"
        better = [s for s in SETTINGS.values() if key in t[s] and key in base and t[s][key]["low"] > base[key]["high"]]
        worse = [s for s in SETTINGS.values() if key in t[s] and key in base and t[s][key]["high"] < base[key]["low"]]
        beats.append(f"{h} {len(better)} above / {len(worse)} below")
    notes.append("- Against the trivial baselines (settings whose whole 95% interval lies above / below the "
                 "baseline's, of 3): " + "; ".join(beats) + ".")
    for label, key in (("SSL on the other corpora, (b) - (a)", "(b) - (a)"), ("multitask, (c) - (b)", "(c) - (b)"),
                       ("full protocol vs single-task supervised, (c) - (a)", "(c) - (a)")):
        up = [h for c, m, h in COLUMNS if f"{c}_{m}" in d[key] and d[key][f"{c}_{m}"]["low"] > 0]
        down = [h for c, m, h in COLUMNS if f"{c}_{m}" in d[key] and d[key][f"{c}_{m}"]["high"] < 0]
        notes.append(f"- {label}: paired interval above 0 on {', '.join(up) or 'no metric'}; "
                     f"below 0 on {', '.join(down) or 'no metric'}; the other metrics' intervals include 0.")
    acceptance = [f"{n} {task}: {100 * a:.0f}%" for n, i in runs.items()
                  for task, a in i["pseudo_label_acceptance_at_best"].items() if a == a]
    rates = [a for i in runs.values() for a in i["pseudo_label_acceptance_at_best"].values() if a == a]
    if acceptance:
        notes.append("- Pseudo-labels: share of unlabelled candidates (rows; trait entries for PT) that passed the "
                     "confidence threshold 0.6 in the best epoch: " + ", ".join(acceptance) + "." +
                     (" Near 100% means the threshold filters almost nothing: the model trains on its own guesses "
                      "for nearly every other-corpus row." if min(rates) > 0.9 else ""))
    multi = runs.get("c-multitask")
    if multi:
        w = multi["task_weights_at_best"]
        notes.append("- GradNorm task weights of (c) in its best epoch: supervised " +
                     ", ".join(f"{k[4:]} {v:.2f}" for k, v in w.items() if k.startswith("sup_")) + "; pseudo-label " +
                     ", ".join(f"{k[4:]} {v:.2f}" for k, v in w.items() if k.startswith("ssl_")) +
                     " (budgets 3 and 0.9). A weight near 0 means that task's loss hardly trains the shared trunk.")
    shares = {n: i["meld_shares"] for n, i in runs.items() if "meld_shares" in i}
    if shares:
        true = next(iter(shares.values()))["true"]

        def top(s: dict[str, float]) -> str:
            return ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(s.items(), key=lambda kv: -kv[1])[:3])

        notes.append(f"- MELD zero-shot: true classes {top(true)}; predicted (argmax of the EMO head) " +
                     "; ".join(f"{n}: {top(s['predicted'])}" for n, s in shares.items()) + ".")
        share = report.get("mosei_train_neutral_argmax")
        if share is not None and all(s["predicted"]["neutral"] < true["neutral"] / 2 for s in shares.values()):
            notes.append(f"  The EMO head learns MOSEI's label distributions, where neutral is the largest share in "
                         f"only {100 * share:.0f}% of the training rows, so its argmax seldom says neutral, while "
                         f"{100 * true['neutral']:.0f}% of MELD is neutral.")
    n_test = {c: sizes.get(f"{c}/{'dev' if c == 'meld' else 'test'}", {}).get("labelled", 0) for c in CORPORA}
    notes += [
        "",
        "What these numbers do not show:",
        "",
        "- Training-seed variance: every setting is one training run (seed "
        f"{report['model']['seed']}); the intervals resample test rows only. Small differences between settings "
        "can flip with another seed.",
        f"- The paper's setting: this is text and behaviour descriptions only (no video, no audio), MiniLM instead of "
        f"EmoRoBERTa, a {report['model']['model.hidden_dim']}-wide MCDM instead of 512, and small parts of the "
        f"corpora (test rows: MOSEI {n_test['mosei']}, FIv2 {n_test['fiv2']}, BAH {n_test['bah']}, MELD "
        f"{n_test['meld']}; MOSEI is a 1,481-clip part of its dev set, FIv2 its 2,000-clip dev set, MELD's dev set "
        "stands in for its test set, BAH's dev set is the test here). The numbers are not comparable with the paper's Table 2.",
        "- Equal training effort: an epoch is one pass over all training rows of the run, so a (b) or (c) "
        "epoch takes several times more optimisation steps (each batch mixes the corpora) than an (a) epoch; all "
        "runs share the epoch limit and early-stopping patience, so (a) runs stop after fewer steps.",
        "- Model selection is on small dev splits (rows: " + ", ".join(
            f"{c} {sizes[f'{c}/dev']['labelled']}" for c in TRAIN_CORPORA if f"{c}/dev" in sizes) +
        "), so the chosen epoch is itself noisy.",
    ]
    return notes


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="the real_text folder (../shared/data/real_text)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the report goes")
    parser.add_argument("--work", type=Path, help="feature store + checkpoints (default: a folder under the temp dir)")
    parser.add_argument("--epochs", type=int, help="epochs per training run (default 40; --quick: 2)")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (default 1000; --quick: 100)")
    parser.add_argument("--seed", type=int, default=0, help="training and bootstrap seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training (default 1: batches of 32 gain little from more, and one "
                             "thread keeps timings steady on a shared 2-core CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny subset and model (a smoke run for the test)")
    args = parser.parse_args(argv)
    command = "python benchmarks/real_text.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args, command)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another process (the test)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The whole benchmark for parsed arguments; returns the report written."""
    epochs = args.epochs or (2 if args.quick else 40)
    n_resamples = args.resamples or (100 if args.quick else 1000)
    model = QUICK_MODEL if args.quick else MODEL
    work = args.work or Path(tempfile.gettempdir()) / ("scd-real-text-quick" if args.quick else "scd-real-text")
    store = work / "store"
    total_tic = time.perf_counter()

    print(f"features: extracting {args.data} into {store} (reruns skip written rows)", flush=True)
    extraction, extraction_seconds = extract(args.data, store, args.quick)
    print(f"features: {sum(extraction['rows'].values())} rows in {extraction_seconds:.0f} s "
          f"({extraction['skipped']} already written)", flush=True)
    sizes = split_sizes(store)
    manifest = Manifest.read(store)
    features = "; ".join(f"{m}: {i.encoder} ({i.dim} dims)" for m, i in manifest.modalities.items())

    runs: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, dict[str, float]]] = {s: {} for s in SETTINGS}
    inputs: dict[str, dict[str, tuple]] = {s: {} for s in SETTINGS}
    plan = [(s, t) for s in ("a", "b") for t in ("emo", "pt", "ah")] + [("c", None)]
    for setting, task in plan:
        name = f"{setting}-{task or 'multitask'}"
        cfg = run_config(setting, task, model, epochs, args.seed)
        info, rows, run_inputs = train_and_test(cfg, store, work / "runs" / name, n_resamples, args.seed)
        runs[name] = info
        for row in rows:
            results[setting][f"{row['corpus']}_{row['metric']}"] = row
        inputs[setting].update(run_inputs)
        print(f"{name:14s} {info['seconds']:6.1f} s  {info['epochs_run']:2d} epochs  best dev {info['best_dev_score']:.4f} "
              f"at epoch {info['best_epoch']}", flush=True)
    training_seconds = sum(i["seconds"] for i in runs.values())
    test_tic = time.perf_counter()
    base, what = trivial_baselines(store, MODALITIES, {"mosei": "test", "fiv2": "test", "bah": "test", "meld": "dev"},
                                   n_resamples, args.seed)
    differences = {
        "(b) - (a)": paired_differences(inputs["a"], inputs["b"], n_resamples, args.seed),
        "(c) - (a)": paired_differences(inputs["a"], inputs["c"], n_resamples, args.seed),
        "(c) - (b)": paired_differences(inputs["b"], inputs["c"], n_resamples, args.seed),
    }
    testing = time.perf_counter() - test_tic + sum(i["test_seconds"] for i in runs.values())
    table_rows = {BASELINE: base, **{SETTINGS[s]: results[s] for s in SETTINGS}}
    report = {
        "command": command,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "wall_seconds": {"extraction": extraction_seconds, "training": training_seconds, "testing": testing,
                         "total": time.perf_counter() - total_tic,
                         "per_run": {n: i["seconds"] for n, i in runs.items()}},
        "bootstrap": {"n_resamples": n_resamples, "seed": args.seed, "confidence": 0.95},
        "model": {**model, "optim.epochs": epochs, "seed": args.seed, "data.modalities": MODALITIES},
        "features": features,
        "extraction": extraction,
        "sizes": sizes,
        "table": table_rows,
        "columns": [f"{c}_{m}" for c, m, _ in COLUMNS],
        "differences": differences,
        "baselines": {k: v for k, v in what.items() if isinstance(v, str)},
        "mosei_train_neutral_argmax": what.get("mosei_train_neutral_argmax"),
        "runs": runs,
    }
    report["discussion"] = discuss(report)
    report["wall_seconds"]["total"] = time.perf_counter() - total_tic
    md, js = write_report(report, args.out, "real_text_quick" if args.quick else "real_text")
    print()
    print(table(table_rows))
    print()
    print(f"wall time {report['wall_seconds']['total']:.0f} s; report {md} and {js}")
    return report


if __name__ == "__main__":
    main()
