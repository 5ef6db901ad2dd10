"""`--json` means one thing on every command: stdout is one JSON object of one shape (issue 35:
"command", "ok" as a bool, "outputs", the command's figures, "posecast_version"; a render's
model, revision, seed, size and steps) and the human sentence goes to stderr;
POSECAST_DEVICE and POSECAST_MODEL stand in for --device and render's --model."""

from __future__ import annotations

import pytest
import torch
import typer.main
from conftest import cli_json, syllables

from posecast.media import AudioClip

# commands whose --json is exercised by another test file (that test parses it)
ELSEWHERE = {
    "render": "test_render.py::test_a_failed_batch_job_does_not_stop_the_others",
    "live": "test_live.py::test_a_file_played_live_into_a_file (and with -o -, on stderr)",
    "eval": "test_evaluate.py::test_scores_of_identical_and_damaged_clips",
    "export": "test_publish.py::test_export_writes_only_the_model_files_and_the_export_renders",
    "upload": "test_publish.py::test_upload_commits_only_the_model_files_to_a_new_branch",
    "bench render": "test_render.py::test_bench_render_json_reports_the_streaming_counts",
    "bench attention": "test_attention.py::test_bench_attention_check_covers_every_backend_"
                       "and_case",
    # needs the module-scoped SVD stand-in of test_mimicmotion.py; its summary is print_result's
    "import mimicmotion": "not run: see test_mimicmotion.py for the import itself",
}


def _commands_with_json() -> set[str]:
    from posecast.cli import app

    found = set()

    def walk(command, prefix: str) -> None:
        if hasattr(command, "commands"):  # a group (typer's own click classes)
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        elif any("--json" in getattr(param, "opts", ()) for param in command.params):
            found.add(prefix)

    walk(typer.main.get_command(app), "")
    return found


@pytest.fixture
def tiny_teacher(tmp_path):
    from posecast.config import preset
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.pretrained import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(Denoiser(preset("tiny")), tmp_path / "teacher")


def _cases(tmp_path, portrait_path, synthetic_dataset, tiny_teacher):
    """(command, its arguments with --json, keys its summary must hold)."""
    audio = tmp_path / "speech.wav"
    AudioClip(syllables(0.4), 16_000).save_wav(audio)
    poses = tmp_path / "poses.npz"
    vgg = {f"features.{i}.weight": torch.zeros(o, c, 3, 3) for i, (c, o) in LAYERS.items()}
    vgg |= {f"features.{i}.bias": torch.zeros(o) for i, (_, o) in LAYERS.items()}
    torch.save(vgg, tmp_path / "vgg.pth")
    torch.save({f"lin{j}.model.1.weight": torch.ones(1, c, 1, 1)
                for j, c in enumerate((64, 128, 256, 512, 512))}, tmp_path / "lin.pth")
    steps = ["--max-steps", "1", "--batch-size", "1", "--device", "cpu"]
    return [
        ("keypoints", [portrait_path, "-o", tmp_path / "kp.npz"], [tmp_path / "kp.npz"],
         {"frames"}),
        ("motion", [audio, portrait_path, "-o", poses], [poses], {"frames", "fps"}),
        ("teacher", [portrait_path, "--poses", poses, "-o", tmp_path / "t.mp4", "--model",
                     tiny_teacher, "--steps", "1", "--device", "cpu", "--seed", "7"],
         [tmp_path / "t.mp4"], {"frames", "cfg"}),
        ("make-dataset", [tmp_path / "clips", "--clips", "1", "--size", "64",
                          "--drawn-people", "0", "--held-out-people", "0"], [tmp_path / "clips"],
         {"clips"}),
        ("train", [synthetic_dataset, "--preset", "tiny", "--output", tmp_path / "run", *steps],
         [tmp_path / "run"], {"checkpoint"}),
        ("distill", [synthetic_dataset, "--teacher", tiny_teacher, "--output", tmp_path / "st",
                     "--init-steps", "0", "--critic-updates", "1", "--steps", "1",
                     "--chunk", "2", "--window", "4", *steps], [tmp_path / "st"], {"checkpoint"}),
        ("train-motion", [synthetic_dataset, "--output", tmp_path / "motion", *steps,
                          "--window-seconds", "0.2"], [tmp_path / "motion"], set()),
        ("bench teacher", ["--preset", "tiny", "--steps", "1", "--repeats", "1", "--device",
                           "cpu"], [], {"preset", "timings"}),
        ("bench attention", ["--grids", "4", "--k-frames", "1", "--frames", "4", "--heads",
                             "1", "--head-dim", "8", "--repeats", "1", "--block-size", "16",
                             "--forward-only", "--device", "cpu"], [], {"timings", "device"}),
        ("import lpips", [tmp_path / "vgg.pth", tmp_path / "lin.pth", "--output",
                          tmp_path / "lpips"], [tmp_path / "lpips"], set()),
    ]


LAYERS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
          12: (256, 256), 14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512),
          24: (512, 512), 26: (512, 512), 28: (512, 512)}


def test_json_on_every_command_is_one_object_on_stdout(run_cli, tmp_path, portrait_path,
                                                       synthetic_dataset, tiny_teacher):
    cases = _cases(tmp_path, portrait_path, synthetic_dataset, tiny_teacher)
    assert {name for name, *_ in cases} | set(ELSEWHERE) == _commands_with_json()
    for name, args, outputs, keys in cases:
        result = run_cli(*name.split(), *args, "--json")
        assert result.code == 0, (name, result.stderr)
        summary = cli_json(result.stdout, name)  # nothing but the JSON on stdout, one shape
        assert summary["ok"] is True and summary["outputs"] == [str(path) for path in outputs]
        assert keys <= set(summary), (name, summary)
        assert result.stderr.strip(), name  # the sentence went to stderr
        if name == "teacher":
            assert summary["seed"] == 7 and summary["model"] == str(tiny_teacher)


def test_environment_variables_stand_in_for_device_and_model(run_cli, tmp_path,
                                                             portrait_path, monkeypatch):
    audio = tmp_path / "speech.wav"
    AudioClip(syllables(0.3), 16_000).save_wav(audio)
    monkeypatch.setenv("POSECAST_DEVICE", "cuda:7")
    result = run_cli("render", audio, portrait_path, "-o", tmp_path / "a.mp4")
    assert result.code != 0 and "cuda:7" in result.stderr, result.stderr
    result = run_cli("train", tmp_path, "--output", tmp_path / "run")  # every --device
    assert result.code != 0 and "cuda:7" in result.stderr, result.stderr
    monkeypatch.setenv("POSECAST_DEVICE", "cpu")
    monkeypatch.setenv("POSECAST_MODEL", str(tmp_path / "no-such-model"))
    result = run_cli("render", audio, portrait_path, "-o", tmp_path / "b.mp4")
    assert result.code == 2 and "no-such-model" in result.stderr, result.stderr
    result = run_cli("render", audio, portrait_path, "-o", tmp_path / "c.mp4", "--model",
                     tmp_path / "flag-wins")  # the flag beats the variable
    assert result.code == 2 and "flag-wins" in result.stderr, result.stderr
