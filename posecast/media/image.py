"""Still images: PNG, JPEG and WebP in (EXIF orientation applied, alpha flattened), PNG out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from posecast.errors import InputError
from posecast.paths import IMAGE_EXTENSIONS, require_file


def load_image(path: str | os.PathLike, kind: str = "image") -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array.

    EXIF orientation is applied (phone photos come out upright) and transparency is flattened
    onto white, so a cut-out portrait gets a plain background rather than black.
    """
    path = require_file(path, kind, IMAGE_EXTENSIONS)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); give a real {kind}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated files fail here and not later
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(
            f"{path}: not a readable image (the content is not {path.suffix.lstrip('.').upper()}); "
            "re-export it as PNG or JPEG"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(
            f"{path}: the image is damaged or truncated ({error}); re-export or re-download it"
        ) from None


def save_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array; the format follows the extension."""
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(Path(path))
