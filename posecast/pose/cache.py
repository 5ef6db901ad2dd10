"""The keypoint cache of a folder of clips: one `.npz` per clip, keyed by the clip itself.

An entry is named from the clip's full path under the folder, extension included (`a.mp4` and
`a.mov` never share one), and holds the clip's fingerprint: its size and a hash of its first and
last MiB. A clip replaced by another file (re-encoded, re-cut, renamed over) misses its entry and
is extracted again; a folder copied elsewhere keeps its cache (no modification times).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from posecast.ownership import mark
from posecast.paths import atomic_output
from posecast.pose.keypoints import Keypoints

KEYPOINT_CACHE = ".posecast-keypoints"  # inside a dataset folder
_EDGE = 1 << 20  # bytes hashed at each end of a clip


def clip_fingerprint(clip: str | os.PathLike) -> str:
    """'size:sha256 of the first and last MiB' (the whole file when it is 2 MiB or less)."""
    clip = Path(clip)
    size = clip.stat().st_size
    digest = hashlib.sha256()
    with clip.open("rb") as handle:
        digest.update(handle.read(_EDGE))
        if size > _EDGE:
            handle.seek(max(_EDGE, size - _EDGE))
            digest.update(handle.read())
    return f"{size}:{digest.hexdigest()}"


def entry_path(folder: Path, clip: Path, cache: Path) -> Path:
    """Where `clip` (under `folder`) is cached: its relative path with `.npz` appended."""
    relative = clip.relative_to(folder)
    return cache / relative.with_name(relative.name + ".npz")


def cached_keypoints(folder: Path, clip: Path, cache: Path) -> Path | None:
    """The cache entry of `clip` if it holds keypoints of this very file, else None."""
    path = entry_path(folder, clip, cache)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = str(data["clip_fingerprint"]) if "clip_fingerprint" in data else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # damaged: extracted again
    return path if stored == clip_fingerprint(clip) else None


def write_cache_entry(keypoints: Keypoints, folder: Path, clip: Path, cache: Path) -> Path:
    """Write `clip`'s keypoints with its fingerprint, atomically; the cache folder is marked as
    posecast's."""
    path = entry_path(folder, clip, cache)
    mark(cache, "keypoints")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        keypoints.save(tmp, clip_fingerprint=clip_fingerprint(clip))
    return path
