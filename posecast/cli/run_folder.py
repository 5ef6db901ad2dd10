"""The output folder of a training run (`train`, `distill`): checked before any work."""

from __future__ import annotations

import os
from pathlib import Path

from posecast.cli.ui import note
from posecast.errors import UsageError
from posecast.ownership import clear, require_replaceable

# What a run writes in its folder (train, distill, train-motion; a MimicMotion student also
# copies its teacher's components); --overwrite deletes these and keeps anything else.
RUN_ENTRIES = ("train_log.jsonl", "checkpoint", "checkpoint.old", "model.safetensors",
               "config.json", "README.md", "ode_pairs", "samples", "fast_decoder", "unet", "vae",
               "image_encoder", "feature_extractor", "scheduler")
# What run folders made before posecast's marker hold (refused by --overwrite, with a hint)
LEGACY_RUN_NAMES = ("train_log.jsonl", "checkpoint", "model.safetensors", "ode_pairs")


def prepare_run_folder(out: Path, dataset: Path, resume: bool, overwrite: bool,
                       can_resume: bool = True) -> list[str]:
    """Refuse an output inside (or around) the dataset, a non-folder, or a used folder without
    --resume or --overwrite; with --overwrite, clear what an earlier run wrote there (once,
    under torchrun), but only once every input is checked and only in a folder posecast made.
    Returns the names of the entries kept (not written by a run)."""
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
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the parent folder {out.parent} does not exist")
    if not (out.is_dir() and any(out.iterdir())) or resume:
        return []
    if not overwrite:
        hint = "pass --resume to continue training or " if can_resume else "pass "
        raise UsageError(f"{out}: already holds files; {hint}--overwrite to start again")
    require_replaceable(out, "run folder", LEGACY_RUN_NAMES)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one process clears it
        return []
    kept = clear(out, "run folder", owned_names=RUN_ENTRIES, legacy_names=LEGACY_RUN_NAMES)
    if kept:
        note(f"note: {out}: kept {', '.join(kept)} (not written by a posecast run)")
    return kept
