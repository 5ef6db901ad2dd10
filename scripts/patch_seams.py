"""Patch seams in folders of rendered videos, no references needed: `posecast eval`'s seam
ratio (posecast/seams.py) of each video, and per folder their mean and the highest. A model
whose patches drift apart draws a visible grid and scores higher than the real clips.

    python scripts/patch_seams.py runs/heldout/real runs/heldout/method
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posecast.media import iter_video_frames
from posecast.seams import seam_ratio


def folder_ratios(folder: Path) -> list[float]:
    """The seam ratio of each .mp4 in `folder` (every readable MP4 has a frame of 3 pixels or
    more along an axis, so each has one)."""
    return [seam_ratio(iter_video_frames(path)) for path in sorted(folder.glob("*.mp4"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of .mp4 files")
    args = parser.parse_args()
    print("| folder | videos | seam ratio (mean) | highest |")
    print("|---|---|---|---|")
    for folder in args.folders:
        ratios = folder_ratios(folder)
        cells = (f"{np.mean(ratios):.3f} | {max(ratios):.3f}" if ratios else "- | -")
        print(f"| {folder} | {len(ratios)} | {cells} |")


if __name__ == "__main__":
    main()
