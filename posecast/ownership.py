"""Which folders posecast made: a marker file that only posecast writes, and `--overwrite`
that deletes nothing else.

Every folder a command creates (a run, a model, a dataset, an export, an import, a keypoint
cache) holds `.posecast.json`: who made it (`"made_by": "posecast"`), its kind, the command,
the version and a random id. A file name such as `manifest.json` or `config.json` proves
nothing (browser extensions and most apps have one), so `--overwrite` asks for the marker.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path

from posecast.errors import UsageError
from posecast.json_files import load_json

MARKER = ".posecast.json"
# Temporary files and folders posecast makes beside an output start with this (see paths.py)
TEMP_PREFIX = ".posecast-"
KINDS = ("run", "model", "dataset", "export", "import", "keypoints")


def mark(folder: str | os.PathLike, kind: str) -> Path:
    """Create `folder` if needed and write its marker, unless it carries one already (a run
    that resumes keeps its id). Returns the folder."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_marked(folder):
        from posecast.version import __version__

        record = {"made_by": "posecast", "kind": kind, "version": __version__,
                  "command": " ".join(["posecast", *sys.argv[1:]]),
                  "id": uuid.uuid4().hex,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def is_marked(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a marker posecast wrote (a readable one that says so)."""
    path = Path(folder) / MARKER
    try:
        record = load_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("made_by") == "posecast"


def require_replaceable(folder: str | os.PathLike, what: str,
                        legacy_names: Collection[str] = ()) -> None:
    """Refuse, in one line, an `--overwrite` of `folder` unless it is missing, empty or
    carries posecast's marker. `what` names the folder in the message ("dataset folder").
    `legacy_names`: entries that folders of this kind held before posecast marked them; such a
    folder is refused too, with how to remove it by hand."""
    folder = Path(folder)
    if folder.is_symlink():
        raise UsageError(f"{folder}: is a symbolic link; refusing to replace it with "
                         "--overwrite (give the folder it points to, or a new path)")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UsageError(f"{folder}: exists and is not a folder; refusing to replace it with "
                         "--overwrite (give a new path)")
    if is_marked(folder) or not any(folder.iterdir()):
        return
    if any((folder / name).exists() for name in legacy_names):
        raise UsageError(f"{folder}: has no {MARKER}, so posecast did not make it (or made it "
                         f"before marking its folders); refusing to delete it with --overwrite; "
                         f"if it is an old {what} you no longer need, remove it by hand "
                         f"(rm -r {folder}), or give a new path")
    raise UsageError(f"{folder}: was not made by posecast (no {MARKER}); refusing to delete it "
                     "with --overwrite; give a new path")


def require_new_folder(folder: Path, overwrite: bool, what: str,
                       legacy_names: Collection[str] = ()) -> None:
    """Before writing the folder `folder` whole: it must not exist unless `overwrite` (and then
    `require_replaceable` accepts it), and its parent folder must."""
    if folder.exists() and not overwrite:
        raise UsageError(f"{folder}: already exists; pass --overwrite to replace it")
    require_replaceable(folder, what, legacy_names)
    if not folder.parent.is_dir():
        raise UsageError(f"{folder}: the parent folder {folder.parent} does not exist")


def clear(folder: str | os.PathLike, what: str, owned_names: Collection[str] | None = None,
          legacy_names: Collection[str] = ()) -> list[str]:
    """Delete a folder that `require_replaceable` accepts. With `owned_names` (the entries that
    the folder's kind writes, e.g. a run's), only those entries and posecast's leftover
    temporaries go, the rest and the marker stay; returns the names kept."""
    folder = Path(folder)
    require_replaceable(folder, what, legacy_names)
    if not folder.exists():
        return []
    if owned_names is None:
        shutil.rmtree(folder)
        return []
    kept = []
    for entry in sorted(folder.iterdir()):
        if entry.name == MARKER:
            continue
        if entry.name in owned_names or entry.name.startswith(TEMP_PREFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        else:
            kept.append(entry.name)
    return kept
