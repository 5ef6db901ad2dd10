"""Model folders: `config.json` + `model.safetensors` + `README.md` (a short model card)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from posecast import __version__
from posecast.config import DenoiserConfig
from posecast.errors import InputError, UsageError
from posecast.families import family_of
from posecast.hub import resolve_folder
from posecast.models.denoiser import Denoiser
from posecast.paths import atomic_output

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def save_pretrained(model: Denoiser, folder: str | os.PathLike, card: str = "",
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write (or replace) the model files in `folder`, each atomically, the config last.
    `state` replaces model.state_dict() (a sharded model's gathered weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu()
             for name, tensor in (state or model.state_dict()).items()}
    with atomic_output(folder / WEIGHTS_NAME) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "posecast": __version__})
    with atomic_output(folder / CARD_NAME) as tmp:
        tmp.write_text(card or model_card(model.config))
    with atomic_output(folder / CONFIG_NAME) as tmp:
        model.config.save(tmp)
    return folder


def model_card(config: DenoiserConfig, extra: str = "") -> str:
    rows, cols = config.token_grid
    return (
        "---\nlibrary_name: posecast\ntags: [video-generation, co-speech, pose-conditioned]\n---\n"
        f"# posecast video denoiser\n\n{config.width}x{config.height} frames, "
        f"{config.codec.kind} codec, {rows}x{cols} tokens per frame, {config.depth} blocks of "
        f"{config.hidden_size} ({config.heads} heads), attention `{config.attention}`, "
        f"windows of {config.window} frames. Sampler defaults: {config.sampler.method}, "
        f"{config.sampler.steps} steps, CFG {config.sampler.cfg}.\n\n"
        "Load with `posecast.models.pretrained.from_pretrained(folder_or_repo)`.\n"
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
                         f"needed here (a {family} model is sampled by `posecast teacher`; its "
                         "distillation and rendering are not built yet)")
    try:
        return folder, DenoiserConfig.load(config_path)
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise InputError(f"{config_path}: not a posecast model config ({error})") from None


def load_config(path_or_repo: str | os.PathLike, revision: str | None = None, *,
                cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                local_files_only: bool | None = None) -> DenoiserConfig:
    """A model folder's config alone (no weights are read)."""
    return _resolve_model(path_or_repo, revision, cache_dir=cache_dir, token=token,
                          local_files_only=local_files_only)[1]


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
        model.load_state_dict(state)
    except (RuntimeError, OSError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise InputError(f"{weights_path}: weights do not match the config ({first_line})"
                         ) from None
    return model.to(device).eval()
