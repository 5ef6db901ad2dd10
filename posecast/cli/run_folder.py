"""The output folder of a training run (`train`, `distill`): checked before any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from posecast.errors import UsageError


def prepare_run_folder(out: Path, dataset: Path, resume: bool, overwrite: bool,
                       can_resume: bool = True) -> None:
    """Refuse an output inside (or around) the dataset, a non-folder, or a used folder without
    --resume or --overwrite; with --overwrite, clear it (once, under torchrun)."""
    if not dataset.is_dir():
        raise UsageError(f"{dataset}: no such dataset folder")
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
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one process clears it
            shutil.rmtree(out)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the parent folder {out.parent} does not exist")
