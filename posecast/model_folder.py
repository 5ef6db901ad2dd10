"""What a model folder says of itself, read without loading anything: which family made it
(config.json's "family"; DiT folders, and those from before families, name none)."""

from __future__ import annotations

import os
from pathlib import Path

from posecast.json_files import load_json_object


def family_of(folder: str | os.PathLike) -> str:
    """The family a model folder names ("dit" when it names none)."""
    try:
        return load_json_object(Path(folder) / "config.json").get("family", "dit")
    except (OSError, ValueError, AttributeError):
        return "dit"
