"""`posecast eval`: a clip scored against itself is perfect, a damaged one is not, the
lip-sync score finds the speech in a real-photo clip, and the share of frames with a face
counts the frames where mediapipe finds one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import cli_json

from posecast.evaluate import (
    LAGS,
    ClipScores,
    curve_peak,
    lip_sync_curve,
    mean_curve,
    mouth_agreement,
    mouth_darkness,
)
from posecast.media import iter_video_frames, load_audio, probe_video, write_mp4
from posecast.pose.face_mesh import LIP_OUTLINE


def test_lip_sync_finds_the_lag():
    rng = np.random.default_rng(0)
    loudness = np.convolve(rng.random(200), np.ones(5) / 5, mode="same")
    r, lag = curve_peak(lip_sync_curve(np.roll(loudness, 2), loudness))
    assert lag == 2 and r > 0.99
    assert curve_peak(lip_sync_curve(np.zeros(50), loudness[:50])) == (None, None)


def test_the_mean_lag_curve_weights_clips_by_frames_and_skips_gaps():
    def clip(frames, curve):
        return ClipScores("c", frames, *[0.0] * 4, None, None, None, None, curve, None, None)

    peaked_at = {lag: [float(other == lag) for other in LAGS] for lag in (-5, 1)}
    long_clip, short_clip = clip(300, peaked_at[1]), clip(100, peaked_at[-5])
    gap = clip(100, [None] * len(LAGS))
    gap.lip_sync_curve[LAGS.index(0)] = 1.0  # defined only at lag 0
    curve = mean_curve([long_clip, short_clip, gap, clip(50, None)])
    assert curve[LAGS.index(1)] == 0.75 and curve[LAGS.index(-5)] == 0.25
    assert curve[LAGS.index(0)] == 100 / 500
    assert mean_curve([clip(50, None)]) is None


def test_mouth_darkness_reads_the_lip_box_and_compares_series():
    frame = np.full((32, 32, 3), 200, np.uint8)
    frame[10:14, 12:20] = 0  # an open mouth
    face = np.zeros((478, 3), np.float32)
    assert mouth_darkness(frame, face) is None  # no lips found
    face[list(LIP_OUTLINE)] = (16, 12, 1)
    face[LIP_OUTLINE[0]], face[LIP_OUTLINE[10]] = (12.5, 10, 1), (19, 13, 1)
    assert mouth_darkness(frame, face) == 255.0  # the box: x 12-19, y 10-13
    reference = [10.0, 30.0, None, 20.0, 50.0, 40.0]
    half = [None if x is None else 0.5 * x + 7 for x in reference]
    r, amplitude = mouth_agreement(half, reference)
    assert r == pytest.approx(1.0) and amplitude == pytest.approx(0.5)
    r, _ = mouth_agreement(half[::-1], reference)
    assert r < 0.5
    assert mouth_agreement([5.0] * 6, reference) == (None, None)  # a still mouth


def test_scores_of_identical_and_damaged_clips(run_cli, tmp_path, cospeech_dataset):
    references = cospeech_dataset / "train"  # any folder of real clips will do
    photo = sorted(p for p in references.glob("*.mp4") if "drawn" not in p.name)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    shutil.copy(photo[0], outputs / photo[0].name)
    damaged = sorted(p for p in references.glob("*.mp4") if "drawn" in p.name)[0]
    info = probe_video(damaged)
    with write_mp4(outputs / damaged.name, fps=info.fps, audio=load_audio(damaged)) as mp4:
        for frame in iter_video_frames(damaged, info):
            mp4.write(np.clip(frame.astype(int) + 40, 0, 255).astype(np.uint8))
    # another photo clip whose face is blanked out from 40 % of the way on, and a third with
    # no face at all (flat grey frames)
    kept_share = {}
    for path, kept in ((photo[1], 0.4), (photo[2], 0.0)):
        info = probe_video(path)
        frames = list(iter_video_frames(path, info))
        kept_share[path.stem] = sum(t < kept * len(frames) for t in range(len(frames))) / len(
            frames)
        with write_mp4(outputs / path.name, fps=info.fps, audio=load_audio(path)) as mp4:
            for t, frame in enumerate(frames):
                mp4.write(frame if t < kept * len(frames) else np.full_like(frame, 128))
    (outputs / "timings.json").write_text(json.dumps({photo[0].stem: 12.5}))
    result = run_cli("eval", outputs, "--references", references, "-o",
                     tmp_path / "scores.json", "--json")
    assert result.code == 0, result.stderr
    summary = cli_json(result.stdout, "eval")  # --json: the report in the common shape
    report = json.loads((tmp_path / "scores.json").read_text())
    assert {key: summary[key] for key in report} == report
    assert summary["outputs"] == [str(tmp_path / "scores.json")]
    scores = {clip["name"]: clip for clip in report["clips"]}
    same, worse = scores[photo[0].stem], scores[damaged.stem]
    assert same["psnr"] > 60 and same["face_psnr"] > 60 and same["ssim"] > 0.999
    assert worse["psnr"] < 25 and worse["ssim"] < same["ssim"]
    assert same["fps"] == 12.5 and worse["fps"] is None
    assert same["lip_sync_r"] is not None and same["lip_sync_r"] > 0.3
    assert abs(same["lip_sync_lag"]) <= 2
    assert same["mouth_r"] > 0.999 and same["mouth_amplitude"] == pytest.approx(1, abs=1e-3)
    half, blank = scores[photo[1].stem], scores[photo[2].stem]
    assert same["face_found"] > 0.8  # lip sync is scored above 80 %
    # the face can only be found in the frames that keep it (15 of 37 is 0.405, not 0.4), and
    # the detector finds it in most of those (above 80 % in the untouched clip)
    kept = kept_share[photo[1].stem]
    assert 0.5 * kept < half["face_found"] <= kept + 1e-9 and half["lip_sync_r"] is None
    assert blank["face_found"] == 0 and blank["lip_sync_r"] is None
    assert blank["seam_ratio"] == pytest.approx(1, abs=0.01)  # flat: no grid
    for field in ("face_found", "seam_ratio"):  # the mean row: the mean over clips
        assert report["mean"][field] == pytest.approx(np.mean([clip[field] for clip
                                                               in report["clips"]]))
    assert "mean" in result.stderr  # the table
    # one video without references (as `posecast render` writes it): what needs no reference
    # is scored as above, the rest is left empty
    alone = run_cli("eval", outputs / photo[0].name, "--json")
    assert alone.code == 0, alone.stderr
    clip = cli_json(alone.stdout, "eval")["clips"][0]
    for field in ("lip_sync_r", "lip_sync_lag", "lip_sync_curve", "face_found", "seam_ratio",
                  "fps"):  # fps: the folder's timings.json still names the clip
        assert clip[field] == pytest.approx(same[field]), field
    assert clip["frames"] == same["frames"]
    assert all(clip[field] is None for field in ("psnr", "face_psnr", "hand_psnr", "mouth_r",
                                                 "hkc"))


def test_eval_needs_matching_references(run_cli, tmp_path, cospeech_dataset):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "nothing_like_it.mp4").write_bytes(b"")
    result = run_cli("eval", outputs, "--references", cospeech_dataset / "heldout")
    assert result.code == 2 and "no reference for nothing_like_it.mp4" in result.stderr
