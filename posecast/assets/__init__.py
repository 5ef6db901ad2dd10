"""Files shipped inside the package: the starter student model `render` uses by default."""

from __future__ import annotations

from pathlib import Path

from posecast.errors import PosecastError

STARTER = Path(__file__).resolve().parent / "starter"


def starter_model() -> Path:
    """The bundled starter student (a model folder); see its README.md for how it was made."""
    if not (STARTER / "config.json").is_file():
        raise PosecastError(f"the bundled starter model is missing ({STARTER}); reinstall "
                            "posecast or pass --model FOLDER_OR_REPO")
    return STARTER
