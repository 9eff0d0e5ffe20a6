"""Videos (or ready-made texts) -> the feature store, as a Ray Data pipeline.

    sources -> [decode] -> [faces] -> [video] -> [audio] -> [transcribe] -> [describe] -> [text]
            -> [scene] -> part files (as rows arrive) -> the feature store + errors table

Behaviour comes from the VLM's description ([describe], then [text]) when the behaviour
encoder is a text encoder, or "by scene" from the frames ([scene]) when it is an image
encoder (``ExtractionConfig.behavior_from``).

Each stage is an actor pool with its own resources (``ExtractionConfig.resources``);
stages that a run does not need (no videos, a modality not asked for) are left out.
Results are written as they arrive into ``OUTPUT/_parts``, so an interrupted run loses
nothing already written; a rerun skips samples written without errors and retries the
others. At the end the parts become ``OUTPUT/<corpus>/<split>.parquet`` (through
``scd_core.features``) with a manifest fingerprinting every encoder and setting, and
``OUTPUT/errors.parquet`` lists every failure with its stage and reason.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extraction.config import ExtractionConfig, StageResources
from extraction.manifest import read_sources
from extraction.stages import STAGE_CLASSES, from_bytes
from scd_core.features import FeatureStoreError, FeatureStoreWriter, Manifest, ModalityInfo
from scd_core.features.schema import MANIFEST
from scd_core.tasks import LABEL_COLUMNS, MODALITIES

PARTS = "_parts"
ERRORS = "errors.parquet"


def plan_stages(cfg: ExtractionConfig, rows: list[dict[str, Any]]) -> list[str]:
    """The stages this run needs, in order."""
    has_video = any(r["video"] for r in rows)
    wants = set(cfg.modalities)
    scene = "behavior" in wants and cfg.behavior_from == "frames"
    needs_transcript = "text" in wants and any(r["video"] and not r["has_transcript"] for r in rows)
    needs_description = "behavior" in wants and not scene and any(r["video"] and not r["has_description"]
                                                                   for r in rows)
    stages = []
    if has_video and ({"video", "audio"} & wants or needs_transcript or needs_description or scene):
        stages.append("decode")
    if has_video and "video" in wants:
        stages += ["faces", "video"]
    if has_video and "audio" in wants:
        stages.append("audio")
    if needs_transcript:
        stages.append("transcribe")
    if needs_description:
        stages.append("describe")
    if "text" in wants or ("behavior" in wants and not scene):
        stages.append("text")
    if scene and has_video:
        stages.append("scene")
    return stages


def _done_ids(output: Path) -> set[tuple[str, str]]:
    """(corpus, sample_id) whose latest written row has no error: a rerun skips them."""
    latest: dict[tuple[str, str], str] = {}
    for part in sorted((output / PARTS).glob("*/*/part-*.parquet")):  # names sort by write time
        table = pq.read_table(part, columns=["corpus", "sample_id", "errors"]).to_pydict()
        latest.update(zip(zip(table["corpus"], table["sample_id"]), table["errors"]))
    return {key for key, errors in latest.items() if not json.loads(errors)}


def _part_table(rows: dict[str, np.ndarray], modalities: list[str]) -> pa.Table:
    columns = {name: pa.array([str(v) for v in rows[name]]) for name in ("sample_id", "corpus", "split", "errors")}
    for m in modalities:
        values = [from_bytes(b).tolist() if b else None for b in rows.get(f"f_{m}", [b""] * len(rows["sample_id"]))]
        columns[f"f_{m}"] = pa.array(values, pa.list_(pa.float32()))
    for c in LABEL_COLUMNS:
        columns[c] = pa.array(np.asarray(rows[c], dtype=np.float64))
    for name in rows:
        if name.startswith("t_"):
            columns[name] = pa.array(np.asarray(rows[name], dtype=np.float64))
        elif name.startswith("info_"):
            columns[name] = pa.array([str(v) for v in rows[name]])
    return pa.table(columns)


def _write_parts(table: pa.Table, output: Path) -> None:
    """One part file per (corpus, split) present in the batch; written whole, then renamed."""
    for key in {(c, s) for c, s in zip(table["corpus"].to_pylist(), table["split"].to_pylist())}:
        mask = pc.and_(pc.equal(table["corpus"], key[0]), pc.equal(table["split"], key[1]))
        folder = output / PARTS / key[0] / key[1]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".part-{uuid.uuid4().hex}.tmp"
        pq.write_table(table.filter(mask), tmp)
        tmp.rename(folder / f"part-{time.time_ns()}-{uuid.uuid4().hex[:6]}.parquet")


@dataclass
class Summary:
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)
    seconds_per_stage: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    unwritable: int = 0


def _read_parts(output: Path) -> dict[tuple[str, str], pa.Table]:
    tables = {}
    for split_dir in sorted((output / PARTS).glob("*/*")):
        parts = sorted(split_dir.glob("part-*.parquet"))
        if parts:
            tables[(split_dir.parent.name, split_dir.name)] = pa.concat_tables(
                [pq.read_table(p) for p in parts], promote_options="default")
    return tables


def modality_info(cfg: ExtractionConfig, modality: str, info: dict[str, Any]) -> ModalityInfo:
    """The manifest entry of ``modality``: its encoder's ``ModelInfo`` (as a dict) and the
    run's settings that shape its features (frames, face pipeline, transcriber, describer)."""
    settings: dict[str, Any] = {"encoder": info["name"], **info["settings"]}
    if modality == "video":
        settings.update(max_frame_side=cfg.max_frame_side, faces="mediapipe")
    if modality == "text":
        settings["transcriber"] = cfg.transcriber.model_dump()
    if modality == "behavior":
        settings["source"] = cfg.behavior_from
        if cfg.behavior_from == "description":
            settings["describer"] = cfg.describer.model_dump()
        else:
            settings["max_frame_side"] = cfg.max_frame_side
    from_frames = modality == "video" or (modality == "behavior" and cfg.behavior_from == "frames")
    return ModalityInfo(
        encoder=info["model_id"], dim=info["dim"], revision=info["revision"], fingerprint=info["fingerprint"],
        frames=cfg.frames if from_frames else None,
        sampling_rate=48000 if modality == "audio" else None, settings=settings)


def modality_infos(cfg: ExtractionConfig, tables: dict[tuple[str, str], pa.Table]) -> dict[str, ModalityInfo]:
    """Manifest entries from the encoder info the feature stages stamped on their rows.

    Rows made by different encoders (a rerun with another model) cannot share a store.
    """
    infos: dict[str, ModalityInfo] = {}
    for modality in (m for m in MODALITIES if m in cfg.modalities):
        seen = {v for t in tables.values() if f"info_{modality}" in t.column_names
                for v in t[f"info_{modality}"].to_pylist() if v}
        if len(seen) > 1:
            raise ValueError(f"{cfg.output}: modality {modality} was extracted by different encoders {sorted(seen)}; "
                             "extract into a new output")
        if not seen:
            raise ValueError(f"{cfg.output}: no sample reached the {modality} encoder; nothing to describe it by")
        infos[modality] = modality_info(cfg, modality, json.loads(seen.pop()))
    return infos


def consolidate(cfg: ExtractionConfig, source: str) -> Summary:
    """Parts -> the feature store (latest row per sample wins) and the errors table."""
    output = Path(cfg.output)
    summary = Summary()
    tables = _read_parts(output)
    modality_info = modality_infos(cfg, tables)
    writer = FeatureStoreWriter(output, modality_info, source=source)
    error_rows: list[dict[str, str]] = []
    stage_time: dict[str, list[float]] = defaultdict(list)
    for (corpus, split), table in tables.items():
        latest: dict[str, int] = {sid: i for i, sid in enumerate(table["sample_id"].to_pylist())}
        keep = []
        for sid, i in latest.items():
            errors = json.loads(table["errors"][i].as_py())
            error_rows += [{"corpus": corpus, "split": split, "sample_id": sid, "stage": s, "reason": r}
                           for s, r in errors]
            summary.failures.update((s, r) for s, r in errors)
            if any(table[f"f_{m}"][i].is_valid for m in modality_info):
                keep.append(i)
            else:
                summary.unwritable += 1
                error_rows.append({"corpus": corpus, "split": split, "sample_id": sid, "stage": "store",
                                   "reason": "no modality could be extracted; not written"})
        for name in table.column_names:
            if name.startswith("t_"):
                stage_time[name[2:]] += [v for v in table[name].to_pylist() if v is not None]
        if not keep:
            continue
        rows = table.take(pa.array(keep))
        features, present = {}, {}
        for m, info in modality_info.items():
            col = rows[f"f_{m}"].to_pylist()
            present[m] = np.array([v is not None for v in col])
            features[m] = np.array([v if v is not None else [0.0] * info.dim for v in col], dtype=np.float32)
        labels = {c: rows[c].to_numpy(zero_copy_only=False) for c in LABEL_COLUMNS}
        writer.write_split(corpus, split, rows["sample_id"].to_pylist(), features, labels, present)
        summary.rows[(corpus, split)] = len(keep)
    errors = pa.Table.from_pylist(error_rows, schema=pa.schema(
        [(n, pa.string()) for n in ("corpus", "split", "sample_id", "stage", "reason")]))
    pq.write_table(errors, output / ERRORS)
    summary.seconds_per_stage = {s: float(np.sum(v)) for s, v in stage_time.items()}
    return summary


def source_item(row: dict[str, Any]) -> dict[str, Any]:
    """A ``read_sources`` row as the pipeline's first columns: ids, inputs, labels, no errors yet."""
    return {"sample_id": row["sample_id"], "corpus": row["corpus"], "split": row["split"], "video": row["video"],
            "transcript": row["transcript"], "has_transcript": row["has_transcript"],
            "description": row["description"], "has_description": row["has_description"], "errors": "[]",
            **{c: row["labels"].get(c, np.nan) for c in LABEL_COLUMNS}}


def stage_dataset(cfg: ExtractionConfig, items: list[dict[str, Any]], stages: list[str]):
    """``items`` (``source_item`` rows) through ``stages``, each an actor pool with the
    resources ``cfg.resources`` gives it: a lazy ``ray.data.Dataset``."""
    import ray

    ds = ray.data.from_items(items)
    for name in stages:
        ds = map_stage(ds, STAGE_CLASSES[name], (cfg,), cfg.stage(name))
    return ds


def map_stage(ds, stage_class: type, args: tuple, res: StageResources):
    """``ds`` mapped by ``stage_class(*args)`` (a callable on numpy batches) on an actor pool
    of ``res.concurrency`` actors with ``res``'s CPUs, GPUs and batch size."""
    import ray

    # compute= rather than concurrency=, which Ray Data deprecates since 2.51.
    return ds.map_batches(stage_class, fn_constructor_args=args, batch_format="numpy", batch_size=res.batch_size,
                          compute=ray.data.ActorPoolStrategy(size=res.concurrency), num_cpus=res.num_cpus,
                          num_gpus=res.num_gpus)


def check_output(cfg: ExtractionConfig) -> None:
    """Refuse, before any work, an output that holds a feature store this extraction cannot add
    to: one it did not write (synthetic corpora, a copy: no ``_parts``) or one of other
    modalities. Writing it would fail only at the end, after every sample was extracted."""
    output = Path(cfg.output)
    if output.exists() and not output.is_dir():
        raise FeatureStoreError(f"output {output}: a file, not a folder for the feature store")
    if not (output / MANIFEST).exists():
        return
    manifest = Manifest.read(output)
    if not (output / PARTS).is_dir():
        raise FeatureStoreError(f"output {output}: holds a feature store that no extraction wrote there "
                                f"({manifest.source or 'no source recorded'}); extract into a new output")
    if set(manifest.modalities) != set(cfg.modalities):
        raise FeatureStoreError(f"output {output}: its store has modalities {sorted(manifest.modalities)}, this "
                                f"extraction writes {sorted(cfg.modalities)}; extract into a new output")


def run_extraction(cfg: ExtractionConfig, progress: bool = True) -> Summary:
    """Extract every source of ``cfg`` into ``cfg.output``; see the module docstring."""
    import ray

    check_output(cfg)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    rows = read_sources(cfg)
    done = _done_ids(output)
    todo = [r for r in rows if (r["corpus"], r["sample_id"]) not in done]
    stages = plan_stages(cfg, rows)
    modalities = [m for m in MODALITIES if m in cfg.modalities]
    if todo:
        if not ray.is_initialized():
            ray.init()
        ray.data.DataContext.get_current().enable_progress_bars = progress
        ds = stage_dataset(cfg, [source_item(r) for r in todo], stages)
        for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
            _write_parts(_part_table(batch, modalities), output)
    summary = consolidate(cfg, source=f"extraction: stages {stages}")
    summary.skipped = len(rows) - len(todo)
    return summary
