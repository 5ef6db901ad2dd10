"""Publishing a trained model: its model files and a model card, as a folder or a Hub repo.

A run folder (`posecast train` or `distill --output`) holds the model (config.json,
model.safetensors, README.md) beside what only training needs: checkpoint/ (optimiser state),
ode_pairs/, samples/ and train_log.jsonl. `export_model` copies the model files alone and
writes the card: metadata the Hub reads (licence, library name, base model, tags) and a
Training section with the data and recipe, taken from checkpoint/state.json. `upload_model`
exports into a temporary folder and commits exactly those files to a Hub repo.

A MimicMotion folder's model files also include its SVD components (vae/, image_encoder/,
feature_extractor/, scheduler/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from posecast.errors import InputError, PosecastError, UsageError
from posecast.families import family_named
from posecast.json_files import load_json
from posecast.model_folder import family_of
from posecast.ownership import require_new_folder
from posecast.paths import atomic_folder

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n?", re.DOTALL)


@dataclass(frozen=True)
class Export:
    folder: Path
    files: list[str]  # paths relative to `folder`, sorted
    family: str


def model_files(folder: Path) -> list[str]:
    """The files a model of this folder's family is loaded from (relative paths, no card), or a
    one-line error naming the first one missing."""
    family = family_named(family_of(folder))  # copying files needs no diffusers
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: not a posecast model or run folder (no {name}); give "
                             "the --output folder of `posecast train` or `posecast distill`")
    return [CONFIG_NAME, WEIGHTS_NAME, *family.model_files(folder)]


def export_model(run: str | os.PathLike, out: str | os.PathLike, license: str | None = None,
                 overwrite: bool = False) -> Export:
    """Copy the model files of the run or model folder `run` into a new folder `out` with a
    model card; `out` appears whole or not at all. `license` is a Hub licence id (default:
    apache-2.0 for posecast's own models, "other" for MimicMotion ones)."""
    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise UsageError(f"{run}: no such run or model folder")
    _check_output(run, out, overwrite)
    files = model_files(run)
    family = family_named(family_of(run))
    card = model_card(run, license or family.licence)
    with atomic_folder(out, "export") as staging:
        for name in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / name, staging / name)
        (staging / CARD_NAME).write_text(card)
    return Export(out, sorted([*files, CARD_NAME]), family.name)


def _check_output(run: Path, out: Path, overwrite: bool) -> None:
    resolved_run, resolved_out = run.resolve(), out.resolve()
    if resolved_out == resolved_run or resolved_run in resolved_out.parents \
            or resolved_out in resolved_run.parents:
        raise UsageError(f"{out}: the export folder must lie outside the run folder {run} (and "
                         "not contain it)")
    require_new_folder(out, overwrite, "model folder", (CONFIG_NAME,))


def split_card(text: str) -> tuple[dict, str]:
    """A card's YAML front matter (as a dict) and its body."""
    import yaml

    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        metadata = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        metadata = None
    if not isinstance(metadata, dict):
        raise InputError("the model card's metadata block (between the --- lines of README.md) "
                         "is not YAML key: value pairs; fix or delete it")
    return metadata, text[match.end():]


def model_card(run: Path, license: str) -> str:
    """The run's card with the Hub's metadata filled in, and a Training section (data, start,
    steps, recipe) when the run folder holds checkpoint/state.json."""
    import yaml

    card_path = run / CARD_NAME
    text = card_path.read_text() if card_path.is_file() else f"# {run.name}\n"
    try:
        metadata, body = split_card(text)
    except InputError as error:
        raise InputError(f"{card_path}: {error}") from None
    state = _training_state(run)
    metadata["license"] = license
    metadata["library_name"] = "posecast"
    tags = [tag for tag in metadata.get("tags") or [] if isinstance(tag, str)]
    metadata["tags"] = tags + [tag for tag in ("posecast",) if tag not in tags]
    start = next((state[key] for key in ("teacher", "init_from", "initial_model")
                  if state and isinstance(state.get(key), str)), None)
    if start and _is_repo_id(start):
        metadata["base_model"] = start
    if state is not None:
        body = _without_local_paths(body, state)
        body = body.rstrip("\n") + "\n\n" + training_section(run, state, body) + "\n"
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n{body}"


def _training_state(run: Path) -> dict | None:
    path = run / "checkpoint" / "state.json"
    if not path.is_file():
        return None
    try:
        state = load_json(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable ({error}); export the model folder without its "
                         "checkpoint/ or fix the file") from None
    if not isinstance(state, dict):
        return None
    for key in _STATE_PATHS:  # the card names these (as folder names or repo ids)
        if state.get(key) is not None and not isinstance(state[key], str):
            raise InputError(f"{path}: {key} is {json.dumps(state[key])[:40]}, not a path or "
                             "repo id; export the model folder without its checkpoint/ or fix "
                             "the file")
    return state


_STATE_PATHS = ("teacher", "teacher_revision", "init_from", "initial_model", "initial_revision",
                "dataset")


def _without_local_paths(body: str, state: dict) -> str:
    """The card with the run's local paths (teacher, initial model, data; the card of
    `posecast distill` names its teacher as given) cut to their folder names: the trainer's
    file system is not published."""
    for key in ("teacher", "init_from", "initial_model", "dataset"):
        value = state.get(key)
        if isinstance(value, str) and value and not _is_repo_id(value):
            name = Path(value).name
            if name and name != value:
                body = body.replace(value, name)
    return body


def _is_repo_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) \
        and not Path(text).exists()


def training_section(run: Path, state: dict, body: str) -> str:
    """Markdown: which command trained the model, from what, on which data, with which
    settings (the recipe is left out where the card already carries the same JSON)."""
    if "distill_config" in state:
        command, recipe = "posecast distill", state["distill_config"]
        start = _named(state.get("teacher"), state.get("teacher_revision"))
        origin = f"distilled from the teacher {start}" if start else "distilled"
    elif "settings" in state:  # a MimicMotion fine-tune
        command, recipe = "posecast train", state["settings"]
        start = _named(state.get("init_from"), None)
        origin = f"fine-tuned from {start}" if start else "fine-tuned"
    else:
        command, recipe = "posecast train", state.get("train_config", {})
        start = _named(state.get("initial_model"), state.get("initial_revision"))
        origin = f"fine-tuned from {start}" if start else "trained from scratch"
    lines = ["## Training", "",
             f"`{command}`, {origin}, for {state.get('step', '?')} steps.", "",
             f"Data: {describe_dataset(state.get('dataset'))}"]
    last = _last_logged(run)
    if last:
        lines += ["", f"Last logged step: {last}."]
    recipe_text = json.dumps(recipe, indent=2)
    if recipe and recipe_text not in body:
        lines += ["", "Recipe:", "", "```json", recipe_text, "```"]
    return "\n".join(lines)


def _named(source: str | None, revision: str | None) -> str:
    if not source:
        return ""
    name = f"`{source}`" if _is_repo_id(source) else f"a local model (`{Path(source).name}`)"
    return name + (f" at revision `{revision}`" if revision else "")


def describe_dataset(dataset: str | None) -> str:
    """What the card says of the training data: the folder's name (not the full path, which
    would publish the trainer's file system) and, for `posecast make-dataset` output, how it
    was made."""
    if not dataset:
        return "not recorded (a run from before posecast recorded it)."
    folder = Path(dataset)
    text = f"the clips of the folder `{folder.name}`"
    for manifest_path in (folder / "manifest.json", folder.parent / "manifest.json"):
        try:
            manifest = load_json(manifest_path)
            clips = manifest["clips"]
            split = folder.name if folder.name in ("train", "heldout") else None
            used = sum(split is None or clip.get("split") == split for clip in clips)
            return (f"{text}: {used} synthetic clips from `posecast make-dataset` (seed "
                    f"{manifest['seed']}, {manifest['size']} px, {manifest['fps']:g} fps).")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return text + "."


def _last_logged(run: Path) -> str:
    """The last line of train_log.jsonl as 'step N: name value, …', or ''."""
    try:
        lines = (run / "train_log.jsonl").read_text().strip().splitlines()
        report = json.loads(lines[-1])
    except (OSError, ValueError, IndexError):
        return ""
    losses = report.get("losses") or ({"loss": report["loss"]} if "loss" in report else {})
    values = ", ".join(f"{name} {value:.4g}" for name, value in losses.items()
                       if isinstance(value, (int, float)))
    return f"{report.get('step', '?')}" + (f" ({values})" if values else "")


# -- the Hub -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    repo_id: str
    revision: str
    url: str  # the commit's page
    files: list[str]


def upload_model(source: str | os.PathLike, repo_id: str, private: bool = False,
                 revision: str | None = None, license: str | None = None,
                 token: str | None = None,
                 on_message: Callable[[str], None] | None = None) -> Upload:
    """Export `source` (a run or model folder) into a temporary folder and commit its files,
    and only those, to the Hub model repo `repo_id` (created if missing, `private` then), on
    the branch `revision` (created from main if missing; default main). The token is `token`,
    else HF_TOKEN or the saved login; HF_ENDPOINT (read now) names another Hub."""
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd

    say = on_message or (lambda text: None)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"{repo_id}: give the repo id as OWNER/NAME (your user or organisation "
                         "name, then the model's)")
    if not Path(source).is_dir():
        raise UsageError(f"{source}: no such run or model folder")
    model_files(Path(source))  # a one-line error for a folder without a model, before the Hub
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise UsageError("HF_HUB_OFFLINE is set; uploading needs the Hub (unset it)")
    token = token or huggingface_hub.get_token()
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN to a token with write access "
                         "(https://huggingface.co/settings/tokens) or run `hf auth login`")
    with tempfile.TemporaryDirectory(prefix="posecast-upload-") as tmp:
        export = export_model(source, Path(tmp) / "model", license)
        api = huggingface_hub.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
        with _hub_errors(repo_id, revision, api.endpoint):
            say(f"creating {repo_id} on the Hub if it does not exist")
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            say(f"uploading {len(export.files)} files")
            operations = [CommitOperationAdd(path_in_repo=name,
                                             path_or_fileobj=str(export.folder / name))
                          for name in export.files]
            commit = api.create_commit(repo_id, operations, revision=revision,
                                       commit_message=f"Upload {Path(source).name} "
                                       "(posecast export)")
    return Upload(repo_id, revision or "main", commit.commit_url, export.files)


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions huggingface_hub's HTTP client raises when the Hub cannot be reached
    (httpx, or requests before huggingface_hub 1.0; whichever is installed)."""
    errors: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, endpoint: str) -> Iterator[None]:
    """huggingface_hub's failures while publishing, as one line that says what to do."""
    from huggingface_hub import errors

    try:
        yield
    except errors.RevisionNotFoundError:
        raise UsageError(f"{repo_id}: the branch '{revision}' could not be made or found; "
                         "check --revision") from None
    except errors.RepositoryNotFoundError:
        raise UsageError(f"{repo_id}: no such model repo that this token can write to (it may "
                         "be another account's private repo); check the repo id and HF_TOKEN"
                         ) from None
    except errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise PosecastError("the Hugging Face Hub refused the token (401 Unauthorized); set "
                                "HF_TOKEN to a valid token with write access") from None
        if status == 403:
            raise PosecastError(f"{repo_id}: this token may not write there (403 Forbidden); "
                                "use a write token of that user or organisation") from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PosecastError(f"{repo_id}: the Hub refused the upload ({first})") from None
    except ValueError as error:  # a card whose metadata the Hub rejects
        first = str(error).strip().splitlines()
        raise PosecastError(f"{repo_id}: the Hub rejected the upload "
                            f"({'; '.join(first[:2]) or 'invalid request'})") from None
    except _network_errors() as error:
        raise PosecastError(f"cannot reach the Hugging Face Hub at {endpoint} "
                            f"({type(error).__name__}); check the network and try again"
                            ) from None
