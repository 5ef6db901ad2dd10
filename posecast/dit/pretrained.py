"""Model folders: `config.json` + `model.safetensors` + `README.md` (a short model card)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from posecast.config import CodecConfig, DenoiserConfig
from posecast.dit.denoiser import Denoiser
from posecast.errors import ConfigError, InputError, PosecastError, UsageError
from posecast.hub import folder_inside, is_repo_id, resolve_folder
from posecast.model_folder import family_of
from posecast.ownership import mark
from posecast.paths import atomic_output
from posecast.validation import shown
from posecast.version import __version__
from posecast.weights import check_state, first_non_finite

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def save_pretrained(model: Denoiser, folder: str | os.PathLike, card: str = "",
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write (or replace) the model files in `folder`, each atomically, the config last.
    `state` replaces model.state_dict() (a sharded model's gathered weights)."""
    folder = Path(folder)
    state = {name: tensor.detach().contiguous().cpu()
             for name, tensor in (state or model.state_dict()).items()}
    bad = first_non_finite(state)
    if bad is not None:  # a diverged run: keep the model that is there
        raise PosecastError(f"{folder}: not written, {bad} holds NaN or infinite values (the "
                            "training diverged); the model there is kept")
    mark(folder, "model")
    with atomic_output(folder / WEIGHTS_NAME) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "posecast": __version__})
    with atomic_output(folder / CARD_NAME) as tmp:
        tmp.write_text(card or model_card(model.config))
    with atomic_output(folder / CONFIG_NAME) as tmp:
        model.config.replace(codec=_codec_relative_to(model.config.codec, folder)).save(tmp)
    return folder


CODEC_SOURCES = ("repo", "fast_decoder_repo")


def _codec_relative_to(codec: CodecConfig, folder: Path) -> CodecConfig:
    """The codec as written to `folder`: its folders inside `folder` as relative paths (a
    loaded model holds them as absolute ones), so the model folder can move."""
    changes = {}
    for name in CODEC_SOURCES:
        text = getattr(codec, name)
        if text is not None and Path(text).is_absolute() \
                and Path(text).resolve().is_relative_to(folder.resolve()):
            changes[name] = os.path.relpath(Path(text).resolve(), folder.resolve())
    return dataclasses.replace(codec, **changes)


def _codec_inside(codec: CodecConfig, folder: Path, config_path: Path) -> CodecConfig:
    """The codec with its sources checked before anything is downloaded: a Hub repo id
    (owner/name), or a folder inside the model folder (made absolute here, so it is never looked
    up in the current folder). An absolute path or one that leaves the folder ('../..') is
    refused."""
    changes = {}
    for name in CODEC_SOURCES:
        text = getattr(codec, name)
        local = None if text is None else folder_inside(text, folder)
        if local is not None:
            changes[name] = str(local)
        elif text is not None and not is_repo_id(text):
            raise InputError(f"{config_path}: codec.{name} is {shown(text)}; allowed: a Hub repo "
                             "id (owner/name) or a folder inside the model folder")
    subfolder = codec.subfolder
    if subfolder is not None and (Path(subfolder).is_absolute() or ".." in Path(subfolder).parts):
        raise InputError(f"{config_path}: codec.subfolder is {shown(subfolder)}; allowed: a "
                         "folder inside the codec's repo (no '..', not absolute)")
    return dataclasses.replace(codec, **changes)


def model_card(config: DenoiserConfig, extra: str = "") -> str:
    rows, cols = config.token_grid
    return (
        "---\nlibrary_name: posecast\ntags: [video-generation, co-speech, pose-conditioned]\n---\n"
        f"# posecast video denoiser\n\n{config.width}x{config.height} frames, "
        f"{config.codec.kind} codec, {rows}x{cols} tokens per frame, {config.depth} blocks of "
        f"{config.hidden_size} ({config.heads} heads), attention `{config.attention}`, "
        f"windows of {config.window} frames. Sampler defaults: {config.sampler.method}, "
        f"{config.sampler.steps} steps, CFG {config.sampler.cfg}.\n\n"
        "Load with `posecast.dit.pretrained.from_pretrained(folder_or_repo)`.\n"
        + (f"\n{extra}\n" if extra else "")
    )


def _resolve_model(path_or_repo: str | os.PathLike, revision: str | None,
                   **hub_options) -> tuple[Path, DenoiserConfig]:
    folder = resolve_folder(path_or_repo, revision, [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
                            **hub_options)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise InputError(f"{path_or_repo}: not a posecast model folder (needs {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME})")
    family = family_of(folder)
    if family != "dit":
        raise UsageError(f"{path_or_repo}: a {family} model; posecast's own (DiT) models are "
                         f"needed here (a {family} teacher is sampled by `posecast teacher`, "
                         "fine-tuned by `posecast train --init-from` and distilled by `posecast "
                         "distill --teacher`; its student is rendered by `posecast render`)")
    try:
        config = DenoiserConfig.load(config_path)
    except ConfigError as error:  # names the field, its value and what is allowed
        raise InputError(f"{config_path}: {error}") from None
    except (OSError, ValueError) as error:  # unreadable, not UTF-8 or not JSON
        raise InputError(f"{config_path}: not a posecast model config ({error})") from None
    return folder, config.replace(codec=_codec_inside(config.codec, folder, config_path))


def load_config(path_or_repo: str | os.PathLike, revision: str | None = None) -> DenoiserConfig:
    """A model folder's config alone (no weights are read)."""
    return _resolve_model(path_or_repo, revision)[1]


def from_pretrained(path_or_repo: str | os.PathLike, revision: str | None = None,
                    device: torch.device | str = "cpu", *,
                    cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                    local_files_only: bool | None = None, **config_changes) -> Denoiser:
    """Load a model folder (local, or a Hub repo id resolved through the HF cache).

    For a repo id, `revision` (branch, tag or commit), `cache_dir`, `token` and
    `local_files_only` work as in huggingface_hub's `from_pretrained` (defaults: main,
    HF_HUB_CACHE, HF_TOKEN or the saved login, HF_HUB_OFFLINE). `config_changes` override
    config fields that do not change the weights' shapes (for example
    attention="input_aware").
    """
    folder, config = _resolve_model(path_or_repo, revision, cache_dir=cache_dir, token=token,
                                    local_files_only=local_files_only)
    weights_path = folder / WEIGHTS_NAME
    if config_changes:
        config = config.replace(**config_changes)
    model = Denoiser(config)
    try:
        state = load_file(weights_path, device=str(device))
        check_state(state, weights_path, model.state_dict())
        model.load_state_dict(state)
    except (RuntimeError, OSError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise InputError(f"{weights_path}: weights do not match the config ({first_line})"
                         ) from None
    return model.to(device).eval()
