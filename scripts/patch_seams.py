"""Patch seams in rendered videos: how much brighter the step between two pixels is where it
crosses a token's patch border than inside a patch (the mean |horizontal difference| of the grey
frames at columns p−1 | p against the other columns, for patch size p). About 1.0 for real
footage (1.04 on the held-out clips of the starter dataset); a model whose patches drift apart
draws a visible grid and scores higher.

    python scripts/patch_seams.py runs/heldout/real runs/heldout/method --patch 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posecast.media import iter_video_frames, probe_video


def seam_ratio(folder: Path, patch: int) -> tuple[float, float, int]:
    """Mean step across patch borders, inside patches, and the number of videos read."""
    across, inside = [], []
    videos = sorted(folder.glob("*.mp4"))
    for path in videos:
        grey = np.stack(list(iter_video_frames(path, probe_video(path)))).astype(float).mean(-1)
        steps = np.abs(np.diff(grey, axis=2))  # (T, H, W − 1): column x is |I[x + 1] − I[x]|
        border = np.arange(steps.shape[2]) % patch == patch - 1
        across.append(steps[..., border].mean())
        inside.append(steps[..., ~border].mean())
    return float(np.mean(across)), float(np.mean(inside)), len(videos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of .mp4 files")
    parser.add_argument("--patch", type=int, default=4, help="the model's patch size in pixels")
    args = parser.parse_args()
    print("| folder | videos | step across borders | step inside | ratio |")
    print("|---|---|---|---|---|")
    for folder in args.folders:
        across, inside, count = seam_ratio(folder, args.patch)
        print(f"| {folder} | {count} | {across:.2f} | {inside:.2f} | {across / inside:.3f} |")


if __name__ == "__main__":
    main()
