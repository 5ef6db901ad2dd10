from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posecast.errors import DetectionError, InputError
from posecast.pose import Keypoints
from posecast.pose.draw import COLOURS, render_pose_maps
from posecast.pose.extract import extract_folder, extract_image, extract_video
from posecast.pose.smoothing import smooth_keypoints


def test_example_portrait_has_full_face_and_body(portrait_keypoints):
    kp = portrait_keypoints
    assert len(kp) == 1 and (kp.width, kp.height) == (512, 512)
    assert kp.face.shape == (1, 478, 3) and kp.body.shape == (1, 33, 3)
    assert (kp.face[0, :, 2] == 1.0).all()
    assert 0.9 < kp.body[0, 0, 2] <= 1.0  # the nose is clearly visible
    # the face lies in the upper middle of the astronaut photo
    centre = kp.face[0, :, :2].mean(0)
    assert 150 < centre[0] < 300 and 60 < centre[1] < 180


def test_save_load_round_trip(tmp_path, portrait_keypoints):
    path = tmp_path / "kp.npz"
    portrait_keypoints.save(path)
    loaded = Keypoints.load(path)
    for part in ("body", "face", "left_hand", "right_hand"):
        np.testing.assert_array_equal(getattr(loaded, part), getattr(portrait_keypoints, part))
    assert (loaded.fps, loaded.width, loaded.height, loaded.source) == (
        portrait_keypoints.fps, 512, 512, portrait_keypoints.source)
    with np.load(path, allow_pickle=False) as data:  # the DESIGN.md layout, no pickles
        assert set(data.files) == {"body", "face", "left_hand", "right_hand", "fps", "width",
                                   "height", "source"}


def test_schema_validation():
    good = Keypoints.empty(2, 64, 48)
    with pytest.raises(ValueError, match="face"):
        Keypoints(good.body, good.face[:, :468], good.left_hand, good.right_hand, 25, 64, 48)
    with pytest.raises(ValueError, match="frames"):
        Keypoints(good.body[:1], good.face, good.left_hand, good.right_hand, 25, 64, 48)
    bad = good.body.copy()
    bad[0, 0, 2] = 1.5
    with pytest.raises(ValueError, match="confidences"):
        Keypoints(bad, good.face, good.left_hand, good.right_hand, 25, 64, 48)
    with pytest.raises(ValueError, match="positive size"):
        Keypoints(good.body, good.face, good.left_hand, good.right_hand, 25, 0, 48)


def test_load_refuses_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(InputError, match="missing body"):
        Keypoints.load(path)


def test_blank_image_has_no_person(tmp_path):
    blank = np.full((240, 320, 3), 180, np.uint8)
    with pytest.raises(DetectionError, match="no face and no person"):
        extract_image(blank, source="blank.png")
    kp = extract_image(blank, allow_missing=True, source="blank.png")
    assert not kp.face.any() and not kp.body.any()


def test_video_extraction_tracks_every_frame(talking_video):
    progress = []
    kp = extract_video(talking_video, on_frame=lambda done, total: progress.append(done))
    assert len(kp) == 12 and progress[-1] == 12
    assert kp.fps == 25 and (kp.width, kp.height) == (256, 256)
    assert kp.detection_rates()["face"] == 1.0
    # the clip slides 2 px right per frame; the tracked face follows
    shift = kp.face[-1, :, 0].mean() - kp.face[0, :, 0].mean()
    assert 15 < shift < 30


def test_one_euro_smoothing_removes_jitter_but_keeps_motion():
    rng = np.random.default_rng(0)
    kp = Keypoints.empty(100, 500, 500, fps=25)
    body = kp.body.copy()
    body[..., 2] = 1.0
    body[:, :, 0] = 250 + rng.normal(0, 1.0, (100, 33))  # still, with detector jitter
    body[60:, :, 1] = (100 + 8 * np.arange(40))[:, None]  # then a gesture at 8 px per frame
    smoothed = smooth_keypoints(Keypoints(body, kp.face, kp.left_hand, kp.right_hand, 25, 500,
                                          500))
    jitter_before = np.diff(body[10:60, :, 0], axis=0).std()
    jitter_after = np.diff(smoothed.body[10:60, :, 0], axis=0).std()
    assert jitter_after < 0.5 * jitter_before
    lag = np.abs(smoothed.body[70:, :, 1] - body[70:, :, 1]).mean()
    assert lag < 8.0  # the motion is followed within one frame


def test_folder_extraction_caches_and_skips(tmp_path, talking_video):
    import shutil

    folder = tmp_path / "clips"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(talking_video, folder / "a.mp4")
    shutil.copy(talking_video, folder / "nested" / "b.mp4")
    (folder / "broken.mp4").write_text("not a video")
    cache = tmp_path / "cache"
    first = {r.clip.name: r.status for r in extract_folder(folder, cache)}
    assert first == {"a.mp4": "done", "b.mp4": "done", "broken.mp4": "failed"}
    assert (cache / "nested" / "b.mp4.npz").exists()
    assert len(Keypoints.load(cache / "a.mp4.npz")) == 12
    second = {r.clip.name: r.status for r in extract_folder(folder, cache)}
    assert second == {"a.mp4": "skipped", "b.mp4": "skipped", "broken.mp4": "failed"}
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == [
        ".posecast.json", "a.mp4.npz", "b.mp4.npz"]
    # a folder copied elsewhere keeps its cache (the key is the content, not a time)
    shutil.copytree(folder, tmp_path / "copy")
    shutil.copytree(cache, tmp_path / "copy_cache")
    moved = {r.clip.name: r.status for r in extract_folder(tmp_path / "copy",
                                                           tmp_path / "copy_cache")}
    assert moved["a.mp4"] == moved["b.mp4"] == "skipped"


def _short_clip(source: Path, path: Path, frames: int) -> None:
    """The first `frames` frames of `source`, flipped left to right, written to `path`."""
    from posecast.media import iter_video_frames, probe_video, write_mp4

    info = probe_video(source)
    with write_mp4(path, fps=info.fps) as mp4:
        for t, frame in enumerate(iter_video_frames(source, info)):
            if t < frames:
                mp4.write(frame[:, ::-1])


def test_clips_with_one_stem_and_replaced_clips_get_their_own_keypoints(tmp_path,
                                                                       talking_video):
    """a.mp4 and a.mov used to share a.npz (the second was called "already cached"), and a clip
    replaced by a new file kept its old keypoints."""
    import shutil

    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(talking_video, folder / "a.mp4")
    _short_clip(talking_video, folder / "a.mov", 5)
    cache = tmp_path / "cache"
    first = {r.clip.name: r.status for r in extract_folder(folder, cache)}
    assert first == {"a.mp4": "done", "a.mov": "done"}
    assert len(Keypoints.load(cache / "a.mp4.npz")) == 12
    assert len(Keypoints.load(cache / "a.mov.npz")) == 5
    # replace a.mp4 by a 7-frame clip: extracted again, the untouched a.mov is not
    _short_clip(talking_video, folder / "a.mp4", 7)
    second = {r.clip.name: r.status for r in extract_folder(folder, cache)}
    assert second == {"a.mp4": "done", "a.mov": "skipped"}
    assert len(Keypoints.load(cache / "a.mp4.npz")) == 7


def test_pose_maps_draw_each_part_in_its_colour(portrait_keypoints):
    maps = render_pose_maps(portrait_keypoints, 128, 128)
    assert maps.shape == (1, 128, 128, 3) and maps.dtype == np.uint8
    pixels = {tuple(p) for p in maps[0].reshape(-1, 3)}
    for part in ("lips", "face_oval", "eyes", "torso"):
        assert COLOURS[part] in pixels, part
    # the lips are drawn where the mouth is: inside the face's bounding box
    lips = np.argwhere((maps[0] == COLOURS["lips"]).all(-1))
    face = portrait_keypoints.face[0, :, :2] / 4
    assert (lips[:, 1].min() >= face[:, 0].min()) and (lips[:, 1].max() <= face[:, 0].max())


def test_damaged_keypoint_files_give_one_line_errors(tmp_path, portrait_keypoints):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.npz"
    portrait_keypoints.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    no_frames = tmp_path / "none.npz"
    portrait_keypoints[0:0].save(no_frames)
    for path, words in ((empty, "not a readable"), (truncated, "not a readable"),
                        (no_frames, "no frames")):
        with pytest.raises(InputError, match=words) as caught:
            Keypoints.load(path)
        assert "\n" not in str(caught.value)


def test_the_bundled_drawing_topology_is_mediapipes():
    """assets/mesh_topology.json (read by pose.draw so drawing needs no mediapipe) holds
    exactly mediapipe's face-mesh and hand connection tables."""
    from posecast.pose.draw import mesh_topology
    from posecast.pose.mediapipe_holistic import import_mediapipe

    solutions = import_mediapipe().solutions
    mesh, hand = solutions.face_mesh_connections, set(solutions.hands_connections.HAND_CONNECTIONS)
    expected = {
        "face_oval": mesh.FACEMESH_FACE_OVAL,
        "eyes": mesh.FACEMESH_LEFT_EYE | mesh.FACEMESH_RIGHT_EYE | mesh.FACEMESH_IRISES,
        "eyebrows": mesh.FACEMESH_LEFT_EYEBROW | mesh.FACEMESH_RIGHT_EYEBROW,
        "nose": mesh.FACEMESH_NOSE, "lips": mesh.FACEMESH_LIPS,
        "left_hand": hand, "right_hand": hand,
    }
    assert {part: set(edges) for part, edges in mesh_topology().items()} == \
        {part: set(edges) for part, edges in expected.items()}


def test_the_examples_portrait_keypoints_are_a_fresh_extraction(portrait_keypoints):
    """examples/astronaut_keypoints.npz (what `bench render` uses instead of mediapipe) is what
    extracting astronaut.png gives now."""
    from pathlib import Path

    saved = Keypoints.load(Path(__file__).parents[1] / "examples" / "astronaut_keypoints.npz")
    for part in ("face", "body", "left_hand", "right_hand"):
        np.testing.assert_allclose(getattr(saved, part), getattr(portrait_keypoints, part),
                                   atol=1e-3)


def test_mediapipe_is_imported_without_matplotlib_until_something_uses_it():
    """A fresh interpreter: import_mediapipe leaves matplotlib unimported (half of mediapipe's
    import time), and mediapipe's plotting module still reaches the real pyplot on use."""
    code = ("import sys\n"
            "from posecast.pose.mediapipe_holistic import import_mediapipe\n"
            "import_mediapipe()\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
            "from mediapipe.python.solutions import drawing_utils\n"
            "assert drawing_utils.plt.figure.__module__ == 'matplotlib.pyplot'\n"
            "assert type(sys.modules['matplotlib.pyplot']).__name__ == 'module'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("bits", [8, 16])
def test_a_black_and_white_portrait_is_found_on_a_second_pass(run_cli, tmp_path, bits):
    """Issue 32: Grace Hopper's photo in gray (8- or 16-bit) gave "no face found" although its
    colour original is found (mediapipe's body detector, which leads the face search, misses
    the tight gray crop). A second pass in a border finds it, says so, and its points land
    where the colour photo's do: the border is taken off again."""
    from PIL import Image

    from posecast.media import load_image

    colour = load_image(Path(__file__).parent.parent / "examples" / "grace_hopper.jpg")
    gray = np.asarray(Image.fromarray(colour).convert("L"))
    path = tmp_path / "bw.png"
    Image.fromarray(gray if bits == 8 else gray.astype(np.uint16) * 257).save(path)
    result = run_cli("keypoints", path, "-o", tmp_path / "k.npz")
    assert result.code == 0 and "second pass" in result.stderr, result.stderr
    found, reference = Keypoints.load(tmp_path / "k.npz"), extract_image(colour)
    assert (found.width, found.height) == (colour.shape[1], colour.shape[0])
    face, reference_face = found.face[0], reference.face[0]
    assert face[:, 2].all() and reference_face[:, 2].all()
    # the face's centre and size as in colour, within 3 % of the picture's width
    width = colour.shape[1]
    assert np.abs(face[:, :2].mean(0) - reference_face[:, :2].mean(0)).max() < 0.03 * width
    assert abs(np.ptp(face[:, 0]) - np.ptp(reference_face[:, 0])) < 0.03 * width
