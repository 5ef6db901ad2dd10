"""Quality metrics of rendered clips, against their references where given (`posecast eval`).

Pairs: OUTPUTS/<name>.mp4 with REFERENCES/<name>.mp4. References are cropped and resized to
the output's size the way training fits clips (largest centred crop); their keypoints come
from REFERENCES/.posecast-keypoints (extracted with mediapipe when missing) and give the
face and hand masks. Without references (any video, such as `posecast render`'s) only lip
sync, face found, seam ratio and FPS are scored.
  PSNR, SSIM       whole frame, face region, hand region (pixels in the region only);
  lip sync         mediapipe's mouth opening on the output (frames upscaled to 256 px) against
                   the loudness envelope of the output's audio: Pearson r at each lag of −5…5
                   frames (positive: the mouth moves after the sound), the best r and its lag.
                   Over clips: the peak of the mean curve (clips weighted by frames) and its
                   lag, not the mean of per-clip lags: on a 3-second clip with a weak mouth a
                   flat curve can peak anywhere, while the mean curve keeps what clips share;
  mouth            a check of the mouth that needs no detector on the output (mediapipe
                   loses small or blurred faces): the darkness of the box around the
                   reference's outer lip keypoints (255 − mean RGB; an open mouth is dark)
                   in the output against the same box in the reference, frame by frame.
                   mouth r: their Pearson r (does the output's mouth open when the real one
                   does?); mouth amplitude: the output's standard deviation over the
                   reference's (below 1: it opens less). Over clips: the mean;
  HKC              the share of frames in which mediapipe finds a hand on the output that the
                   reference shows (mediapipe gives no per-point hand confidence; the paper's
                   HKC averages DWPose confidences);
  face found       the share of the output's frames in which mediapipe finds the face (lip
                   sync is scored only above 80 %);
  seam ratio       the patch grid of the output (posecast/seams.py): the mean step between
                   neighbouring pixels at every p-th position over the step at the others,
                   the largest over both axes, periods 2 and 4 and every phase (higher
                   where a grid shows; MP4's blocks and still edges lift it too, so compare
                   it with the real clips');
  FPS              from OUTPUTS/timings.json ({name: frames per second}) when present.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from posecast.errors import InputError, UsageError
from posecast.json_files import load_json_object
from posecast.media import iter_video_frames, load_audio, probe_video
from posecast.motion.features import speech_features
from posecast.pose.cache import KEYPOINT_CACHE, cached_keypoints, write_cache_entry
from posecast.pose.extract import extract_video
from posecast.pose.face_mesh import LIP_OUTLINE, mouth_opening
from posecast.pose.framing import crop_resize, fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import Region, region_masks
from posecast.seams import SeamMeter
from posecast.train.region_loss import ssim_map

LAGS = range(-5, 6)
DETECTION_SIDE = 256


@dataclass(frozen=True)
class ClipScores:
    name: str
    frames: int
    psnr: float | None  # None: no reference
    ssim: float | None
    face_psnr: float | None  # None: no reference, or no face in it
    face_ssim: float | None
    hand_psnr: float | None  # None: no reference, or no hand in it
    hand_ssim: float | None
    lip_sync_r: float | None  # None: no face found on the output, or silent audio
    lip_sync_lag: int | None
    lip_sync_curve: list[float | None] | None  # r at each lag of LAGS (None: undefined)
    hkc: float | None
    fps: float | None
    # None: no lips in the reference, or a still mouth (defaults: scores.json files written
    # before these fields existed still load)
    mouth_r: float | None = None
    mouth_amplitude: float | None = None
    seam_ratio: float | None = None  # None: frames too small to measure
    face_found: float | None = None  # share of frames; None: no frame scored


def _reference_keypoints(references: Path, path: Path) -> Keypoints:
    cache = references / KEYPOINT_CACHE
    cached = cached_keypoints(references, path, cache)
    if cached is not None:
        return Keypoints.load(cached)
    keypoints = extract_video(path, smooth=True, allow_missing=True)
    write_cache_entry(keypoints, references, path, cache)
    return keypoints


def lip_sync_curve(openings: np.ndarray, loudness: np.ndarray) -> np.ndarray:
    """Pearson r of mouth opening with loudness at each lag of LAGS, (len(LAGS),); NaN where a
    shifted pair is too short or constant."""
    curve = np.full(len(LAGS), np.nan)
    for i, lag in enumerate(LAGS):
        a = openings[max(lag, 0):len(openings) + min(lag, 0)]
        b = loudness[max(-lag, 0):len(loudness) + min(-lag, 0)]
        if len(a) > 3 and a.std() > 1e-6 and b.std() > 1e-6:
            curve[i] = np.corrcoef(a, b)[0, 1]
    return curve


def curve_peak(curve: np.ndarray) -> tuple[float | None, int | None]:
    """The best r of a lag curve and its lag; (None, None) when it has no value."""
    if not np.isfinite(curve).any():
        return None, None
    best = int(np.nanargmax(curve))
    return float(curve[best]), LAGS[best]


def mouth_darkness(frame: np.ndarray, face: np.ndarray) -> float | None:
    """255 − the mean RGB of `frame` (H, W, 3) inside the box of the outer lip points of
    `face` (478, 3) in its pixels; None without lips."""
    lips = face[list(LIP_OUTLINE)]
    if not (lips[:, 2] > 0).all():
        return None
    (x0, y0), (x1, y1) = np.floor(lips[:, :2].min(0)), np.ceil(lips[:, :2].max(0)) + 1
    height, width = frame.shape[:2]
    box = frame[max(int(y0), 0):min(int(y1), height), max(int(x0), 0):min(int(x1), width)]
    return None if box.size == 0 else 255.0 - float(box.mean())


def mouth_agreement(output: list[float | None], reference: list[float | None]
                    ) -> tuple[float | None, float | None]:
    """Mouth r and amplitude of two darkness series (frames without lips left out)."""
    pairs = np.array([(a, b) for a, b in zip(output, reference, strict=True)
                      if a is not None and b is not None], float).reshape(-1, 2)
    if len(pairs) < 4 or pairs.std(0).min() < 1e-6:
        return None, None
    return float(np.corrcoef(pairs.T)[0, 1]), float(pairs[:, 0].std() / pairs[:, 1].std())


def score_clip(output: Path, reference: Path | None = None, references: Path | None = None,
               fps: float | None = None) -> ClipScores:
    """The scores of one rendered clip. Without a reference (the real clip, in the folder
    `references` that caches its keypoints) only what needs none: lip sync against the
    output's own audio, face found, seam ratio and FPS; the rest is None."""
    from posecast.pose.mediapipe_holistic import HolisticDetector

    info = probe_video(output)
    frames = list(iter_video_frames(output, info))
    count, targets, keypoints = len(frames), [], None
    if reference is not None:
        reference_info = probe_video(reference)
        box = fit_box(reference_info.width, reference_info.height, info.width, info.height)
        targets = [crop_resize(frame, box) for frame in iter_video_frames(reference,
                                                                          reference_info)]
        keypoints = fit_keypoints(_reference_keypoints(references, reference), box)
        count = min(count, len(targets), len(keypoints))
    # per region: summed squared error, summed SSIM and pixel count over all frames
    squared_sum = dict.fromkeys(("all", "face", "hand"), 0.0)
    ssim_sum, pixels = dict(squared_sum), dict(squared_sum)
    hands_expected = hands_found = faces_found = 0
    seams = SeamMeter()
    openings, darkness, reference_darkness = [], [], []
    scale = DETECTION_SIDE / max(info.width, info.height)
    with HolisticDetector(video=True) as detector:
        for t in range(count):
            output_frame = frames[t]
            seams.add(output_frame)
            large = cv2.resize(output_frame, None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_CUBIC)
            found = detector.detect(large)
            face = bool(found["face"][:, 2].any())
            faces_found += face
            openings.append(mouth_opening(found["face"]) if face else np.nan)
            if keypoints is None:
                continue
            target = targets[t]
            masks = region_masks(keypoints, t, info.height, info.width)
            regions = {"all": np.ones((info.height, info.width), bool),
                       "face": masks[Region.FACE],
                       "hand": masks[Region.LEFT_HAND] | masks[Region.RIGHT_HAND]}
            squared = ((output_frame.astype(np.float64) - target) ** 2).mean(-1)
            structure = ssim_map(*(torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float()
                                   / 127.5 - 1 for x in (output_frame, target)))[0, 0].numpy()
            for name, mask in regions.items():
                squared_sum[name] += float((squared * mask).sum())
                ssim_sum[name] += float((structure * mask).sum())
                pixels[name] += float(mask.sum())
            darkness.append(mouth_darkness(output_frame, keypoints.face[t]))
            reference_darkness.append(mouth_darkness(target, keypoints.face[t]))
            for part in ("left_hand", "right_hand"):
                if getattr(keypoints, part)[t, :, 2].any():
                    hands_expected += 1
                    hands_found += bool(found[part][:, 2].any())

    def psnr(name):
        return None if pixels[name] == 0 else \
            float(10 * np.log10(255.0**2 / max(squared_sum[name] / pixels[name], 1e-10)))

    def ssim(name):
        return None if pixels[name] == 0 else ssim_sum[name] / pixels[name]

    openings = np.array(openings)
    face_found = faces_found / count if count else None
    curve = None
    if face_found is not None and face_found > 0.8 and info.has_audio:
        filled = np.where(np.isfinite(openings), openings, np.nanmedian(openings))
        loudness = speech_features(load_audio(output), info.fps, count).loudness
        curve = lip_sync_curve(filled, loudness)
    r, lag = (None, None) if curve is None else curve_peak(curve)
    return ClipScores(output.stem, count, psnr("all"), ssim("all"), psnr("face"), ssim("face"),
                      psnr("hand"), ssim("hand"), r, lag,
                      None if r is None else as_list(curve),
                      hands_found / hands_expected if hands_expected else None, fps,
                      *mouth_agreement(darkness, reference_darkness), seams.ratio(), face_found)


def evaluate_folder(outputs: str | os.PathLike, references: str | os.PathLike | None = None,
                    on_clip: Callable[[ClipScores], None] | None = None) -> dict:
    """Scores per clip and their means (over clips where a score exists; lip sync: the peak
    of the frame-weighted mean lag curve). `outputs`: a folder of .mp4 clips or one .mp4."""
    outputs = Path(outputs)
    if outputs.is_file() and outputs.suffix.lower() == ".mp4":
        videos, folder = [outputs], outputs.parent
    elif outputs.is_dir():
        videos, folder = sorted(outputs.glob("*.mp4")), outputs
    else:
        raise UsageError(f"{outputs}: neither an .mp4 file nor a folder of them")
    if references is not None:
        references = Path(references)
        if not references.is_dir():
            raise UsageError(f"{references}: no such references folder")
    timings_path = folder / "timings.json"
    timings = _read_timings(timings_path) if timings_path.exists() else {}
    pairs = [(path, None if references is None else references / path.name) for path in videos]
    missing = [path.name for path, reference in pairs
               if reference is not None and not reference.exists()]
    if missing:
        raise UsageError(f"{references}: no reference for {', '.join(missing[:3])}"
                         + (" …" if len(missing) > 3 else ""))
    if not pairs:
        raise UsageError(f"{outputs}: no .mp4 outputs to evaluate")
    clips = []
    for output, reference in pairs:
        scores = score_clip(output, reference, references, timings.get(output.stem))
        clips.append(scores)
        if on_clip is not None:
            on_clip(scores)
    averaged = [name for name in ClipScores.__dataclass_fields__
                if name not in ("name", "frames") and not name.startswith("lip_sync")]
    means = {}
    for field in averaged:
        values = [getattr(clip, field) for clip in clips if getattr(clip, field) is not None]
        means[field] = float(np.mean(values)) if values else None
    means["lip_sync_curve"], means["lip_sync_r"], means["lip_sync_lag"] = pooled_lip_sync(clips)
    return {"clips": [asdict(clip) for clip in clips], "mean": means}


def _read_timings(path: Path) -> dict[str, float]:
    """OUTPUTS/timings.json: {clip name: frames per second}, each a positive number."""
    try:
        timings = load_json_object(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable timings file ({error}); it should hold "
                         '{"clip name": frames per second, …}') from None
    for name, fps in timings.items():
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < math.inf:
            raise InputError(f"{path}: the rate of {name!r} is {json.dumps(fps)}, not a "
                             "positive number of frames per second")
    return timings


def pooled_lip_sync(clips: list[ClipScores]
                    ) -> tuple[list[float | None] | None, float | None, int | None]:
    """Lip sync of a group of clips: their mean lag curve, its peak r and the peak's lag."""
    curve = mean_curve(clips)
    if curve is None:
        return None, None, None
    return curve, *curve_peak(np.array(curve, float))


def as_list(curve: np.ndarray) -> list[float | None]:
    """A lag curve for JSON: NaN becomes None."""
    return [float(r) if np.isfinite(r) else None for r in curve]


def mean_curve(clips: list[ClipScores]) -> list[float | None] | None:
    """The lag curves of the clips that have one, averaged with their frame counts as weights."""
    scored = [clip for clip in clips if clip.lip_sync_curve is not None]
    if not scored:
        return None
    curves = np.array([clip.lip_sync_curve for clip in scored], float)  # (clips, lags)
    weights = np.array([clip.frames for clip in scored], float)[:, None] * np.isfinite(curves)
    totals = weights.sum(0)
    curve = np.where(totals > 0, (np.nan_to_num(curves) * weights).sum(0)
                     / np.maximum(totals, 1), np.nan)
    return as_list(curve)
