"""Still images: PNG, JPEG, WebP and TIFF of any bit depth and mode in (EXIF orientation
applied, alpha flattened, 16-bit and float scaled to 8 bits), PNG out; a portrait may also be
a video's first frame."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from posecast.errors import InputError
from posecast.media.ffmpeg import iter_video_frames
from posecast.paths import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, require_file


def load_image(path: str | os.PathLike, kind: str = "image") -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array.

    EXIF orientation is applied (phone photos come out upright), transparency is flattened
    onto white, so a cut-out portrait gets a plain background rather than black, and
    single-channel 16-bit, 32-bit and float images are scaled to 8 bits (`_gray_to_8_bits`).
    """
    path = require_file(path, kind, IMAGE_EXTENSIONS)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); give a real {kind}")
    try:
        # Pillow warns of images over 89 megapixels (a big photo, fine) and refuses, from the
        # header, those over twice that: a one-line error below, before anything is decoded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            image.load()  # decode now, so truncated files fail here and not later
            image = ImageOps.exif_transpose(image)
            if image.mode in _WIDE_GRAY_MODES:
                image = _gray_to_8_bits(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels[1]) // 10**6} megapixels" if pixels else "too many pixels"
        raise InputError(f"{path}: {size} is more than posecast decodes "
                         f"({2 * Image.MAX_IMAGE_PIXELS // 10**6}); scale the {kind} down (a few "
                         "megapixels is plenty)") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (the content is not "
                         f"{path.suffix.lstrip('.').upper()}); re-export it as PNG or JPEG"
                         ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: the image is damaged or truncated ({error}); re-export or "
                         "re-download it") from None


# Pillow's single-channel modes wider than 8 bits: 16-bit (byte orders), 32-bit int, float.
# Its own convert("L") clips them at 255, which turns a 16-bit photo nearly white.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_FULL_SCALES = (1.0, 255.0, 65535.0, 2.0**31 - 1)  # float, 8-bit, 16-bit, 32-bit white


def _gray_to_8_bits(image: Image.Image) -> Image.Image:
    """A wide single-channel image as 8-bit gray ("L"). 16-bit modes map 65535 to white; 32-bit
    integer and float images, whose files do not say what white is, take the smallest usual
    full scale that holds their brightest pixel (1 for float data in [0, 1], then 255, 65535,
    2³¹ − 1). Negative values and NaN become black."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)  # (H, W)
    if image.mode.startswith("I;16"):
        white = 65535.0
    else:
        brightest = float(values.max(initial=0.0))
        white = next((scale for scale in _FULL_SCALES if brightest <= scale), brightest)
    gray = np.clip(np.round(values * (255.0 / white)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L")


def load_portrait(path: str | os.PathLike) -> np.ndarray:
    """A portrait as an (H, W, 3) uint8 RGB array: an image file (`load_image`), or the first
    frame of a video (a phone clip of the person works as well as a photo of them)."""
    path = require_file(path, "portrait", IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return load_image(path, kind="portrait")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); give a real portrait")
    for frame in iter_video_frames(path):  # the first frame; the decoder stops after it
        return frame.copy()
    raise InputError(f"{path}: the video has no frames; give a photo or another video")


def save_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array; the format follows the extension."""
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(Path(path))


def to_uint8_frames(images) -> np.ndarray:
    """Decoded images, a tensor (N, 3, H, W) in [-1, 1] → frames (N, H, W, 3) uint8 on the CPU."""
    pixels = ((images.float() + 1) * 127.5).round().clamp(0, 255).byte()
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
