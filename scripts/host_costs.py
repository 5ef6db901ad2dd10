"""Host work per chunk of the MimicMotion student's stream, which the device waits for unless
it overlaps: drawing the chunk's DWPose maps, and refilling its input-aware attention plans
(ChunkPlanner's masks, then the flex block tables). Medians over a moving pose sequence, one
row per frame size, as a table:

    python scripts/host_costs.py --sizes 576x1024,512x512 --chunks 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from posecast.mimicmotion.bench import random_student
from posecast.mimicmotion.student import StudentSettings
from posecast.pose.dwpose import draw_dwpose
from posecast.pose.framing import fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints
from posecast.streaming.rollout import Rollout

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def host_costs(height: int, width: int, chunks: int, backend: str) -> tuple[float, float]:
    """Median milliseconds per chunk: (pose maps, attention plans), the student's defaults
    (4-frame chunks, 12 cached frames, joint attention at UNet levels 1-3)."""
    settings = StudentSettings(backend=backend)
    student, conditions = random_student("mimicmotion-tiny", height, width,
                                         torch.device("cpu"), settings)
    frames = chunks * settings.chunk
    example = Keypoints.load(EXAMPLES / "astronaut_poses.npz")  # a talking person, repeated
    poses = Keypoints.concatenate([example[i % len(example)] for i in range(frames)])
    poses = fit_keypoints(poses, fit_box(example.width, example.height, width, height))
    rollout = Rollout(student, conditions, None, lambda start, end: [poses[start:end]])
    draws, plans = [], []
    with torch.no_grad():
        for start in range(0, frames, settings.chunk):
            end = start + settings.chunk
            started = time.perf_counter()
            draw_dwpose(poses[start:end], height, width)
            draws.append(time.perf_counter() - started)
            started = time.perf_counter()
            masks, _ = rollout._layout(start, end)
            plans.append(time.perf_counter() - started)
            # the cache's bookkeeping after a commit, without running the network
            rollout.cache.point_at(start % settings.context_frames)
            rollout.cache.filled()
            for tokens, planner in rollout.planners.items():
                planner.commit(start, end, masks[tokens])
            rollout.skip(settings.chunk)
    return statistics.median(draws) * 1000, statistics.median(plans[1:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="576x1024,512x512", help="WIDTHxHEIGHT,…")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--backend", default="flex", help="the plans' attention backend")
    args = parser.parse_args()
    print(f"| frame | DWPose maps, ms per chunk | attention plans ({args.backend}), ms per chunk |")
    print("|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        draw, plan = host_costs(height, width, args.chunks, args.backend)
        print(f"| {width}x{height} | {draw:.1f} | {plan:.1f} |", flush=True)


if __name__ == "__main__":
    main()
