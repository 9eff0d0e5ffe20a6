"""New videos -> emotions, Big Five traits and ambivalence/hesitancy, on Ray Data.

    inputs (video files, folders, manifest CSVs) -> the extraction stages the model's training
    store was built with -> [predict] (an actor pool holding the model) -> OUTPUT/_parts
    -> OUTPUT/predictions.parquet + OUTPUT/predictions.csv

The checkpoint carries its training store's manifest entries (``ModelSpec.store_modalities``:
encoder ids and fingerprints, frame count, face pipeline, transcriber, VLM and prompt), so
the extraction config is rebuilt from them (``predict_config``); the user's values (an
extraction YAML and ``key=value`` overrides) only say where the models live and what runs
where (``local_dir``, ``device``, ``resources``). Before any video is read, settings the user
changed are compared with the recorded ones (``setting_differences``), then every feature
encoder is built once and what extraction would record is compared with what was recorded
(``extractor_differences``: ids, revisions, weight fingerprints, dimensions): a difference
stops the run (``ExtractorMismatch``) unless ``allow_mismatch``, and then every output row
carries the warning. A dimension the model cannot take always stops it.

One row per input video (``sample_id``, ``video``), the prediction table of
``scd_core.inference`` (null where no prediction could be made), ``errors`` ("stage: reason"
per failure, "; "-joined) and ``warning``. A video that fails in a stage still gets
predictions from the modalities it has (the model masks the others); one with none left
gets an error row. Rows are written as they arrive; a rerun skips videos predicted without
errors by the same model and retries the others, as extraction does.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import ValidationError

from extraction.config import ExtractionConfig
from extraction.manifest import VIDEO_SUFFIXES, ManifestError, read_source
from extraction.models import check_models
from extraction.pipeline import map_stage, modality_info, plan_stages, source_item, stage_dataset
from extraction.stages import from_bytes
from scd_core.checkpoint import ModelSpec, load_model, load_spec
from scd_core.config import ConfigError, deep_merge, flatten, format_errors
from scd_core.features import ModalityInfo
from scd_core.inference import output_columns, predict_vectors
from scd_core.tasks import feature_column

PARTS = "_parts"
PREDICTIONS = "predictions"
CHECKPOINT_FILES = ("config.json", "model.safetensors")
# Where the extraction config names each modality's encoder.
ENCODER_FIELDS = {"video": "video_encoder", "audio": "audio_encoder", "text": "text_encoder",
                  "behavior": "behavior_encoder"}
# Settings that say where a model's files are on the machine that extracted, not what the model is.
LOCAL_SETTINGS = ("transcriber.local_dir", "describer.local_dir")
# Setting keys that stores written by earlier versions record: (model, old key) -> new key (None: dropped).
RENAMED_SETTINGS = {("describer", "name"): "backend", ("transcriber", "name"): None}


class PredictError(ValueError):
    """Prediction cannot start; the message names the file, field or setting."""


class ExtractorMismatch(PredictError):
    """The extractors here differ from those the model was trained on."""

    def __init__(self, differences: list[str]) -> None:
        super().__init__("the extractors here differ from those the model's training features were made with:\n  "
                         + "\n  ".join(differences)
                         + "\nfix the extraction config (or pass --allow-mismatch to predict anyway, with a warning "
                           "in every output row)")
        self.differences = differences


# ------------------------------------------------------------------ configuration

def made_by_pipeline(store: Mapping[str, ModalityInfo] | None) -> bool:
    """Whether every entry names an encoder of this pipeline (not so for synthetic corpora or
    checkpoints written before they carried their store's entries)."""
    from extraction.encoders import ENCODERS

    return bool(store) and all(info.settings.get("encoder") in ENCODERS for info in store.values())


def current_settings(info: ModalityInfo) -> ModalityInfo:
    """``info`` with the transcriber's and describer's settings under today's keys
    (``RENAMED_SETTINGS``), so that a model trained on an older store is rebuilt and compared
    like a new one."""
    settings = dict(info.settings)
    for (model, old), new in RENAMED_SETTINGS.items():
        if isinstance(settings.get(model), dict) and old in settings[model]:
            renamed = {k: v for k, v in settings[model].items() if k != old}
            if new is not None:
                renamed[new] = settings[model][old]
            settings[model] = renamed
    return replace(info, settings=settings)


def recorded_values(store: Mapping[str, ModalityInfo]) -> dict[str, Any]:
    """Extraction-config values that rebuild the extraction a training store recorded
    (``made_by_pipeline(store)`` must hold)."""
    from extraction.encoders import ENCODERS

    values: dict[str, Any] = {"modalities": list(store)}
    for modality, info in store.items():
        settings = current_settings(info).settings
        name = settings["encoder"]
        # The default id stays implicit: some encoders load a packaged copy when none is given.
        default = getattr(ENCODERS.get(name), "default_id", None)
        values[ENCODER_FIELDS[modality]] = {"name": name, **({} if info.encoder == default else
                                                             {"model_id": info.encoder})}
        if info.frames is not None:
            values["frames"] = info.frames
        if "max_frame_side" in settings:
            values["max_frame_side"] = settings["max_frame_side"]
        for model in ("transcriber", "describer"):
            if model in settings:
                values[model] = {k: v for k, v in settings[model].items() if k != "local_dir"}
    return values


def input_sources(inputs: list[str], columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Source values for each input: a folder (``videos``), a manifest CSV (``manifest`` with
    ``columns``), or one video (its folder, filtered to the file by ``read_inputs``).

    The clips are the ``unlabelled`` corpus (predictions have no labels); the split is a
    placeholder that the extraction stages carry along.
    """
    sources = []
    for given in inputs:
        path = Path(given).resolve()
        base = {"corpus": "unlabelled", "split": "test"}
        if path.is_dir():
            sources.append({**base, "videos": str(path)})
        elif path.suffix.lower() == ".csv":
            sources.append({**base, "manifest": str(path), "columns": dict(columns)})
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            if not path.is_file():
                raise PredictError(f"{path}: no such video file")
            sources.append({**base, "videos": str(path.parent)})
        else:
            raise PredictError(f"{path}: not a folder, a manifest CSV or a video ({', '.join(VIDEO_SUFFIXES)})")
    return sources


def predict_config(spec: ModelSpec, inputs: list[str], output: str | Path,
                   user_values: Mapping[str, Any] | None = None) -> ExtractionConfig:
    """The extraction config for predicting with ``spec``'s model on ``inputs``.

    The recorded extraction (``recorded_values``), the user's values on top (their ``sources``
    and ``output`` are replaced by ``inputs`` and ``output``, encoders of modalities the model
    does not take are dropped; ``columns`` maps manifest CSVs as in extraction), the model's
    modalities. A checkpoint that records no extraction of this pipeline needs ``user_values``
    naming the encoders.
    """
    user = dict(user_values or {})
    columns = user.pop("columns", {})
    user.pop("sources", None)
    for modality, name in ENCODER_FIELDS.items():  # a full extraction YAML may name encoders the model does not use
        if modality not in spec.modality_dims:
            user.pop(name, None)
    recorded = made_by_pipeline(spec.store_modalities)
    if not recorded and not user:
        made_by = sorted({i.encoder for i in (spec.store_modalities or {}).values()})
        raise PredictError("the checkpoint does not record an extraction this pipeline can rebuild ("
                           + (f"its features came from {made_by}" if made_by else
                              "written before checkpoints carried their store's manifest")
                           + "): give the extraction config to use with --config")
    base = recorded_values(spec.store_modalities) if recorded else {}
    values = deep_merge(base, user)
    values.update(output=str(output), modalities=list(spec.modality_dims),
                  sources=input_sources(inputs, columns), data_root=".")
    try:
        return ExtractionConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError("extraction config for prediction: " + format_errors(err, ExtractionConfig)) from None


def read_inputs(cfg: ExtractionConfig, inputs: list[str]) -> list[dict[str, Any]]:
    """``read_source`` rows of every input (a single video: the row of that file only)."""
    rows: list[dict[str, Any]] = []
    for given, source in zip(inputs, cfg.sources):
        found = read_source(source, cfg)
        path = Path(given).resolve()
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            found = [r for r in found if Path(r["video"]) == path]
        rows += found
    seen: dict[str, int] = Counter(r["sample_id"] for r in rows)
    duplicates = sorted(s for s, n in seen.items() if n > 1)
    if duplicates:
        raise ManifestError(f"sample ids given by several inputs: {duplicates[:5]} (rename the files or map "
                            "columns.sample_id)")
    return rows


# ------------------------------------------------------------------ the extractor check

def _encoder_info(choice: Mapping[str, Any]) -> dict[str, Any]:
    """Build one encoder (on the CPU) and return its ``ModelInfo`` as a dict."""
    from extraction.encoders import build_encoder

    return build_encoder(choice["name"], model_id=choice["model_id"], local_dir=choice["local_dir"],
                         device="cpu").info.to_dict()


def configured_modalities(cfg: ExtractionConfig) -> dict[str, ModalityInfo]:
    """The manifest entries extraction with ``cfg`` would record: each feature encoder built
    once in a Ray task (on whichever node runs it, as the stages would)."""
    import ray

    probe = ray.remote(num_cpus=0.25)(_encoder_info)
    choices = {m: getattr(cfg, ENCODER_FIELDS[m]).model_dump() for m in cfg.modalities}
    pending = {}  # one probe per distinct encoder
    for choice in choices.values():
        pending.setdefault(json.dumps(choice, sort_keys=True), probe.remote(choice))
    infos = {}
    for m, choice in choices.items():
        try:
            infos[m] = modality_info(cfg, m, ray.get(pending[json.dumps(choice, sort_keys=True)]))
        except Exception as err:  # a missing or unloadable model: say which
            raise PredictError(f"{ENCODER_FIELDS[m]} {choice}: cannot be built here: {err}") from None
    return infos


def setting_differences(spec: ModelSpec, cfg: ExtractionConfig) -> list[str]:
    """The extraction settings the training store recorded that ``cfg`` sets otherwise (the user's
    overrides), "field: trained ..., here ..." each; found without loading any model."""
    if not made_by_pipeline(spec.store_modalities):
        return []
    here = flatten(cfg.model_dump())
    recorded = flatten({k: v for k, v in recorded_values(spec.store_modalities).items() if k != "modalities"})
    return [f"{key}: trained with {value!r}, here {here.get(key)!r}"
            for key, value in recorded.items() if here.get(key) != value]


def extractor_differences(spec: ModelSpec, configured: Mapping[str, ModalityInfo]) -> tuple[list[str], list[str]]:
    """(fatal, others): what differs between the extraction ``spec``'s model was trained on and
    ``configured``, one "modality.field: trained ..., here ..." line each.

    Fatal: a feature dimension the model cannot take. Others: any other recorded field
    (encoder id, revision, fingerprint, frames, settings such as the VLM or prompt), except
    where the extracting machine kept model files (``LOCAL_SETTINGS``).
    """
    fatal = [f"{m}.dim: the model takes {spec.modality_dims[m]}, the configured encoder gives {info.dim}"
             for m, info in configured.items() if info.dim != spec.modality_dims[m]]
    others = []
    for m, recorded in (spec.store_modalities or {}).items():
        trained, here = flatten(asdict(current_settings(recorded))), flatten(asdict(configured[m]))
        for key in sorted(set(trained) | set(here)):
            if key.removeprefix("settings.") in LOCAL_SETTINGS or key == "dim":
                continue
            if trained.get(key) != here.get(key):
                others.append(f"{m}.{key}: trained with {trained.get(key)!r}, here {here.get(key)!r}")
    return fatal, others


# ------------------------------------------------------------------ the model stage

def checkpoint_files(checkpoint: Path) -> dict[str, bytes]:
    """The files a model stage needs, as bytes: actors on other nodes cannot read the driver's disk."""
    return {name: (Path(checkpoint) / name).read_bytes() for name in CHECKPOINT_FILES}


def model_digest(files: Mapping[str, bytes]) -> str:
    """16 hex digits of sha256 over the checkpoint files: which model wrote a row."""
    digest = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        digest.update(files[name])
    return digest.hexdigest()[:16]


class Predict:
    """The model stage: extraction rows (``f_<modality>`` as ``.npy`` bytes) -> prediction rows.

    Output columns: ``sample_id``, ``video``, ``errors`` (JSON list of [stage, reason]), the
    prediction table (NaN / "" / False where the row has no prediction).
    """

    def __init__(self, files: dict[str, bytes], device: str) -> None:
        with tempfile.TemporaryDirectory(prefix="scd-predict-") as folder:
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            self.model, spec = load_model(folder, device)  # safetensors + JSON: nothing unpickled
        self.dims = spec.modality_dims
        self.columns = output_columns(spec.tasks, list(self.dims))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["sample_id"])
        vectors = {m: [from_bytes(b) if b else None for b in batch.get(feature_column(m), [b""] * n)]
                   for m in self.dims}
        errors = [json.loads(e) for e in batch["errors"]]
        usable = [i for i in range(n) if any(vectors[m][i] is not None for m in self.dims)]
        for i in sorted(set(range(n)) - set(usable)):
            errors[i].append(["predict", "no modality could be extracted"])
        table = predict_vectors(self.model, {m: [v[i] for i in usable] for m, v in vectors.items()},
                                self.dims) if usable else {}
        out = {"sample_id": np.asarray(batch["sample_id"], dtype=object),
               "video": np.asarray(batch["video"], dtype=object),
               "errors": np.array([json.dumps(e) for e in errors], dtype=object)}
        for name, kind in self.columns.items():
            column = np.full(n, {"float": np.nan, "str": "", "bool": False}[kind],
                             dtype={"float": np.float64, "str": object, "bool": bool}[kind])
            if usable:
                column[usable] = table[name]
            out[name] = column
        return out


# ------------------------------------------------------------------ running it

@dataclass
class PredictionSummary:
    """What a run did: ``table`` holds one row per input video (see the module docstring)."""

    table: pa.Table
    predicted: int = 0
    skipped: int = 0
    failures: Counter = field(default_factory=Counter)  # (stage, reason) -> videos
    warning: str = ""
    stages: list[str] = field(default_factory=list)


def _latest_rows(output: Path, model: str) -> dict[str, dict[str, Any]]:
    """sample_id -> the latest row that ``model`` wrote into ``output``'s parts."""
    latest: dict[str, dict[str, Any]] = {}
    for part in sorted((output / PARTS).glob("part-*.parquet")):  # names sort by write time
        for row in pq.read_table(part).to_pylist():
            if row["model"] == model:
                latest[row["sample_id"]] = row
    return latest


def _write_part(rows: dict[str, np.ndarray], model: str, warning: str, output: Path) -> None:
    n = len(rows["sample_id"])
    table = pa.table({**{k: pa.array(list(v)) for k, v in rows.items()}, "model": pa.array([model] * n),
                      "warning": pa.array([warning] * n)})
    folder = output / PARTS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp)
    tmp.rename(folder / f"part-{time.time_ns()}-{uuid.uuid4().hex[:6]}.parquet")


def _final_table(latest: Mapping[str, dict[str, Any]], inputs: list[dict[str, Any]],
                 columns: Mapping[str, str]) -> pa.Table:
    """The latest row of each input video, in input order, with readable errors; ``columns``:
    the prediction columns (``output_columns``)."""
    names = ["sample_id", "video", *columns, "errors", "warning"]
    records = []
    for item in inputs:
        row = dict(latest[item["sample_id"]])
        row["errors"] = "; ".join(f"{stage}: {reason}" for stage, reason in json.loads(row["errors"]))
        records.append({k: row.get(k) for k in names})
    return pa.Table.from_pylist(records).select(names) if records else pa.table({k: [] for k in names})


def check_prediction_models(checkpoint: str | Path, inputs: list[str], output: str | Path,
                            user_values: Mapping[str, Any] | None = None) -> None:
    """Before Ray starts: ``extraction.models.check_models`` on the extraction that predicting
    with ``checkpoint`` on ``inputs`` runs (``ModelsMissing`` names what this machine lacks)."""
    cfg = predict_config(load_spec(checkpoint), inputs, output, user_values)
    check_models(cfg, rows=read_inputs(cfg, inputs), run=f"predicting with {checkpoint}")


def run_prediction(checkpoint: str | Path, inputs: list[str], output: str | Path,
                   user_values: Mapping[str, Any] | None = None, allow_mismatch: bool = False,
                   progress: Callable[[str], None] = print) -> PredictionSummary:
    """Predict every video of ``inputs`` into ``output`` (module docstring); Ray must be initialised.

    Raises ``PredictError`` (``ExtractorMismatch`` among them), ``ConfigError`` or
    ``ManifestError`` before any video is processed.
    """
    import ray

    checkpoint, output = Path(checkpoint), Path(output)
    spec = load_spec(checkpoint)
    cfg = predict_config(spec, inputs, output, user_values)
    rows = read_inputs(cfg, inputs)
    settings = setting_differences(spec, cfg)
    if settings and not allow_mismatch:
        raise ExtractorMismatch(settings)
    fatal, others = extractor_differences(spec, configured_modalities(cfg))
    if fatal:
        raise ExtractorMismatch(fatal)
    others = settings + others
    if others and not allow_mismatch:
        raise ExtractorMismatch(others)
    warning = ""
    if others:
        warning = "extractors differ from training: " + "; ".join(others)
    elif spec.store_modalities is None:
        warning = "the checkpoint records no extractors: the configured ones were assumed to match its training"
    output.mkdir(parents=True, exist_ok=True)
    files = checkpoint_files(checkpoint)
    model = model_digest(files)
    done = {sid for sid, row in _latest_rows(output, model).items() if not json.loads(row["errors"])}
    todo = [r for r in rows if r["sample_id"] not in done]
    stages = plan_stages(cfg, rows)
    if todo:
        ray.data.DataContext.get_current().enable_progress_bars = False  # one progress line per batch instead
        ds = stage_dataset(cfg, [source_item(r) for r in todo], stages)
        ds = map_stage(ds, Predict, (files, cfg.device), cfg.stage("predict"))
        written, tic = 0, time.perf_counter()
        for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
            _write_part(batch, model, warning, output)
            written += len(batch["sample_id"])
            progress(f"{written}/{len(todo)} videos predicted ({written / (time.perf_counter() - tic):.2f}/s)")
    latest = _latest_rows(output, model)
    table = _final_table(latest, rows, output_columns(spec.tasks, list(spec.modality_dims)))
    pq.write_table(table, output / f"{PREDICTIONS}.parquet")
    pacsv.write_csv(table, output / f"{PREDICTIONS}.csv")
    failures = Counter((stage, reason) for r in rows for stage, reason in json.loads(latest[r["sample_id"]]["errors"]))
    return PredictionSummary(table, predicted=len(todo), skipped=len(rows) - len(todo), failures=failures,
                             warning=warning, stages=[*stages, "predict"])
