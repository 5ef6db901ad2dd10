"""Synthetic co-speech clips made from material the project may use (`posecast make-dataset`).

People: the public-domain portraits in posecast/assets/portraits (NASA's astronaut photo from
scikit-image, Grace Hopper from matplotlib), warped along their moving keypoints; and drawn
people (random skin, hair, clothes, backgrounds) whose hands and arms show, drawn afresh from
their keypoints every frame. Speech: sentences spoken by espeak-ng with random voices, speeds
and pitches (a build-time tool; without it, a speech-like buzz with syllable rhythm). Motion:
the built-in motion model with a random style. Keypoints are exact (the clip is made from them)
and written to the folder's keypoint cache.

Split: drawn people with the last `held_out_people` indices and the last HELD_OUT_SENTENCES
sentences are held out; `heldout/` holds clips of held-out people or held-out sentences only,
`train/` the rest. Deterministic for a seed (given the same espeak-ng).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import soundfile
from scipy.interpolate import LinearNDInterpolator

from posecast.assets import FACE_TEMPLATE, PORTRAIT_FOLDER, SENTENCES_FILE
from posecast.media import AudioClip, load_image, write_mp4
from posecast.motion import MotionStyle, ProceduralMotion, frame_count
from posecast.pose import face_mesh as fm
from posecast.pose.cache import KEYPOINT_CACHE, write_cache_entry
from posecast.pose.framing import crop_resize, fit_keypoints, portrait_box
from posecast.pose.keypoints import (
    LEFT_ELBOW,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    NOSE,
    RIGHT_ELBOW,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
    Keypoints,
)

SENTENCES = tuple(SENTENCES_FILE.read_text(encoding="utf-8").splitlines())  # one per line
HELD_OUT_SENTENCES = 4
VOICES = ("en-us", "en-gb", "en-us+m3", "en-us+f2", "en-gb+f4", "en-us+m7", "en+f3",
          "en-gb-x-rp")
PORTRAITS = ("astronaut.jpg", "grace_hopper.jpg")


@dataclass(frozen=True)
class ClipRecord:
    file: str
    person: str
    sentence: int
    split: str
    speech: str  # "espeak-ng" | "buzz"
    seconds: float


ESPEAK_ENV = "POSECAST_ESPEAK"  # another espeak-ng (a path or a name on PATH), or "none"


def espeak_program() -> str | None:
    """The espeak-ng that speaks the sentences: $POSECAST_ESPEAK, else espeak-ng on PATH;
    None when there is none or POSECAST_ESPEAK=none (the speech is then `buzz`). The test
    suite sets none, so its datasets are the same on machines with and without espeak-ng."""
    chosen = os.environ.get(ESPEAK_ENV) or "espeak-ng"
    return None if chosen == "none" else shutil.which(chosen)


def speak(text: str, rng: np.random.Generator, program: str = "espeak-ng") -> AudioClip:
    """The sentence spoken by espeak-ng (`program`) in a random voice, speed and pitch."""
    voice = VOICES[int(rng.integers(len(VOICES)))]
    speed, pitch = int(rng.integers(130, 185)), int(rng.integers(25, 75))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run([program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                        str(path), text], check=True, capture_output=True)
        samples, rate = soundfile.read(str(path), dtype="float32")
    silence = np.zeros(int(0.25 * rate), np.float32)  # a breath before and after
    return AudioClip(np.concatenate([silence, samples, silence]), rate)


def buzz(text: str, rng: np.random.Generator, rate: int = 16_000) -> AudioClip:
    """Without espeak-ng: a voiced buzz with a syllable rhythm and pauses at word gaps."""
    syllables = max(4, round(len(text) / 3.2))
    pieces = [np.zeros(int(0.25 * rate), np.float32)]
    pitch = rng.uniform(100, 220)
    for index in range(syllables):
        length = int(rate * rng.uniform(0.12, 0.22))
        t = np.arange(length) / rate
        f0 = pitch * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 9))
        pieces.append((0.25 * np.hanning(length) * voice).astype(np.float32))
        if index % int(rng.integers(2, 5)) == 0:
            pieces.append(np.zeros(int(rate * rng.uniform(0.05, 0.2)), np.float32))
    pieces.append(np.zeros(int(0.25 * rate), np.float32))
    return AudioClip(np.concatenate(pieces), rate)


# --------------------------------------------------------------------------- photos


def photo_person(path: Path, size: int) -> tuple[np.ndarray, Keypoints]:
    """The portrait cropped like `render` crops it (face and upper body centred), at size²,
    and its keypoints."""
    from posecast.pose.extract import extract_image

    image = load_image(path, kind="portrait")
    keypoints = extract_image(image, source=str(path))
    box = portrait_box(keypoints, image.shape[1], image.shape[0], size, size)
    return crop_resize(image, box), fit_keypoints(keypoints, box)


def _moving_points(keypoints: Keypoints, frame: int) -> np.ndarray:
    """(N, 2) the points that drive the warp: face mesh, upper-body joints, hands."""
    body = keypoints.body[frame, [NOSE, LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW,
                                  LEFT_WRIST, RIGHT_WRIST]]
    return np.concatenate([keypoints.face[frame], body, keypoints.left_hand[frame],
                           keypoints.right_hand[frame]])


def warp_photo(image: np.ndarray, still: Keypoints, moving: Keypoints, frame: int,
               interpolator_cache: dict) -> np.ndarray:
    """The portrait warped so its keypoints go from `still` (frame 0) to `moving[frame]`:
    each output pixel samples the portrait at itself plus the displacement interpolated
    (piecewise linearly) from the keypoints, with the image border pinned."""
    size = image.shape[0]
    source, target = _moving_points(still, 0), _moving_points(moving, frame)
    present = (source[:, 2] > 0) & (target[:, 2] > 0)
    border = np.linspace(0, size - 1, 9)
    anchors = np.concatenate([np.stack([border, np.zeros(9)], 1),
                              np.stack([border, np.full(9, size - 1)], 1),
                              np.stack([np.zeros(9), border], 1),
                              np.stack([np.full(9, size - 1), border], 1)])
    points = np.concatenate([target[present, :2], anchors])
    shift = np.concatenate([source[present, :2] - target[present, :2], np.zeros_like(anchors)])
    interpolate = LinearNDInterpolator(points, shift, fill_value=0.0)
    grid = interpolator_cache.setdefault(size, np.stack(np.meshgrid(
        np.arange(0, size, 2, dtype=np.float64), np.arange(0, size, 2, dtype=np.float64)), -1))
    coarse = interpolate(grid.reshape(-1, 2)).reshape(*grid.shape[:2], 2).astype(np.float32)
    flow = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    warped = cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    draw_mouth(warped, moving.face[frame], size, lip_gap(still.face[0]))
    return warped


INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)


def lip_gap(face: np.ndarray) -> float:
    return float(np.linalg.norm(face[fm.UPPER_LIP_INNER_CENTRE, :2]
                                - face[fm.LOWER_LIP_INNER_CENTRE, :2]))


def draw_mouth(canvas: np.ndarray, face: np.ndarray, size: int, rest_gap: float) -> None:
    """Fill the opening between the inner lips (a dark mouth, upper teeth when wide enough)
    once it is wider than the person's own mouth at rest (`rest_gap` pixels)."""
    gap = lip_gap(face)
    if gap < rest_gap + 0.004 * size:
        return
    scale = 16  # sub-pixel precision for cv2's fixed-point drawing
    opening = np.round(np.concatenate([face[list(INNER_UPPER), :2],
                                       face[list(INNER_LOWER), :2]]) * scale).astype(np.int32)
    cv2.fillPoly(canvas, [opening], (45, 12, 18), cv2.LINE_AA, shift=4)
    if gap > 0.015 * size:
        upper = face[list(INNER_UPPER), :2]
        teeth = np.concatenate([upper, upper[::-1] + [0, 0.3 * gap]])
        mask = np.zeros(canvas.shape[:2], np.uint8)
        cv2.fillPoly(mask, [opening], 1, cv2.LINE_8, shift=4)
        layer = canvas.copy()
        cv2.fillPoly(layer, [np.round(teeth * scale).astype(np.int32)], (225, 222, 210),
                     cv2.LINE_AA, shift=4)
        canvas[mask > 0] = layer[mask > 0]


# ---------------------------------------------------------------------- drawn people


@dataclass(frozen=True)
class DrawnStyle:
    background: tuple[np.ndarray, np.ndarray]
    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    lips: np.ndarray
    iris: np.ndarray
    long_hair: bool


def _colour(low, high, rng) -> np.ndarray:
    return rng.integers(low, high, 3).astype(np.float64)


def drawn_person(rng: np.random.Generator, size: int) -> tuple[DrawnStyle, Keypoints]:
    """A random person's style and still keypoints (face mesh from a template, hands at
    chest height, both arms visible)."""
    skin_tones = np.array([[255, 224, 196], [234, 192, 160], [198, 140, 100], [141, 85, 54],
                           [95, 60, 40]], np.float64)
    tone = skin_tones[rng.integers(len(skin_tones))] * rng.uniform(0.92, 1.05)
    style = DrawnStyle((_colour(30, 230, rng), _colour(30, 230, rng)), np.clip(tone, 0, 255),
                       _colour(10, 120, rng), _colour(20, 240, rng),
                       np.clip(tone * [0.8, 0.5, 0.5], 0, 255), _colour(20, 110, rng),
                       bool(rng.random() < 0.5))
    face_height = size / rng.uniform(3.0, 3.6)
    centre = np.array([size * rng.uniform(0.45, 0.55), size * 0.38])
    template = np.load(FACE_TEMPLATE)
    squash = np.array([rng.uniform(0.9, 1.1), 1.0])
    keypoints = Keypoints.empty(1, size, size, 25.0)
    face = keypoints.face.copy()
    face[0, :, :2] = centre + template * squash * face_height
    face[0, :, 2] = 1.0
    body = keypoints.body.copy()
    chin = face[0, fm.CHIN, :2]
    half = face_height * rng.uniform(0.95, 1.2)
    shoulder_y = chin[1] + 0.45 * face_height
    joints = {NOSE: face[0, 4, :2],
              LEFT_SHOULDER: [centre[0] + half, shoulder_y],
              RIGHT_SHOULDER: [centre[0] - half, shoulder_y],
              LEFT_ELBOW: [centre[0] + half * 1.25, shoulder_y + 0.9 * face_height],
              RIGHT_ELBOW: [centre[0] - half * 1.25, shoulder_y + 0.9 * face_height],
              LEFT_WRIST: [centre[0] + half * 0.55, shoulder_y + 1.2 * face_height],
              RIGHT_WRIST: [centre[0] - half * 0.55, shoulder_y + 1.2 * face_height],
              LEFT_HIP: [centre[0] + half * 0.8, size * 1.3],
              RIGHT_HIP: [centre[0] - half * 0.8, size * 1.3]}
    for index, xy in joints.items():
        body[0, index] = [xy[0], xy[1], 1.0]
    for index in range(1, 11):  # eyes, ears and mouth of the body model from the mesh
        body[0, index] = [*face[0, [33, 133, 159, 362, 263, 386, 234, 454, 61, 291][index - 1],
                                :2], 1.0]
    for wrist, finger_tips in ((LEFT_WRIST, (17, 19, 21)), (RIGHT_WRIST, (18, 20, 22))):
        for tip, angle in zip(finger_tips, (-0.5, 0.0, 0.6), strict=True):
            body[0, tip] = [*(body[0, wrist, :2] + 0.25 * face_height *
                              np.array([np.sin(angle), -np.cos(angle)])), 1.0]
    hands = {part: _hand(body[0, wrist, :2], 0.45 * face_height, direction, rng)[None]
             for part, wrist, direction in (("left_hand", LEFT_WRIST, -1),
                                            ("right_hand", RIGHT_WRIST, 1))}
    return style, replace(keypoints, body=body, face=face, **hands, source="drawn")


def _hand(wrist: np.ndarray, length: float, direction: int, rng) -> np.ndarray:
    """21 hand points (mediapipe order: wrist, then 4 per finger from the thumb), fingers up."""
    points = [wrist]
    for finger, angle in enumerate(np.linspace(-0.9, 0.5, 5) * direction):
        reach = length * (0.6 if finger == 0 else (1.0 - 0.08 * abs(finger - 2)))
        bend = rng.uniform(-0.15, 0.15)
        for joint in range(1, 5):
            a = angle + bend * joint
            points.append(wrist + reach * joint / 4 * np.array([np.sin(a), -np.cos(a)]))
    array = np.ones((21, 3), np.float32)
    array[:, :2] = np.stack(points)
    return array


def _chain(edges) -> list[int]:
    """Order a closed loop given as an edge set."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, previous = [start], None
    while True:
        options = [n for n in neighbours[loop[-1]] if n != previous]
        previous, step = loop[-1], options[0]
        if step == start:
            return loop
        loop.append(step)


def _poly(canvas, points, colour, closed=True, thickness=None) -> None:
    scaled = np.round(np.asarray(points)[:, :2] * 16).astype(np.int32)
    colour = tuple(float(c) for c in colour)
    if thickness is None:
        cv2.fillPoly(canvas, [scaled], colour, cv2.LINE_AA, shift=4)
    else:
        cv2.polylines(canvas, [scaled], closed, colour, thickness, cv2.LINE_AA, shift=4)


def draw_person(style: DrawnStyle, keypoints: Keypoints, frame: int, rest_gap: float
                ) -> np.ndarray:
    from posecast.pose.draw import mesh_topology

    size = keypoints.height
    top, bottom = style.background
    ramp = np.linspace(0, 1, size)[:, None, None]
    canvas = np.ascontiguousarray(np.broadcast_to(top * (1 - ramp) + bottom * ramp,
                                                  (size, size, 3)).astype(np.uint8))
    body, face = keypoints.body[frame], keypoints.face[frame]
    oval = face[_chain(mesh_topology()["face_oval"])]
    face_height = np.linalg.norm(face[fm.CHIN, :2] - face[fm.FOREHEAD, :2])
    head_centre = oval[:, :2].mean(0)
    if style.long_hair:
        cv2.ellipse(canvas, tuple(np.round(head_centre + [0, 0.15 * face_height]).astype(int)),
                    (int(0.62 * face_height), int(0.75 * face_height)), 0, 0, 360,
                    tuple(float(c) for c in style.hair), -1, cv2.LINE_AA)
    neck = np.array([face[fm.CHIN, :2] + [-0.18 * face_height, -0.1 * face_height],
                     face[fm.CHIN, :2] + [0.18 * face_height, -0.1 * face_height],
                     face[fm.CHIN, :2] + [0.2 * face_height, 0.5 * face_height],
                     face[fm.CHIN, :2] + [-0.2 * face_height, 0.5 * face_height]])
    _poly(canvas, neck, style.skin * 0.9)
    torso = body[[LEFT_SHOULDER, RIGHT_SHOULDER, RIGHT_HIP, LEFT_HIP]]
    _poly(canvas, torso, style.shirt)
    sleeve = max(2, int(0.28 * face_height))
    for shoulder, elbow, wrist, hand in ((LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, "left_hand"),
                                         (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST,
                                          "right_hand")):
        _poly(canvas, body[[shoulder, elbow]], style.shirt * 0.9, False, sleeve)
        _poly(canvas, body[[elbow, wrist]], style.skin * 0.95, False, max(2, sleeve * 2 // 3))
        points = getattr(keypoints, hand)[frame]
        cv2.circle(canvas, tuple(np.round(points[0, :2]).astype(int)),
                   max(2, int(0.12 * face_height)), tuple(float(c) for c in style.skin), -1,
                   cv2.LINE_AA)
        for finger in range(5):
            chain = points[[0, *range(1 + 4 * finger, 5 + 4 * finger)]]
            _poly(canvas, chain, style.skin, False, max(1, int(0.06 * face_height)))
    _poly(canvas, oval, style.skin)
    hairline = oval[oval[:, 1] < head_centre[1] - 0.2 * face_height]
    if len(hairline) > 2:
        _poly(canvas, hairline[np.argsort(hairline[:, 0])], style.hair, False,
              max(2, int(0.12 * face_height)))
    for lids, iris in ((fm.RIGHT_EYE_LIDS, fm.RIGHT_IRIS), (fm.LEFT_EYE_LIDS, fm.LEFT_IRIS)):
        upper, lower = zip(*lids, strict=True)
        eye = np.concatenate([face[list(upper)], face[list(lower)][::-1]])
        _poly(canvas, eye, (240, 240, 235))
        gap = np.linalg.norm(face[upper[3], :2] - face[lower[3], :2])
        if gap > 0.01 * face_height:
            radius = max(1, int(0.35 * gap + 0.02 * face_height))
            mask = np.zeros(canvas.shape[:2], np.uint8)
            _poly(mask, eye, (1, 1, 1))
            layer = canvas.copy()
            cv2.circle(layer, tuple(np.round(face[iris[0], :2]).astype(int)), radius,
                       tuple(float(c) for c in style.iris), -1, cv2.LINE_AA)
            canvas[mask > 0] = layer[mask > 0]
        _poly(canvas, face[list(upper)], style.hair * 0.6, False, max(1, int(0.02 * face_height)))
    for a, b in mesh_topology()["eyebrows"]:
        _poly(canvas, face[[a, b]], style.hair, False, max(1, int(0.03 * face_height)))
    _poly(canvas, face[[168, 6, 197, 195, 5, 4]], style.skin * 0.8, False, 1)
    _poly(canvas, face[list(fm.LIP_OUTLINE)], style.lips)
    draw_mouth(canvas, face, size, rest_gap)
    return canvas


# ------------------------------------------------------------------------ the dataset


def make_cospeech_dataset(out: str | os.PathLike, clips: int = 48, seed: int = 0,
                          size: int = 256, fps: float = 25.0, drawn_people: int = 8,
                          held_out_people: int = 2,
                          on_clip: Callable[[ClipRecord], None] | None = None
                          ) -> list[ClipRecord]:
    """Write `clips` clips into out/train and out/heldout (MP4 with speech + exact keypoint
    caches) and out/manifest.json. Returns the records."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    people = [("photo", name.split(".")[0], photo_person(PORTRAIT_FOLDER / name, size))
              for name in PORTRAITS]
    people += [("drawn", f"drawn{index:02d}", drawn_person(rng, size))
               for index in range(drawn_people)]
    held_out_names = {name for _, name, _ in people[len(people) - held_out_people:]}
    espeak = espeak_program()
    records = []
    for index in range(clips):
        kind, name, (look, still) = people[index % len(people)]
        sentence = int(rng.integers(len(SENTENCES)))
        held_out = name in held_out_names or sentence >= len(SENTENCES) - HELD_OUT_SENTENCES
        split = "heldout" if held_out else "train"
        clip_rng = np.random.default_rng([seed, index])
        speech = speak(SENTENCES[sentence], clip_rng, espeak) if espeak else \
            buzz(SENTENCES[sentence], clip_rng)
        style = MotionStyle(mouth=clip_rng.uniform(0.8, 1.2), head=clip_rng.uniform(0.5, 1.5),
                            blinks=clip_rng.uniform(0.7, 1.3),
                            gestures=clip_rng.uniform(0.5, 1.5))
        frames = frame_count(speech.duration, fps)
        poses = ProceduralMotion(style).generate(speech, still, fps, frames,
                                                 int(clip_rng.integers(1 << 31)))
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        file = f"{index:04d}_{name}_s{sentence:02d}.mp4"
        cache: dict = {}
        with write_mp4(folder / file, fps=fps, audio=speech) as mp4:
            for t in range(frames):
                mp4.write(warp_photo(look, still, poses, t, cache) if kind == "photo" else
                          draw_person(look, poses, t, lip_gap(still.face[0])))
        write_cache_entry(poses, folder, folder / file, folder / KEYPOINT_CACHE)
        record = ClipRecord(f"{split}/{file}", name, sentence, split,
                            "espeak-ng" if espeak else "buzz", round(speech.duration, 3))
        records.append(record)
        if on_clip is not None:
            on_clip(record)
    manifest = {"seed": seed, "size": size, "fps": fps, "clips": [r.__dict__ for r in records],
                "held_out_people": sorted(held_out_names),
                "held_out_sentences": list(range(len(SENTENCES) - HELD_OUT_SENTENCES,
                                                 len(SENTENCES)))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return records
