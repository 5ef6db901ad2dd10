"""`posecast make-dataset`: clips with exact keypoints, speech of the right length, a
held-out split, the same output for a seed."""

from __future__ import annotations

import json
import os

import numpy as np

from posecast.data.cospeech import HELD_OUT_SENTENCES, SENTENCES, make_cospeech_dataset
from posecast.media import iter_video_frames, probe_video
from posecast.motion import frame_count
from posecast.ownership import mark
from posecast.pose.face_mesh import mouth_opening
from posecast.pose.keypoints import Keypoints


def test_clips_match_their_keypoints_and_speech(cospeech_dataset):
    manifest = json.loads((cospeech_dataset / "manifest.json").read_text())
    assert len(manifest["clips"]) == 8
    people = {clip["person"] for clip in manifest["clips"]}
    assert {"astronaut", "grace_hopper"} <= people and len(people) == 6
    for clip in manifest["clips"]:
        path = cospeech_dataset / clip["file"]
        info = probe_video(path)
        keypoints = Keypoints.load(path.parent / ".posecast-keypoints" / (path.name + ".npz"))
        frames = sum(1 for _ in iter_video_frames(path, info))
        assert abs(frames - frame_count(clip["seconds"], 25.0)) <= 1
        assert len(keypoints) == frame_count(clip["seconds"], 25.0)
        assert info.has_audio and (info.width, info.height) == (64, 64)
        openings = [mouth_opening(face) for face in keypoints.face]
        assert max(openings) > min(openings) + 0.1  # the mouth moves with the speech
        held_out = clip["person"] in manifest["held_out_people"] or \
            clip["sentence"] >= len(SENTENCES) - HELD_OUT_SENTENCES
        assert clip["split"] == ("heldout" if held_out else "train")
        assert clip["file"].startswith(clip["split"] + "/")


def test_drawn_people_show_hands(cospeech_dataset):
    drawn = sorted((cospeech_dataset / "train" / ".posecast-keypoints").glob("*drawn*.npz"))
    assert drawn
    keypoints = Keypoints.load(drawn[0])
    assert (keypoints.left_hand[..., 2] > 0).all() and (keypoints.right_hand[..., 2] > 0).all()


def test_a_seed_gives_the_same_clips(tmp_path):
    first = make_cospeech_dataset(tmp_path / "a", clips=3, seed=5, size=64, drawn_people=2,
                                  held_out_people=0)
    second = make_cospeech_dataset(tmp_path / "b", clips=3, seed=5, size=64, drawn_people=2,
                                   held_out_people=0)
    assert first == second
    for record in first:
        a, b = (np.stack(list(iter_video_frames(folder / record.file,
                                                probe_video(folder / record.file))))
                for folder in (tmp_path / "a", tmp_path / "b"))
        assert np.array_equal(a, b)


def test_the_cli_refuses_a_used_folder_and_leaves_nothing_half_made(run_cli, tmp_path):
    out = tmp_path / "clips"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = run_cli("make-dataset", out, "--clips", "1", "--size", "64")
    assert result.code == 2 and "--overwrite" in result.stderr
    assert (out / "mine.txt").exists()
    args = ["make-dataset", out, "--clips", "2", "--size", "64", "--drawn-people", "1",
            "--held-out-people", "0", "--overwrite"]
    result = run_cli(*args)  # --overwrite deletes only a folder make-dataset made
    assert result.code == 2 and "not made by posecast" in result.stderr
    assert (out / "mine.txt").exists()
    (out / "manifest.json").write_text("{}")  # a name proves nothing (browser extensions)
    result = run_cli(*args)
    assert result.code == 2 and f"rm -r {out}" in result.stderr
    assert (out / "mine.txt").exists()
    mark(out, "dataset")  # as an earlier make-dataset leaves it
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert not (out / "mine.txt").exists() and (out / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["clips"]  # no temporary folder left
    umask = os.umask(0)
    os.umask(umask)  # built in a temporary folder (0700), it ends up like any new folder
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_speech_comes_from_the_espeak_that_posecast_espeak_names(tmp_path, monkeypatch):
    """POSECAST_ESPEAK picks the program that speaks (the suite sets "none": the buzz, the
    same on every machine). A stand-in espeak-ng that writes 1 s of tone and logs what it was
    asked: its speech is in the clips, padded by the 0.25 s breaths, and it was given the
    clip's sentence and a WAV path."""
    import sys

    log = tmp_path / "asked.txt"
    stand_in = tmp_path / "espeak-ng"
    stand_in.write_text(f"""#!{sys.executable}
import sys, numpy as np, soundfile
args = sys.argv[1:]
open({str(log)!r}, "a").write(args[-1] + "\\n")
t = np.arange(22050) / 22050
soundfile.write(args[args.index("-w") + 1], 0.3 * np.sin(2 * np.pi * 220 * t), 22050)
""")
    stand_in.chmod(0o755)
    monkeypatch.setenv("POSECAST_ESPEAK", str(stand_in))
    records = make_cospeech_dataset(tmp_path / "clips", clips=2, seed=3, size=64,
                                    drawn_people=1, held_out_people=0)
    assert [record.speech for record in records] == ["espeak-ng", "espeak-ng"]
    assert all(abs(record.seconds - 1.5) < 0.01 for record in records)
    assert log.read_text().splitlines() == [SENTENCES[record.sentence] for record in records]
    monkeypatch.setenv("POSECAST_ESPEAK", "none")
    assert make_cospeech_dataset(tmp_path / "buzz", clips=1, seed=3, size=64, drawn_people=1,
                                 held_out_people=0)[0].speech == "buzz"
