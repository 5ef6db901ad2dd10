"""`posecast render`: exact durations, streamed output, batch jobs and their shards."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli_json, syllables

from posecast.cli.render import parse_shard, read_jobs
from posecast.errors import UsageError
from posecast.media import AudioClip, iter_video_frames, probe_video
from posecast.media.ffmpeg import decode_audio


def _speech(path, seconds):
    AudioClip(syllables(seconds), 16_000).save_wav(path)
    return path


def _frames(path):
    return sum(1 for _ in iter_video_frames(path, probe_video(path)))


@pytest.mark.parametrize("seconds", [0.5, 7.0])
def test_the_video_lasts_as_long_as_the_audio(run_cli, tmp_path, portrait_path, tiny_student,
                                              seconds):
    audio, out = _speech(tmp_path / "speech.wav", seconds), tmp_path / "talk.mp4"
    result = run_cli("render", audio, portrait_path, "-o", out, "--model", tiny_student,
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    assert "real time" in result.stdout
    assert abs(_frames(out) - math.ceil(seconds * 25)) <= 1
    info = probe_video(out)
    assert info.has_audio and (info.width, info.height) == (32, 32)
    assert abs(len(decode_audio(out, 16_000)) / 16_000 - seconds) <= 1 / 25


@pytest.mark.slow
def test_a_65_second_render_has_every_frame(run_cli, tmp_path, portrait_path, tiny_student):
    audio, out = _speech(tmp_path / "long.wav", 65.0), tmp_path / "long.mp4"
    result = run_cli("render", audio, portrait_path, "-o", out, "--model", tiny_student,
                     "--device", "cpu", "--fps", "25")
    assert result.code == 0, result.stderr
    assert abs(_frames(out) - 65 * 25) <= 1
    assert abs(len(decode_audio(out, 16_000)) / 16_000 - 65.0) <= 1 / 25


def test_frames_follow_the_seed(run_cli, tmp_path, portrait_path, tiny_student):
    audio = _speech(tmp_path / "speech.wav", 0.4)
    videos = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / f"{name}.mp4"
        assert run_cli("render", audio, portrait_path, "-o", out, "--model", tiny_student,
                       "--seed", str(seed), "--device", "cpu").code == 0
        videos[name] = np.stack(list(iter_video_frames(out, probe_video(out))))
    assert np.array_equal(videos["a"], videos["b"])
    assert not np.array_equal(videos["a"], videos["c"])


def test_render_follows_a_poses_file_and_takes_a_size(run_cli, tmp_path, portrait_path,
                                                      tiny_student):
    audio, out = _speech(tmp_path / "speech.wav", 0.6), tmp_path / "posed.mp4"
    poses = tmp_path / "poses.npz"
    assert run_cli("motion", audio, portrait_path, "-o", poses).code == 0
    result = run_cli("render", audio, portrait_path, "-o", out, "--model", tiny_student,
                     "--poses", poses, "--size", "48x32", "--device", "cpu")
    assert result.code == 0, result.stderr
    info = probe_video(out)
    assert (info.width, info.height) == (48, 32) and abs(_frames(out) - 15) <= 1


def test_a_teacher_is_refused(run_cli, tmp_path, portrait_path, trained_tiny):
    audio, out = _speech(tmp_path / "speech.wav", 0.5), tmp_path / "talk.mp4"
    result = run_cli("render", audio, portrait_path, "-o", out, "--model", trained_tiny[0])
    assert result.code == 2 and "not a distilled student" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_portrait_without_a_face_says_how_to_fix_it(run_cli, tmp_path, tiny_student):
    from posecast.media import save_image

    blank = tmp_path / "wall.png"
    save_image(blank, np.full((256, 256, 3), 180, np.uint8))
    audio, out = _speech(tmp_path / "speech.wav", 0.5), tmp_path / "talk.mp4"
    result = run_cli("render", audio, blank, "-o", out, "--model", tiny_student)
    assert result.code == 1 and "no face found" in result.stderr
    assert "front-facing" in result.stderr and not out.exists()


def test_bad_requests_are_one_line_errors(run_cli, tmp_path, portrait_path, tiny_student):
    audio = _speech(tmp_path / "speech.wav", 0.5)
    cases = [
        (["render", audio], "AUDIO PORTRAIT [-o OUT.mp4]"),
        (["render", audio, portrait_path, "-o", tmp_path / "x.mp4", "--device", "cuda:3"],
         "CUDA is not available"),
        (["render", audio, portrait_path, "-o", tmp_path / "x.mp4", "--shard", "0/2"],
         "--shard needs --batch"),
        (["render", tmp_path / "none.wav", portrait_path, "-o", tmp_path / "x.mp4", "--model",
          tiny_student], "no such audio file"),
        (["render", audio, portrait_path, "-o", tmp_path / "x.mp4", "--model",
          tmp_path / "nothing"], "no such model folder"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.code in (1, 2) and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_long_audio_warns_then_renders(run_cli, tmp_path, portrait_path, tiny_student):
    audio, out = _speech(tmp_path / "speech.wav", 1.0), tmp_path / "talk.mp4"
    result = run_cli("render", audio, portrait_path, "-o", out, "--model", tiny_student,
                     "--warn-minutes", "0.01", "--device", "cpu")
    assert result.code == 0 and "warning:" in result.stderr and out.exists()


def test_a_failed_batch_job_does_not_stop_the_others(run_cli, tmp_path, portrait_path,
                                                     tiny_student):
    _speech(tmp_path / "a.wav", 0.4)
    _speech(tmp_path / "c.wav", 0.6)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,portrait,output,seed\n"
                    f"a.wav,{portrait_path},out/a.mp4,1\n"
                    f"missing.wav,{portrait_path},out/b.mp4,\n"
                    f"c.wav,{portrait_path},out/c.mp4,3\n")
    (tmp_path / "out").mkdir()
    result = run_cli("render", "--batch", jobs, "--model", tiny_student, "--json",
                     "--device", "cpu")
    assert result.code == 1
    summary = cli_json(result.stdout, "render")
    assert [job["status"] for job in summary["jobs"]] == ["ok", "failed", "ok"]
    assert summary["ok"] is False and summary["done"] == 2 and summary["failed"] == 1
    assert summary["outputs"] == [str(tmp_path / "out" / name) for name in ("a.mp4", "c.mp4")]
    # each rendered job says what makes it again: its model, revision, seed, size and steps
    first, _, third = summary["jobs"]
    assert (first["seed"], third["seed"]) == (1, 3) and first["model"] == str(tiny_student)
    assert first["revision"] is None and first["size"] == "32x32" and first["steps"] == 2
    assert "missing.wav" in summary["jobs"][1]["error"]
    assert (tmp_path / "out" / "a.mp4").exists() and (tmp_path / "out" / "c.mp4").exists()
    assert not (tmp_path / "out" / "b.mp4").exists()
    assert abs(_frames(tmp_path / "out" / "c.mp4") - 15) <= 1
    # a shard runs only its own jobs
    result = run_cli("render", "--batch", jobs, "--model", tiny_student, "--json", "--shard",
                     "1/2", "--overwrite", "--device", "cpu")
    assert result.code == 1  # job 2 (missing audio) is in shard 1 of 2
    assert [job["job"] for job in cli_json(result.stdout, "render")["jobs"]] == [2]


def test_a_render_reports_the_whole_process_as_well_as_the_job(tmp_path, portrait_path,
                                                               tiny_student):
    """Issue 35 (item 1): besides the job's own real-time factor, one render reports the whole
    process's (Python's start-up, imports and model loading included), from the OS's record
    of when the process started: at least the job's time, at most the wall time the caller
    measured around the whole command."""
    import subprocess
    import sys
    import time

    audio, out = _speech(tmp_path / "speech.wav", 0.4), tmp_path / "talk.mp4"
    # -X importtime lists every module imported: a render loads neither librosa nor numba,
    # whose import took 1.3 s, and 14 s on a machine's first run (compiling; item 1)
    command = [sys.executable, "-X", "importtime", "-m", "posecast", "render", audio,
               portrait_path, "-o", out, "--model", tiny_student, "--device", "cpu", "--json",
               "--overwrite"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "posecast.motion.features" in imported
    assert not {"librosa", "numba"} & imported
    job = cli_json(result.stdout, "render")  # one render: its figures at the top level
    assert job["elapsed"] <= job["process_seconds"] <= wall
    # the JSON rounds both to 3 decimals: the factor is their ratio to within that rounding
    assert job["process_realtime_factor"] == pytest.approx(job["seconds"] / job["process_seconds"],
                                                           abs=1.5e-3)
    # the first frame: after the job started (its own clock), before the process ended
    assert job["process_seconds"] - job["elapsed"] < job["process_first_frame_s"] \
        < job["process_seconds"]
    assert "whole process" in result.stderr and "after the command started" in result.stderr


def test_a_video_portrait_renders_from_its_first_frame(run_cli, tmp_path, talking_video,
                                                       tiny_student):
    """Issue 35 (item 7): a video given as the portrait was refused ("unsupported portrait
    type"); its first frame is the portrait now, the very frame ffmpeg decodes first."""
    import subprocess

    from posecast.media import load_portrait
    from posecast.media.ffmpeg import ffmpeg_executable

    raw = subprocess.run([ffmpeg_executable(), "-v", "error", "-i", str(talking_video),
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
                         capture_output=True, check=True).stdout
    first = load_portrait(talking_video)
    assert first.shape == (256, 256, 3)
    assert first.tobytes() == raw  # frame 0, not a later one (the clip slides sideways)
    audio, out = _speech(tmp_path / "speech.wav", 0.4), tmp_path / "talk.mp4"
    result = run_cli("render", audio, talking_video, "-o", out, "--model", tiny_student,
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    assert _frames(out) == 10  # 0.4 s at 25 fps
    poses = tmp_path / "poses.npz"  # and `motion`, through the same loader
    assert run_cli("motion", audio, talking_video, "-o", poses).code == 0 and poses.is_file()


def test_a_rerun_batch_skips_finished_jobs_and_does_what_is_left(run_cli, tmp_path,
                                                                  portrait_path, tiny_student):
    """Issue 35 (item 6): rerunning a batch (a stopped one, or a finished array task) failed
    every job whose output existed; now those are skipped and counted, the rest are rendered,
    and --overwrite redoes everything."""
    _speech(tmp_path / "a.wav", 0.4)
    _speech(tmp_path / "b.wav", 0.4)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"audio,portrait,output\na.wav,{portrait_path},a.mp4\n"
                    f"b.wav,{portrait_path},b.mp4\n")
    render = ["render", "--batch", jobs, "--model", tiny_student, "--json", "--device", "cpu"]
    assert run_cli(*render, "--shard", "0/2").code == 0  # job 1 only, as if stopped there
    finished = (tmp_path / "a.mp4").stat().st_mtime_ns
    again = run_cli(*render)
    assert again.code == 0, again.stderr
    summary = cli_json(again.stdout, "render")
    assert [job["status"] for job in summary["jobs"]] == ["skipped", "ok"]
    assert (summary["ok"], summary["done"], summary["failed"], summary["skipped"]) == \
        (True, 1, 0, 1)
    assert "skipped job 1" in again.stderr
    assert (tmp_path / "a.mp4").stat().st_mtime_ns == finished and (tmp_path / "b.mp4").is_file()
    redo = cli_json(run_cli(*render, "--overwrite").stdout, "render")
    assert [job["status"] for job in redo["jobs"]] == ["ok", "ok"] and redo["skipped"] == 0
    assert (tmp_path / "a.mp4").stat().st_mtime_ns != finished


def test_a_batch_csv_saved_by_excel_finds_the_model_beside_it(run_cli, tmp_path, portrait_path,
                                                              tiny_student, monkeypatch):
    """Issue 32: Excel's "CSV UTF-8" starts with a byte-order mark (it was read as a column
    named "\ufeffaudio"), and a relative `model` is taken from the CSV's folder like every
    other path in it, not from where the command runs."""
    sheet, elsewhere = tmp_path / "sheet", tmp_path / "elsewhere"
    sheet.mkdir(), elsewhere.mkdir()
    _speech(sheet / "a.wav", 0.4)
    model = os.path.relpath(tiny_student, sheet)  # ../../…/student: a path, not a repo id
    (sheet / "jobs.csv").write_text("\ufeffaudio,portrait,output,model\n"
                                    f"a.wav,{portrait_path},a.mp4,{model}\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    result = run_cli("render", "--batch", sheet / "jobs.csv", "--json", "--device", "cpu")
    assert result.code == 0, result.stderr
    assert cli_json(result.stdout, "render")["done"] == 1 and (sheet / "a.mp4").exists()
    assert list(elsewhere.iterdir()) == []


def test_shards_split_the_jobs_exactly(tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,portrait,output\n" + "".join(f"a{i}.wav,p.png,o{i}.mp4\n"
                                                        for i in range(11)))
    everything = read_jobs(jobs)
    for count in (1, 2, 3, 4, 11, 12):
        shards = [everything[index::count] for index in
                  (parse_shard(f"{i}/{count}")[0] for i in range(count))]
        taken = sorted(job.index for shard in shards for job in shard)
        assert taken == list(range(1, 12))  # every job once, none twice
    for bad in ("2/2", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    (tmp_path / "bad.csv").write_text("audio,portrait\nx.wav,p.png\n")
    with pytest.raises(UsageError, match="missing column"):
        read_jobs(tmp_path / "bad.csv")


def test_the_bundled_starter_model_renders_by_default(run_cli, tmp_path, portrait_path):
    from posecast.assets import starter_model, starter_teacher
    from posecast.dit.pretrained import load_config

    config = load_config(starter_model())
    assert config.is_student and (config.width, config.height) == (64, 64)
    assert not load_config(starter_teacher()).is_student
    size = sum(path.stat().st_size for folder in (starter_model(), starter_teacher())
               for path in folder.iterdir())
    assert size < 50 * 2**20  # both bundled models together
    audio, out = _speech(tmp_path / "speech.wav", 0.5), tmp_path / "talk.mp4"
    result = run_cli("render", audio, portrait_path, "-o", out, "--device", "cpu")
    assert result.code == 0, result.stderr
    assert abs(_frames(out) - 13) <= 1 and probe_video(out).width == 64


def test_the_starter_renders_the_readme_example_as_a_face_without_a_grid(run_cli, tmp_path):
    """Issue 22: the README example rendered by the bundled starter is a face mediapipe finds
    in (nearly) every frame, with no patch grid (the starter of 2026-11-27: face found in 3 %
    of frames, seam ratio 1.70; this one 100 % and 1.16)."""
    from posecast.evaluate import score_clip

    examples, out = Path(__file__).parents[1] / "examples", tmp_path / "talk.mp4"
    result = run_cli("render", examples / "speech.wav", examples / "astronaut.png", "-o", out,
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    scores = score_clip(out)
    assert scores.face_found >= 0.9 and scores.seam_ratio <= 1.25, scores
    assert scores.lip_sync_r is not None  # scored: the face was found often enough


def test_a_missing_starter_model_says_what_to_do(run_cli, tmp_path, portrait_path, monkeypatch):
    import posecast.assets

    monkeypatch.setattr(posecast.assets, "STARTER", tmp_path / "gone")
    audio = _speech(tmp_path / "speech.wav", 0.5)
    result = run_cli("render", audio, portrait_path, "-o", tmp_path / "talk.mp4")
    assert result.code == 1 and "--model" in result.stderr


def test_bench_render_times_teacher_and_student_and_profiles(run_cli, tmp_path):
    profile = tmp_path / "where.txt"
    result = run_cli("bench", "render", "--preset", "tiny", "--seconds", "0.5", "--device",
                     "cpu", "--teacher-steps", "2", "--profile", profile)
    assert result.code == 0, result.stderr
    assert "teacher" in result.stdout and "student" in result.stdout
    assert "student / teacher (no I/O):" in result.stdout
    assert "aten::" in profile.read_text()  # torch.profiler's operator table
    result = run_cli("bench", "render", "--preset", "tiny", "--seconds", "0.5", "--device",
                     "cpu", "--skip-teacher", "--student-attention", "dense")
    assert result.code == 0, result.stderr
    assert "student attention dense" in result.stdout and "teacher" not in result.stdout


def test_bench_render_json_reports_the_streaming_counts(run_cli):
    """--json: one object; with the teacher, the student's figures under "student" and the
    ratio; the chunk counts agree with the run (13 frames in chunks of 4 → 4 chunks of 2 + 1
    passes; the dense student makes one call per layer and pass)."""
    result = run_cli("bench", "render", "--preset", "tiny", "--seconds", "0.5", "--device",
                     "cpu", "--teacher-steps", "2", "--steps", "2", "--json")
    assert result.code == 0, result.stderr
    report = cli_json(result.stdout, "bench render")
    student = report["student"]
    for key in ("fps", "denoise_fps", "decode_fps", "first_frame_s", "chunks",
                "passes_per_chunk", "layers", "attention_calls_per_chunk", "recompiles"):
        assert key in student
    assert student["chunks"] == 4 and student["passes_per_chunk"] == 3
    assert student["syncs_per_chunk"] == 0  # nothing in the loop reads back
    assert report["ratio"] == pytest.approx(student["fps"] / report["teacher_fps"])
    result = run_cli("bench", "render", "--preset", "tiny", "--seconds", "0.5", "--device",
                     "cpu", "--skip-teacher", "--student-attention", "dense", "--steps", "2",
                     "--json")
    dense = cli_json(result.stdout, "bench render")
    # two denoising passes of one call per layer (the tiny student's window is one chunk, so
    # it has no cache and no cache pass)
    layers = dense["layers"]
    expected = 2 * layers
    assert dense["attention_calls_per_chunk"] == pytest.approx(expected)
    assert dense["attention_calls_per_chunk"] <= dense["passes_per_chunk"] * layers
    assert dense["h2d_copies_per_chunk"] == 1  # the chunk's pose maps, nothing per pass
    assert student["fps_with_io"] > 0 and dense["fps_with_io"] > 0  # ffmpeg is here
    # FLOPs: every pass of a chunk is the same network on the same tokens (and the tiny
    # student has no cache pass), so 4 steps cost twice 2; the teacher's ratio is its count
    # over the student's
    result = run_cli("bench", "render", "--preset", "tiny", "--seconds", "0.5", "--device",
                     "cpu", "--skip-teacher", "--student-attention", "dense", "--steps", "4",
                     "--json")
    four = cli_json(result.stdout, "bench render")
    assert four["flops_per_frame"] / dense["flops_per_frame"] == pytest.approx(2)
    assert report["flops_ratio"] == pytest.approx(report["teacher"]["flops_per_frame"]
                                                  / student["flops_per_frame"])
    assert dense["peak_tflops"] is None and dense["fps_at_half_peak"] is None  # the CPU


def test_flops_are_counted_for_products_and_the_cpus_fused_attention():
    """The counter behind flops_per_frame on hand-made cases: 2 FLOPs per multiply-add."""
    from posecast.bench.counters import count_flops, fps_at_half_peak

    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    assert count_flops(lambda: x @ weight.T) == 2 * 3 * 8 * 4
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4)
    scores_and_values = 2 * (1 * 2 * 5 * 7 * 4) * 2  # Q·Kᵀ and P·V
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == scores_and_values
    assert fps_at_half_peak(1e12, "NVIDIA H200") == pytest.approx(0.5 * 989)
    assert fps_at_half_peak(1e12, "cpu") is None


def test_bench_render_times_without_io_where_there_is_no_ffmpeg(run_cli, monkeypatch):
    """A bare GPU machine has no ffmpeg: the bench still reports its figures, with the
    with-I/O run left out (null), as it is with --no-io."""
    args = ("bench", "render", "--preset", "tiny", "--seconds", "0.3", "--device", "cpu",
            "--skip-teacher", "--steps", "1", "--json")
    result = run_cli(*args, "--no-io")
    assert result.code == 0, result.stderr
    assert cli_json(result.stdout, "bench render")["fps_with_io"] is None
    monkeypatch.setenv("POSECAST_FFMPEG", "/nonexistent/ffmpeg")
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    report = cli_json(result.stdout, "bench render")
    assert report["fps_with_io"] is None and report["fps"] > 0


def test_a_failing_compile_renders_uncompiled_with_a_warning(monkeypatch):
    """torch.compile can fail in many ways (a missing compiler, an unsupported op); the
    renderer then says so in one line and warms up and renders eagerly."""
    import torch

    import posecast.render
    from posecast.assets import starter_model
    from posecast.families import load_renderer

    def broken(model):
        def run(*args, **kwargs):
            raise RuntimeError("inductor says no\nsecond line")
        return run

    monkeypatch.setattr(posecast.render, "compile_student", broken)
    warnings = []
    renderer = load_renderer(str(starter_model()), torch.device("cpu"), compile=True,
                             on_warning=warnings.append)
    assert renderer.student.network is renderer.student.model
    assert len(warnings) == 1 and "RuntimeError: inductor says no)" in warnings[0]
    assert "second line" not in warnings[0]


def test_the_design_cards_command_writes_one_mp4_named_from_its_inputs(run_cli, tmp_path,
                                                                       portrait_path,
                                                                       monkeypatch):
    """`posecast render AUDIO PORTRAIT` as the design card writes it: no -o, an MP4 named
    AUDIO_PORTRAIT.mp4 in the current folder, its name printed; run again, it refuses to
    replace it without --overwrite."""
    work = tmp_path / "work"
    work.mkdir()
    audio = _speech(tmp_path / "speech.wav", 0.3)
    monkeypatch.chdir(work)
    result = run_cli("render", audio, portrait_path, "--device", "cpu")
    assert result.code == 0, result.stderr
    name = f"speech_{portrait_path.stem}.mp4"
    assert [p.name for p in work.iterdir()] == [name]
    assert f"wrote {name}" in result.stdout
    assert abs(_frames(work / name) - 8) <= 1
    again = run_cli("render", audio, portrait_path, "--device", "cpu")
    assert again.code == 2 and "already exists" in again.stderr
    assert [p.name for p in work.iterdir()] == [name]


def test_the_pipeline_yields_the_frames_render_writes(tmp_path, speech_path, portrait_path):
    """`Pipeline(...)(audio, portrait)` is a Video whose length, rate and size are known before
    any frame is made (issue 35, item 8); it yields exactly ceil(seconds × fps) frames at the
    model's size, each with its index and time, and `render` writes those same frames (up to
    H.264's loss) into the MP4."""
    import posecast
    from posecast.media import AudioClip, iter_video_frames, load_audio
    from posecast.motion import frame_count

    clip = load_audio(speech_path)
    audio = tmp_path / "short.wav"
    AudioClip(clip.samples[:int(0.5 * clip.sample_rate)], clip.sample_rate).save_wav(audio)
    pipe = posecast.Pipeline.from_pretrained(device="cpu", steps=1)
    assert repr(pipe) == (f"Pipeline(model={str(pipe.renderer.source)!r}, "
                          f"{pipe.width}x{pipe.height}, 1 steps, device=cpu)")
    video = pipe(audio, portrait_path, fps=20.0, seed=3)
    count = frame_count(0.5, 20.0)
    assert (len(video), video.fps, video.width, video.height) == \
        (count, 20.0, pipe.width, pipe.height)
    assert repr(video) == f"Video({count} frames at 20 fps = {count / 20:.2f} s, " \
        f"{pipe.width}x{pipe.height})"
    made = list(video)
    assert [(frame.index, frame.time) for frame in made] == [(i, i / 20.0) for i in range(count)]
    frames = [np.asarray(frame) for frame in made]
    assert frames[0].shape == (pipe.height, pipe.width, 3) and frames[0].dtype == np.uint8
    assert frames[0] is made[0].image
    pipe.render(audio, portrait_path, tmp_path / "talk.mp4", fps=20.0, seed=3)
    written = list(iter_video_frames(tmp_path / "talk.mp4"))
    assert len(written) == len(frames)
    error = np.mean([np.abs(a.astype(float) - b).mean()
                     for a, b in zip(frames, written, strict=True)])
    assert error < 6.0, error


def test_render_and_bench_compile_by_default_only_on_cuda_with_fixed_graphs():
    """Both families' renderers and benches compile the chunk step unasked only on CUDA, and
    only where it compiles to fixed graphs: dense attention, or input-aware with flex (auto
    is flex there); gather would recompile every chunk. No GPU is needed to decide."""
    import torch

    from posecast.streaming.compiling import compiles_by_default

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compiles_by_default("dense", "gather", cuda)
    assert compiles_by_default("input_aware", "auto", cuda)
    assert compiles_by_default("input_aware", "flex", cuda)
    assert not compiles_by_default("input_aware", "gather", cuda)
    assert not compiles_by_default("dense", "auto", cpu)
    assert not compiles_by_default("input_aware", "flex", cpu)


def test_the_mp4_carries_the_users_own_48_khz_stereo_soundtrack(run_cli, tmp_path,
                                                                 portrait_path):
    """The soundtrack used to be the 16 kHz mono analysis copy: stereo and everything above
    8 kHz were lost. Left: speech-like syllables; right: a 12 kHz tone (above 16 kHz audio's
    Nyquist). The MP4's audio is 48 kHz stereo, each channel correlating ≥ 0.99 with the input
    over the video's length, which is the literal ceil(1.23 s × 25) = 31 frames."""
    import soundfile

    from posecast.media.ffmpeg import probe_audio

    rate, seconds = 48_000, 1.23
    t = np.arange(int(seconds * rate)) / rate
    left = np.interp(t, np.arange(int(seconds * 16_000)) / 16_000, syllables(seconds))
    right = 0.3 * np.sin(2 * np.pi * 12_000 * t)
    source = tmp_path / "stereo.wav"
    soundfile.write(str(source), np.stack([left, right], 1).astype(np.float32), rate,
                    subtype="PCM_16")
    out = tmp_path / "talk.mp4"
    result = run_cli("render", source, portrait_path, "-o", out, "--device", "cpu")
    assert result.code == 0, result.stderr
    header = probe_audio(out)
    assert (header.sample_rate, header.channels) == (48_000, 2)
    assert _frames(out) == 31
    decoded = decode_audio(out, rate, 2)
    assert abs(len(decoded) - 31 / 25 * rate) <= 0.002 * rate  # padded to the last frame
    n = len(t)
    for channel, expected in enumerate((left, right)):
        assert np.corrcoef(decoded[:n, channel], expected)[0, 1] >= 0.99, channel


def test_cancelling_stereo_is_analysed_from_its_loudest_channel(tmp_path):
    """Left = speech, right = −speech: the mono mix is silence (the mouth would stay shut). The
    analysis copy is the left channel, with a warning that says so."""
    import soundfile

    from posecast.media import load_audio

    speech = syllables(1.0)
    source = tmp_path / "inverted.wav"
    soundfile.write(str(source), np.stack([speech, -0.98 * speech], 1).astype(np.float32),
                    16_000, subtype="FLOAT")
    warnings = []
    clip = load_audio(source, on_warning=warnings.append)
    np.testing.assert_allclose(clip.samples, speech, atol=1e-6)
    assert len(warnings) == 1 and "channel 1" in warnings[0]
    # an ordinary stereo file (the same speech on both sides) is mixed without a word
    soundfile.write(str(source), np.stack([speech, 0.5 * speech], 1).astype(np.float32),
                    16_000, subtype="FLOAT")
    warnings.clear()
    np.testing.assert_allclose(load_audio(source, on_warning=warnings.append).samples,
                               0.75 * speech, atol=1e-6)
    assert warnings == []
