"""Parsing shared option values: sizes (devices: posecast.devices)."""

from __future__ import annotations

from posecast.config import MAX_SIDE
from posecast.errors import UsageError


def parse_size(text: str, multiple: int) -> tuple[int, int]:
    """'WxH' → (height, width), both positive multiples of `multiple`."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text}: write it as WIDTHxHEIGHT, e.g. 512x512") from None
    if max(width, height) > MAX_SIDE:
        raise UsageError(f"--size {text}: at most {MAX_SIDE} pixels a side")
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise UsageError(f"--size {text}: width and height must be positive multiples of "
                         f"{multiple} for this model")
    return height, width
