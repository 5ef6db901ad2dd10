"""The output folder of a training run (`train`, `distill`): checked before any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from posecast.errors import UsageError

# what a posecast run or model folder holds; --overwrite deletes only a folder showing one
RUN_MARKERS = ("train_log.jsonl", "checkpoint", "model.safetensors", "ode_pairs")


def is_posecast_folder(folder: Path) -> bool:
    """A training run or model folder that posecast wrote (its files say so)."""
    return any((folder / name).exists() for name in RUN_MARKERS)


def prepare_run_folder(out: Path, dataset: Path, resume: bool, overwrite: bool,
                       can_resume: bool = True) -> None:
    """Refuse an output inside (or around) the dataset, a non-folder, or a used folder without
    --resume or --overwrite; with --overwrite, clear it (once, under torchrun), but only once
    every input is checked and only if it is a posecast run or model folder."""
    from posecast.paths import VIDEO_EXTENSIONS

    if not dataset.is_dir():
        raise UsageError(f"{dataset}: no such dataset folder")
    if not any(p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")
               for p in dataset.rglob("*")):
        raise UsageError(f"{dataset}: no video clips found; a dataset is a folder of clips")
    resolved_out, resolved_data = out.resolve(), dataset.resolve()
    if resolved_out == resolved_data or resolved_out in resolved_data.parents \
            or resolved_data in resolved_out.parents:
        raise UsageError(f"{out}: the output folder must lie outside the dataset {dataset} "
                         "(and not contain it)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not overwrite:
            hint = "pass --resume to continue training or " if can_resume else "pass "
            raise UsageError(f"{out}: already holds files; {hint}--overwrite to start again")
        if not is_posecast_folder(out):
            raise UsageError(f"{out}: holds files that are not a posecast run or model (none "
                             f"of {', '.join(RUN_MARKERS)}); refusing to delete it with "
                             "--overwrite; give a new --out")
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one process clears it
            shutil.rmtree(out)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the parent folder {out.parent} does not exist")
