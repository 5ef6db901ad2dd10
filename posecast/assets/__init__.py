"""Files shipped inside the package: the starter models (the student `render` uses by default
and the teacher it was distilled from, which `teacher` uses by default), portraits and drawing
tables for `make-dataset` and `pose.draw`."""

from __future__ import annotations

from pathlib import Path

from posecast.errors import PosecastError

ASSETS = Path(__file__).resolve().parent
STARTER = ASSETS / "starter"
STARTER_TEACHER = ASSETS / "starter_teacher"
PORTRAIT_FOLDER = ASSETS / "portraits"  # make-dataset's public-domain photos
FACE_TEMPLATE = ASSETS / "face_template.npy"  # make-dataset's drawn faces
MESH_TOPOLOGY = ASSETS / "mesh_topology.json"  # mediapipe's face and hand edges, for drawing
SENTENCES_FILE = ASSETS / "sentences.txt"  # what make-dataset's people say


def _bundled(folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        raise PosecastError(f"the bundled model {folder.name} is missing ({folder}); reinstall "
                            "posecast or pass --model FOLDER_OR_REPO")
    return folder


def starter_model() -> Path:
    """The bundled starter student (a model folder); see its README.md for how it was made."""
    return _bundled(STARTER)


def starter_teacher() -> Path:
    """The teacher the starter student was distilled from (a model folder)."""
    return _bundled(STARTER_TEACHER)
