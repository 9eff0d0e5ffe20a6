"""The pretrained models an extraction needs: which, whether this machine has them, fetching them.

    python -m extraction.models list CONFIG [key=value ...]
    python -m extraction.models fetch CONFIG [key=value ...] [--to DIR]
    python -m extraction.models fetch --repo OWNER/NAME [--repo ...] [--to DIR]

``required_models`` follows the run's plan (``extraction.pipeline.plan_stages``: a text-only
run needs no Whisper and no VLM) and names each model by its config field, Hugging Face
repository and ``local_dir``. ``missing_models`` looks for each without any network access:
a ``local_dir`` must be a folder with a ``config.json``; a repository must have a snapshot in
the Hugging Face cache (``$HF_HOME``/``$HF_HUB_CACHE``), which is where ``from_pretrained``
and faster-whisper look. ``ray_jobs/extract_features.py`` runs ``check_models`` before Ray
starts, so a machine without the models gets one message naming them all and the command
that fetches them, instead of a traceback from inside a Ray actor.

``fetch`` downloads the missing ones with ``huggingface_hub.snapshot_download``, into the
cache (nothing else to set: the run finds them there) or, with ``--to DIR``, into
``DIR/<owner>--<name>``, printing the ``<field>.local_dir=...`` overrides that point the run
at them (for ``--repo``, the folder of each repository). Files in formats no loader here
reads (TensorFlow, Flax, ONNX exports) are skipped. ``ray_jobs/predict.py`` runs the same
check on the models its checkpoint recorded and names them by repository.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from extraction.config import ExtractionConfig, ModelChoice, load_extraction_config
from extraction.manifest import ManifestError, read_sources
from extraction.pipeline import plan_stages
from scd_core.cli import USER_ERRORS, add_debug_flag, explained

# Formats that the repositories carry besides the PyTorch weights, which no loader here reads.
IGNORED_FILES = ["*.h5", "*.msgpack", "*.ot", "*.tflite", "*.onnx", "*.onnx_data", "onnx/*", "openvino/*",
                 "coreml/*", "*.mlmodel", "tf_model*", "flax_model*"]


class ModelsMissing(RuntimeError):
    """Models the run needs are not on this machine; the message names them and how to fetch them."""


class FetchError(RuntimeError):
    """A model could not be downloaded; the message names the repository and the target."""


@dataclass(frozen=True)
class RequiredModel:
    """One model a run loads: ``field`` of the extraction config (``video_encoder``,
    ``transcriber``, ``describer``, ...), ``name`` (the encoder or VLM), ``repo_id`` (its Hugging
    Face repository), ``local_dir`` (the folder given instead, if any), ``bundled`` (the copy an
    installed package ships, if used) and ``files_from`` ("hub", or how else its files come)."""

    field: str
    name: str
    repo_id: str
    local_dir: str | None = None
    bundled: str | None = None
    files_from: str = "hub"


def _encoder(field: str, choice: ModelChoice) -> RequiredModel:
    from extraction.encoders import ENCODERS

    cls = ENCODERS.get(choice.name)
    bundled = cls.bundled(choice.model_id, choice.local_dir)
    return RequiredModel(field, choice.name, choice.model_id or cls.default_id, choice.local_dir,
                         str(bundled) if bundled else None, cls.files_from)


def required_models(cfg: ExtractionConfig, rows: list[dict[str, Any]] | None = None) -> list[RequiredModel]:
    """The models the stages of this run load, in stage order (``rows``: ``read_sources(cfg)``,
    read here when not given)."""
    from extraction.describe import VLMS
    from extraction.transcribe import Transcriber

    stages = plan_stages(cfg, read_sources(cfg) if rows is None else rows)
    by_text = cfg.behavior_from == "description"
    fields = {
        "video": ["video_encoder"],
        "audio": ["audio_encoder"],
        "transcribe": ["transcriber"],
        "describe": ["describer"],
        "text": [f for f, m in (("text_encoder", "text"), ("behavior_encoder", "behavior"))
                 if m in cfg.modalities and (m == "text" or by_text)],
        "scene": ["behavior_encoder"],
    }
    models = []
    for field in (f for stage in stages for f in fields.get(stage, [])):
        if field == "transcriber":
            t = cfg.transcriber
            models.append(RequiredModel(field, "whisper", t.model_id or Transcriber.default_id, t.local_dir))
        elif field == "describer":
            d = cfg.describer
            models.append(RequiredModel(field, d.vlm, d.model_id or VLMS.get(d.vlm).default_id, d.local_dir))
        else:
            models.append(_encoder(field, getattr(cfg, field)))
    return models


def locate(model: RequiredModel) -> tuple[str | None, str]:
    """(where the model's files are, or None when they are not here; a few words saying so)."""
    if model.local_dir is not None:
        path = Path(model.local_dir).expanduser()
        if not path.is_dir():
            return None, f"local_dir {path} is not a folder"
        if not (path / "config.json").is_file():
            return None, f"local_dir {path} holds no config.json: not a model folder"
        return str(path), "local_dir"
    if model.bundled is not None:
        return model.bundled, "shipped in an installed package"
    if model.files_from != "hub":
        return None, f"not checked: {model.files_from}"
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(model.repo_id, local_files_only=True), "Hugging Face cache"
    except LocalEntryNotFoundError:
        return None, f"not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    except HFValidationError:
        return None, f"{model.repo_id!r} is not a Hugging Face repo id; give local_dir"


def missing_models(models: list[RequiredModel]) -> list[tuple[RequiredModel, str]]:
    """The Hub models (and local_dirs) of ``models`` that this machine does not have, with why."""
    missing = []
    for model in models:
        where, why = locate(model)
        if where is None and (model.local_dir is not None or model.files_from == "hub"):
            missing.append((model, why))
    return missing


def fetch_command(config: str | Path | None, overrides: list[str] = (), repos: list[str] = ()) -> str:
    """The command that fetches a config's models, or (without a config) the repositories ``repos``."""
    if config is None:
        return "python -m extraction.models fetch " + " ".join(f"--repo {shlex.quote(r)}" for r in repos)
    return "python -m extraction.models fetch " + shlex.join([str(config), *overrides])


def check_models(cfg: ExtractionConfig, config: str | Path | None = None, overrides: list[str] = (),
                 rows: list[dict[str, Any]] | None = None, run: str | None = None) -> None:
    """Raise ``ModelsMissing`` naming every model of the run that is not here and the command
    that fetches them (for ``config`` and ``overrides``, or, without a config, by repository);
    return quietly when all are here. ``run`` names the run in the message (default: ``config``)."""
    missing = missing_models(required_models(cfg, rows))
    if not missing:
        return
    from huggingface_hub import constants

    table = tabulate([[m.field, m.local_dir or m.repo_id, why] for m, why in missing], tablefmt="plain")
    offline = " (HF_HUB_OFFLINE is set: nothing is downloaded)" if constants.HF_HUB_OFFLINE else ""
    repos = list(dict.fromkeys(m.repo_id for m, _ in missing if m.local_dir is None))
    command = fetch_command(config, overrides, repos)
    local = [m.field for m, _ in missing if m.local_dir is not None]
    lines = [f"{run or config or 'this run'}: {len(missing)} of the models this run needs are not on this "
             f"machine{offline}:", *("  " + line for line in table.splitlines())]
    if local:
        lines.append("fix the local_dir of " + ", ".join(local) + " (or drop it to use the Hugging Face copy)")
    if repos:
        lines += [f"fetch them into the Hugging Face cache ({constants.HF_HUB_CACHE}) with", f"  {command}",
                  "or into a folder of your own (then give the local_dir it prints):",
                  f"  {command} --to DIR"]
    lines.append("(on a cluster whose workers have the models and this machine has not: --skip-model-check)")
    raise ModelsMissing("\n".join(lines))


def target_folder(root: str | Path, repo_id: str) -> Path:
    """Where ``fetch --to root`` puts a repository: ``root/<owner>--<name>``."""
    return Path(root) / repo_id.replace("/", "--")


def fetch(models: list[RequiredModel], to: str | Path | None = None, say=print) -> dict[str, str]:
    """Download every Hub model of ``models`` that is not here (a ``local_dir`` that is not a
    model folder is left to the user); into the cache, or into
    ``target_folder(to, repo_id)``. Returns field -> the folder it was fetched into, for ``to``
    (empty without ``to``: the run finds the cache by itself)."""
    from huggingface_hub import constants, snapshot_download

    folders: dict[str, str] = {}
    done: dict[str, str] = {}
    for model, _ in missing_models(models):
        if model.local_dir is not None:  # a folder the user named: not ours to fill
            continue
        target = target_folder(to, model.repo_id) if to is not None else None
        where = str(target) if target is not None else f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
        if model.repo_id not in done:
            say(f"fetching {model.repo_id} ({model.field}) into {where}")
            try:
                done[model.repo_id] = snapshot_download(model.repo_id, local_dir=target,
                                                        ignore_patterns=IGNORED_FILES)
            except OSError as err:  # huggingface_hub's network, authentication and offline errors are OSErrors
                raise FetchError(f"cannot fetch {model.repo_id} ({model.field}) into {where}: "
                                 f"{type(err).__name__}: {err}") from err
        if target is not None:
            folders[model.field] = done[model.repo_id]
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extraction.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "fetch"])
    parser.add_argument("config", nargs="?", help="extraction YAML")
    parser.add_argument("overrides", nargs="*", help="key=value, as for ray_jobs/extract_features.py")
    parser.add_argument("--repo", action="append", default=[],
                        help="fetch: a Hugging Face repository instead of a config's models (repeatable)")
    parser.add_argument("--to", help="fetch: into this folder instead of the Hugging Face cache")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if (args.config is None) == (not args.repo) or (args.repo and args.command == "list"):
        parser.error("give a config (list, fetch) or --repo (fetch), not both")
    return explained(lambda: run(args), args.debug, (*USER_ERRORS, ManifestError, FetchError))


def run(args: argparse.Namespace) -> int:
    if args.repo:  # named by their repository: no config field to point at them
        models = [RequiredModel(repo, repo, repo) for repo in args.repo]
    else:
        models = required_models(load_extraction_config(args.config, args.overrides))
    if args.command == "list":
        missing = missing_models(models)
        rows = []
        for m in models:
            where, why = locate(m)
            rows.append([m.field, m.name, m.repo_id, where or ("MISSING" if m in dict(missing) else "-"), why])
        print(tabulate(rows, headers=["field", "model", "repository", "here", ""]))
        print(f"\n{len(missing)} missing" + (f"; fetch with: {fetch_command(args.config, args.overrides)}"
                                            if missing else ""))
        return 0
    folders = fetch(models, args.to)
    broken = [(m, why) for m, why in missing_models(models) if m.local_dir is not None]
    for m, why in broken:
        print(f"{m.field}: {why}; point local_dir at a model folder, or drop it to fetch {m.repo_id}")
    if folders and args.repo:
        print("\nfetched; give each folder as the local_dir of the config field that names its model:\n"
              + "\n".join(f"  {repo}: {folder}" for repo, folder in folders.items()))
    elif folders:
        print("\npass these to ray_jobs/extract_features.py or ray_jobs/predict.py (or put them in the YAML):\n  "
              + " ".join(f"{field}.local_dir={shlex.quote(folder)}" for field, folder in folders.items()))
    elif not missing_models(models):
        print("every model is here")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
