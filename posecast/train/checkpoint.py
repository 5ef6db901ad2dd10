"""Training checkpoints in safetensors (no pickle): modules, optimizers, step, settings.

Layout of a checkpoint folder: `state.safetensors` (every tensor, keyed
`<module>.<param>` and `optim.<name>.<param index>.<key>`) and `state.json` (the step, the
optimizers' param groups, the sha256 of each tensor file, and whatever the trainer adds). It is
written to a temporary folder and renamed, so a kill mid-write leaves the previous checkpoint
intact; a tensor file cut short or changed afterwards fails its checksum on resume. Tensors that
are not finite (a diverged run) are never written: the previous checkpoint stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from posecast.errors import InputError, PosecastError, UsageError
from posecast.json_files import load_json_object
from posecast.paths import temporary_beside, usual_permissions
from posecast.weights import first_non_finite

CHECKPOINT_DIR = "checkpoint"  # inside a training run's output folder
TENSORS = "state.safetensors"


def sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def save_checkpoint(folder: str | os.PathLike, step: int,
                    modules: dict[str, nn.Module | dict[str, torch.Tensor]],
                    optimizers: dict[str, torch.optim.Optimizer | dict[str, Any]],
                    extra: dict[str, Any] | None = None) -> None:
    """Modules and optimizers, or their state dicts (optimizer states keyed by parameter
    index, as `Optimizer.state_dict()` gives them; sharding.full_states makes such dicts)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        state = module if isinstance(module, dict) else module.state_dict()
        for key, tensor in state.items():
            tensors[f"{name}.{key}"] = tensor.detach().cpu().contiguous()
    groups = {}
    for name, optimizer in optimizers.items():
        state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"optim.{name}.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
        groups[name] = state["param_groups"]
    bad = first_non_finite(tensors)
    if bad is not None:
        kept = "the last checkpoint is kept" if find_checkpoint(folder) else "none is kept"
        raise PosecastError(f"step {step}: {bad} holds NaN or infinite values (the training "
                            f"diverged); no checkpoint was written and {kept}; lower the "
                            "learning rate")
    tmp = temporary_beside(folder, folder=True)  # a killed run's leftovers are swept
    try:
        save_file(tensors, tmp / TENSORS)
        (tmp / "state.json").write_text(json.dumps(
            {"step": step, "param_groups": groups, "sha256": {TENSORS: sha256(tmp / TENSORS)},
             **(extra or {})}, indent=2))
        usual_permissions(tmp)
        old = previous_path(folder)
        shutil.rmtree(old, ignore_errors=True)  # a stale one from an interrupted swap
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def previous_path(folder: Path) -> Path:
    """Where the previous checkpoint waits while a new one is swapped in."""
    return folder.with_name(folder.name + ".old")


def find_checkpoint(folder: str | os.PathLike) -> Path | None:
    """`folder`, or the previous checkpoint if a kill hit between the two renames of a save."""
    folder = Path(folder)
    for candidate in (folder, previous_path(folder)):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def damaged(found: Path, error: BaseException) -> InputError:
    """The one-line error for a checkpoint that cannot be read back."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InputError(f"{found}: damaged checkpoint ({first_line}); start again with --overwrite")


def open_for_resume(out: Path) -> tuple[Path, dict[str, Any]]:
    """For --resume: the newest checkpoint in out/checkpoint and its state.json (one-line errors
    when there is none or it cannot be read)."""
    folder = out / CHECKPOINT_DIR
    found = find_checkpoint(folder)
    if found is None:
        raise UsageError(f"{out}: no checkpoint to resume from ({folder} is missing)")
    try:
        return found, load_json_object(found / "state.json")
    except (OSError, ValueError) as error:
        raise damaged(found, error) from None


def read_checkpoint(folder: str | os.PathLike, modules: list[str], optimizers: list[str]
                    ) -> tuple[dict[str, Any], dict[str, dict], dict[str, dict]]:
    """state.json, and the named modules' and optimizers' state dicts."""
    folder = Path(folder)
    meta = load_json_object(folder / "state.json")
    expected = meta.get("sha256", {}).get(TENSORS)  # absent in checkpoints older than checksums
    if expected is not None and sha256(folder / TENSORS) != expected:
        raise ValueError(f"{TENSORS} does not match the sha256 in state.json: it was cut short "
                         "or changed after it was written")
    try:
        tensors = load_file(folder / TENSORS)
    except SafetensorError as error:
        raise ValueError(f"{TENSORS}: {error}") from None
    module_states = {name: {key[len(name) + 1:]: value for key, value in tensors.items()
                            if key.startswith(f"{name}.")} for name in modules}
    optimizer_states = {}
    for name in optimizers:
        prefix = f"optim.{name}."
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split(".", 1)
                state.setdefault(int(index), {})[field] = value
        optimizer_states[name] = {"state": state, "param_groups": meta["param_groups"][name]}
    return meta, module_states, optimizer_states


def load_checkpoint(folder: str | os.PathLike, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Restore modules and optimizers in place; returns state.json (with "step")."""
    meta, module_states, optimizer_states = read_checkpoint(folder, list(modules),
                                                            list(optimizers))
    for name, module in modules.items():
        module.load_state_dict(module_states[name])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(optimizer_states[name])
    return meta


LOG_NAME = "train_log.jsonl"  # one JSON line per step, in a run's output folder


def open_log(out: Path, step: int):
    """The run's log, open for appending from `step` on: lines of later steps (logged by a run
    killed after its last checkpoint, which the resumed run repeats) and a cut-short last line
    are dropped first, so every step is logged once."""
    path = out / LOG_NAME
    if path.exists():
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # half-written when the run was killed
        from posecast.paths import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_text("".join(kept))
    return path.open("a")
