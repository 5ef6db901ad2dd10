"""The miniature of the paper's ablation (issue 7): every variant re-renders the held-out clips
of a `posecast make-dataset` folder from their own first frame, poses and audio, and
`posecast eval` scores them against the real clips.

Rows: (with --real) the real clips themselves, each measure's ceiling | teacher | teacher +
input-aware attention | plain DMD student | DMD + region loss (the method) | causal student
with dense attention | the method + region steps (a supervised stage that is not in the
paper, kept out of the method's row so that the row compares like with like). Columns: FPS
(generation + MP4 encoding, on this machine, one clip at a time), PSNR, face PSNR, hand PSNR,
lip-sync r and lag, mouth r and amplitude, face found (the share of frames where mediapipe
finds the face), seam ratio (the patch grid), HKC; each as `posecast eval` defines it.

    python scripts/ablation.py --data runs/cospeech64 --teacher runs/teacher \
        --method runs/student --plain-dmd runs/student_plain \
        --dense-student runs/student_dense --region-steps runs/student_region \
        --real --clips 8 --frames 75 \
        --output runs/ablation --markdown docs/ABLATION_TABLE.md

Any row whose model is not given is left out. The teacher rows use the teacher's own sampler
settings (steps, CFG) unless --teacher-steps / --teacher-cfg say otherwise. `--frames N` keeps
the first N frames (and their audio) of each clip; `--reuse` keeps a row's earlier outputs and
scores when its folder has them (rows can then be rendered in separate runs, e.g. the slow
teacher rows beside a training run, and the last run writes the whole table); `--rescore` keeps
the outputs but scores them again (after a change to `posecast eval`). `--names a,b` picks
held-out clips by name; `--no-sparse-teacher` leaves that row out (to compare teachers).

A second table splits lip sync by what is new in a clip (from the dataset's manifest.json):
clips of held-out sentences, those of them spoken by people seen in training, and clips of
held-out people. Each cell is the peak of the group's mean lag curve and its lag.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from posecast.dit.codecs import make_codec
from posecast.dit.pretrained import from_pretrained
from posecast.dit.sampling import decode_frames, prepare_conditions, sample_latents
from posecast.evaluate import ClipScores, evaluate_folder, pooled_lip_sync
from posecast.families import load_renderer
from posecast.media import AudioClip, iter_video_frames, load_audio, probe_video, write_mp4
from posecast.pose.cache import KEYPOINT_CACHE, entry_path
from posecast.pose.framing import crop_resize, fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints

ROWS = (("real", "the real clips (the measures' ceiling)"), ("teacher", "teacher"),
        ("teacher_sparse", "teacher + input-aware attention"),
        ("plain_dmd", "plain DMD student"), ("method", "DMD + region loss (the method)"),
        ("dense_student", "causal student, dense attention"),
        ("region_steps", "the method + region steps (not in the paper)"))


def held_out_clips(data: Path, frames: int | None) -> list[tuple[Path, Keypoints]]:
    folder = data / "heldout"
    return [(path, Keypoints.load(entry_path(folder, path, folder / KEYPOINT_CACHE))[:frames])
            for path in sorted(folder.glob("*.mp4"))]


def clip_audio(path: Path, poses: Keypoints) -> AudioClip:
    """The clip's audio, cut to the frames kept."""
    audio = load_audio(path)
    samples = round(len(poses) / poses.fps * audio.sample_rate)
    return AudioClip(audio.samples[:samples], audio.sample_rate)


def first_frame(path: Path) -> np.ndarray:
    return next(iter_video_frames(path, probe_video(path)))


def render_teacher(model_path: str, clips, out: Path, steps: int | None, cfg: float | None,
                   attention: str | None) -> dict[str, float]:
    changes = {"attention": attention} if attention else {}
    model = from_pretrained(model_path, **changes)
    config = model.config
    codec = make_codec(config.codec, "cpu")
    steps, cfg = steps or config.sampler.steps, config.sampler.cfg if cfg is None else cfg
    timings = {}
    for path, poses in clips:
        audio = clip_audio(path, poses)
        portrait = first_frame(path)
        started = time.perf_counter()
        conditions = prepare_conditions(portrait, poses, config.height, config.width, poses[0])
        latents = sample_latents(model, codec, conditions, steps, cfg, seed=0)
        with write_mp4(out / path.name, fps=poses.fps, audio=audio) as mp4:
            for frame in decode_frames(codec, latents):
                mp4.write(frame)
        timings[path.stem] = len(poses) / (time.perf_counter() - started)
    return timings


def copy_real(clips, out: Path) -> dict[str, float]:
    """The held-out clips themselves, cut like the others: what each measure gives a perfect
    render (lip sync is bounded by how well the clips' mouths follow loudness)."""
    for path, poses in clips:
        with write_mp4(out / path.name, fps=poses.fps, audio=clip_audio(path, poses)) as mp4:
            frames = iter_video_frames(path, probe_video(path))
            for _, frame in zip(range(len(poses)), frames, strict=False):
                mp4.write(frame)
    return {}


def render_student(model_path: str, clips, out: Path) -> dict[str, float]:
    renderer = load_renderer(model_path, torch.device("cpu"))
    timings = {}
    for path, poses in clips:
        audio = clip_audio(path, poses)
        portrait = first_frame(path)
        box = fit_box(portrait.shape[1], portrait.shape[0], renderer.width, renderer.height)
        result = renderer.generate(audio, crop_resize(portrait, box), fit_keypoints(poses, box),
                                   out / path.name, poses.fps)
        timings[path.stem] = result.frames / result.elapsed
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a make-dataset folder")
    parser.add_argument("--output", "-o", dest="out", type=Path, required=True)
    parser.add_argument("--teacher")
    parser.add_argument("--teacher-sparse", help="an input-aware teacher; default: the teacher "
                        "with input-aware attention switched on, without fine-tuning")
    parser.add_argument("--plain-dmd")
    parser.add_argument("--method")
    parser.add_argument("--dense-student")
    parser.add_argument("--region-steps", help="the method's student after region steps")
    parser.add_argument("--teacher-steps", type=int)
    parser.add_argument("--teacher-cfg", type=float)
    parser.add_argument("--clips", type=int, default=0,
                        help="use N held-out clips, photos and drawn people taking turns")
    parser.add_argument("--names", help="use these held-out clips (comma-separated names)")
    parser.add_argument("--no-sparse-teacher", action="store_true",
                        help="leave out the teacher with input-aware attention switched on")
    parser.add_argument("--real", action="store_true",
                        help="also score the real held-out clips (each measure's ceiling)")
    parser.add_argument("--frames", type=int, help="keep the first N frames of each clip")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a row's earlier outputs and scores where they exist")
    parser.add_argument("--rescore", action="store_true",
                        help="keep a row's earlier outputs but score them again")
    parser.add_argument("--markdown", type=Path, help="write the tables here too")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    clips = held_out_clips(args.data, args.frames)
    if args.clips:
        photos = [clip for clip in clips if "drawn" not in clip[0].name]
        drawn = [clip for clip in clips if "drawn" in clip[0].name]
        mixed = [clip for pair in zip(photos, drawn, strict=False) for clip in pair]
        clips = (mixed + photos[len(mixed) // 2:] + drawn[len(mixed) // 2:])[:args.clips]
    if args.names:
        names = args.names.split(",")
        clips = [clip for clip in clips if clip[0].stem in names]
        missing = set(names) - {clip[0].stem for clip in clips}
        if missing:
            sys.exit(f"no held-out clip named {', '.join(sorted(missing))}")
    references = args.data / "heldout"
    results = {}
    for key, title in ROWS:
        source = (True if args.real else None) if key == "real" else getattr(args, key, None)
        attention = None
        if (key == "teacher_sparse" and source is None and args.teacher
                and not args.no_sparse_teacher):
            source, attention = args.teacher, "input_aware"
        if source is None:
            continue
        folder = args.out / key
        title += " (not fine-tuned)" if attention else ""
        if args.rescore and (folder / "timings.json").exists():
            print(f"scoring again: {title}", file=sys.stderr)
            report = evaluate_folder(folder, references)
            (folder / "scores.json").write_text(json.dumps(report, indent=2))
            results[key] = (title, report)
            continue
        if args.reuse and (folder / "scores.json").exists():
            report = json.loads((folder / "scores.json").read_text())
            if any("lip_sync_curve" not in clip or "seam_ratio" not in clip
                   for clip in report["clips"]):
                sys.exit(f"{folder}: scores from an older posecast eval; use --rescore")
            results[key] = (title, report)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        print(f"rendering {len(clips)} clips: {title}", file=sys.stderr)
        if key == "real":
            timings = copy_real(clips, folder)
        elif key.startswith("teacher"):
            timings = render_teacher(source, clips, folder, args.teacher_steps,
                                     args.teacher_cfg, attention)
        else:
            timings = render_student(source, clips, folder)
        (folder / "timings.json").write_text(json.dumps(timings, indent=2))
        report = evaluate_folder(folder, references)
        (folder / "scores.json").write_text(json.dumps(report, indent=2))
        results[key] = (title, report)

    header = ("| variant | FPS | PSNR | face PSNR | hand PSNR | lip-sync r | lag | mouth r | "
              "mouth amp. | face found | seam ratio | HKC |\n" + "|---" * 12 + "|\n")
    lines = []
    for title, report in results.values():
        mean = report["mean"]

        def cell(key, style, mean=mean):
            return "-" if mean.get(key) is None else style.format(mean[key])
        lines.append(f"| {title} | {cell('fps', '{:.1f}')} | {cell('psnr', '{:.2f}')} | "
                     f"{cell('face_psnr', '{:.2f}')} | {cell('hand_psnr', '{:.2f}')} | "
                     f"{cell('lip_sync_r', '{:.3f}')} | {cell('lip_sync_lag', '{:+d}')} | "
                     f"{cell('mouth_r', '{:.3f}')} | {cell('mouth_amplitude', '{:.2f}')} | "
                     f"{cell('face_found', '{:.0%}')} | {cell('seam_ratio', '{:.2f}')} | "
                     f"{cell('hkc', '{:.3f}')} |")
    table = header + "\n".join(lines) + "\n\n" + lip_sync_table(args.data, results)
    print(table)
    (args.out / "ablation.json").write_text(json.dumps(
        {key: {"title": title, **report["mean"]} for key, (title, report) in results.items()},
        indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return 0


def lip_sync_table(data: Path, results: dict[str, tuple[str, dict]]) -> str:
    """Lip sync per row on clips of held-out sentences (all, and those spoken by people seen
    in training) and clips of held-out people: 'r (lag)' at the peak of the mean curve."""
    manifest = json.loads((data / "manifest.json").read_text())
    clips = {Path(clip["file"]).stem: clip for clip in manifest["clips"]}
    new_sentence = {name for name, clip in clips.items()
                    if clip["sentence"] in manifest["held_out_sentences"]}
    new_person = {name for name, clip in clips.items()
                  if clip["person"] in manifest["held_out_people"]}
    groups = {"held-out sentences": lambda name: name in new_sentence,
              "held-out sentences, people seen in training":
                  lambda name: name in new_sentence and name not in new_person,
              "held-out people": lambda name: name in new_person}
    lines = ["| lip sync: r (lag) | " + " | ".join(groups) + " |",
             "|---" * (len(groups) + 1) + "|"]
    for title, report in results.values():
        scores = [ClipScores(**clip) for clip in report["clips"]]
        cells = []
        for belongs in groups.values():
            members = [clip for clip in scores if belongs(clip.name)]
            _, r, lag = pooled_lip_sync(members)
            cells.append("-" if r is None else f"{r:.3f} ({lag:+d}), {len(members)} clips")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
