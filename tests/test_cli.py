from __future__ import annotations

import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posecast import __version__
from posecast.errors import PosecastError
from posecast.pose import Keypoints


def test_help_and_version(run_cli):
    result = run_cli("--help")
    assert result.code == 0 and "keypoints" in result.stdout
    result = run_cli("keypoints", "--help")
    assert result.code == 0 and "--preview" in result.stdout and "Examples" in result.stdout
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"posecast {__version__}"


@pytest.mark.parametrize("command,default", [("distill", "[default: 3]"),
                                             ("render", "[default: the bundled starter")])
def test_help_shows_defaults_written_into_the_text(run_cli, monkeypatch, command, default):
    """Help texts that state their default in brackets print it (rich markup once swallowed
    "[default: …]" as an unknown tag)."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrap inside the default
    result = run_cli(command, "--help")
    assert result.code == 0 and default in result.stdout


def test_console_script_runs_as_its_own_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "posecast", "keypoints",
                             str(tmp_path / "nobody.png"), "-o", str(tmp_path / "kp.npz")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nobody.png'}: no such image file; " \
                                    "check the path"


def test_keypoints_of_the_example_with_preview(run_cli, tmp_path, portrait_path):
    result = run_cli("keypoints", portrait_path, "-o", tmp_path / "kp.npz", "--preview",
                     tmp_path / "kp.png")
    assert result.code == 0, result.stderr
    assert "face (478 points) in 100%" in result.stdout
    assert "body (33 points) in 100%" in result.stdout
    kp = Keypoints.load(tmp_path / "kp.npz")
    assert kp.face[0, :, 2].min() == 1.0 and kp.body[0, :13, 2].min() > 0.5
    preview = np.asarray(Image.open(tmp_path / "kp.png"))
    original = np.asarray(Image.open(portrait_path).convert("RGB"))
    assert preview.shape == original.shape and (preview != original).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kp.npz", "kp.png"]


def test_keypoints_of_a_video_with_a_preview_video(run_cli, tmp_path, talking_video):
    from posecast.media import probe_video

    result = run_cli("keypoints", talking_video, "-o", tmp_path / "v.npz", "--smooth",
                     "--preview", tmp_path / "v.mp4")
    assert result.code == 0, result.stderr
    assert len(Keypoints.load(tmp_path / "v.npz")) == 12
    assert probe_video(tmp_path / "v.mp4").has_audio


def test_keypoints_of_a_folder(run_cli, tmp_path, talking_video):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(talking_video, clips / "one.mp4")
    result = run_cli("keypoints", clips, "-o", tmp_path / "cache")
    assert result.code == 0 and "1 extracted" in result.stdout
    result = run_cli("keypoints", clips, "-o", tmp_path / "cache")
    assert result.code == 0 and "1 already cached" in result.stdout


def _bad_inputs(tmp_path, portrait_path):
    """name → (input path, expected exit code, words the message must contain)."""
    cases = {"missing file": (tmp_path / "missing.png", 2, "no such image file")}
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases["folder for a file"] = (folder, 2, "is a folder")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases["0-byte file"] = (empty, 1, "empty (0 bytes)")
    text = tmp_path / "notes.png"
    text.write_text("just some text\n")
    cases["text named .png"] = (text, 1, "not a readable image")
    truncated = tmp_path / "truncated.jpg"
    Image.open(portrait_path).convert("RGB").save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:4000])
    cases["truncated JPEG"] = (truncated, 1, "damaged or truncated")
    gif = tmp_path / "portrait.gif"
    gif.write_bytes(b"GIF89a")
    cases["unsupported extension"] = (gif, 2, "unsupported input type '.gif'")
    no_frames = tmp_path / "voice_memo.mp4"
    wav = tmp_path / "memo.wav"
    from posecast.media import AudioClip
    from posecast.media.ffmpeg import ffmpeg_executable

    AudioClip(np.zeros(8000, np.float32), 16000).save_wav(wav)
    subprocess.run([ffmpeg_executable(), "-loglevel", "error", "-i", str(wav), str(no_frames)],
                   check=True)
    wav.unlink()
    cases["video with no frames"] = (no_frames, 1, "no video stream")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 300, 3), 200, np.uint8)).save(blank)
    cases["no person"] = (blank, 1, "no face and no person (body) found")
    return cases


def test_each_bad_input_gives_one_line_and_leaves_nothing(run_cli, tmp_path, portrait_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    for name, (path, code, words) in _bad_inputs(inputs, portrait_path).items():
        before = sorted(inputs.iterdir())
        preview = out / ("kp.mp4" if path.suffix == ".mp4" else "kp.png")
        result = run_cli("keypoints", path, "-o", out / "kp.npz", "--preview", preview)
        lines = result.stderr.strip().splitlines()
        assert result.code == code, (name, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert words in lines[0] and str(path) in lines[0], (name, lines[0])
        assert "Traceback" not in result.stderr + result.stdout, name
        assert list(out.iterdir()) == [] and sorted(inputs.iterdir()) == before, name


def test_output_checks(run_cli, tmp_path, portrait_path):
    result = run_cli("keypoints", portrait_path, "-o", tmp_path / "nowhere" / "kp.npz")
    assert result.code == 2 and "does not exist; create it first" in result.stderr
    taken = tmp_path / "kp.npz"
    taken.write_bytes(b"old")
    result = run_cli("keypoints", portrait_path, "-o", taken)
    assert result.code == 2 and "already exists; pass --overwrite" in result.stderr
    assert taken.read_bytes() == b"old"
    result = run_cli("keypoints", portrait_path, "-o", taken, "--overwrite")
    assert result.code == 0 and len(Keypoints.load(taken)) == 1
    result = run_cli("keypoints", portrait_path, "-o", tmp_path / "kp.txt")
    assert result.code == 2 and "use one of .npz" in result.stderr


def test_allow_missing_writes_zeros(run_cli, tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 300, 3), 200, np.uint8)).save(blank)
    result = run_cli("keypoints", blank, "-o", tmp_path / "kp.npz", "--allow-missing")
    assert result.code == 0, result.stderr
    kp = Keypoints.load(tmp_path / "kp.npz")
    assert (kp.width, kp.height) == (300, 200) and not kp.face.any() and not kp.body.any()


def test_debug_shows_the_traceback(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["posecast", "--debug", "keypoints",
                                      str(tmp_path / "x.png"), "-o", str(tmp_path / "k.npz")])
    from posecast import cli

    with pytest.raises(PosecastError, match="no such image"):
        cli.main()
    result = subprocess.run([sys.executable, "-m", "posecast", "keypoints",
                             str(tmp_path / "x.png"), "-o", str(tmp_path / "k.npz")],
                            capture_output=True, text=True, env={"POSECAST_DEBUG": "1",
                                                                 "PATH": ""})
    assert "Traceback" in result.stderr and result.returncode == 1


def test_messages_print_file_names_as_typed(run_cli, tmp_path):
    result = run_cli("keypoints", tmp_path / "clip:smile:.png", "-o", tmp_path / "k.npz")
    assert result.code == 2 and "clip:smile:.png" in result.stderr


HEAVY = ("torch", "mediapipe", "diffusers", "transformers", "librosa")


@pytest.mark.parametrize("argv,env", [
    (["--help"], {}), (["--version"], {}), (["render", "--help"], {}),
    (["bench", "render", "--help"], {}), (["import", "mimicmotion", "--help"], {}),
    (["export", "--help"], {}), (["upload", "--help"], {}), (["import", "lpips", "--help"], {}),
    ([], {"_POSECAST_COMPLETE": "complete_bash", "COMP_WORDS": "posecast re",
          "COMP_CWORD": "1"}),
])
def test_help_version_and_completion_import_no_heavy_library(argv, env):
    """A fresh interpreter answers --help, --version and a shell completion without importing
    torch, mediapipe, diffusers, transformers or librosa (they take seconds to load)."""
    import os
    import subprocess
    import sys

    script = ("import sys\nfrom posecast.cli import app\n"
              f"sys.argv = ['posecast', *{argv!r}]\n"
              "try:\n    app()\nexcept SystemExit:\n    pass\n"
              f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout[-500:] + result.stderr[-500:]
    assert "Usage" in result.stdout or "posecast" in result.stdout or "render" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--seed", "-5"], "from 0 to"),
    (["--seed", "99999999999999999999"], "from 0 to"),
    (["--size", "65536x65536"], "at most 4096 pixels"),
])
def test_seed_and_size_out_of_range_are_one_line_errors(run_cli, tmp_path, args, message):
    """Issue 20 (item 5): these were tracebacks; now one line and exit 2, before any work,
    and nothing written."""
    out = tmp_path / "x.mp4"
    result = run_cli("render", tmp_path / "a.wav", tmp_path / "p.png", "-o", out, *args)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    result = run_cli("distill", tmp_path, "--teacher", tmp_path, "--output", tmp_path / "s",
                     "--seed", "-1")
    assert result.code == 2 and "from 0 to" in result.stderr


@pytest.mark.parametrize("args, says", [
    (["render", "--nope"], "No such option: --nope"),
    (["render", "a.wav", "b.png", "--fps", "-3"], "'--fps'"),
    (["distill"], "Missing argument 'DATASET'"),
    (["train", "clips", "--max-steps", "abc"], "'--max-steps'"),
    (["bench", "render", "--device"], "requires an argument"),
    # issue 32: an absurd rate or length was a 60 GB allocation, zero steps a division by zero
    (["bench", "render", "--fps", "1e9"], "'--fps'"),
    (["bench", "render", "--seconds", "1e9"], "'--seconds'"),
    (["bench", "render", "--teacher-steps", "0"], "'--teacher-steps'"),
    (["bench", "teacher", "--steps", "0"], "'--steps'"),
])
def test_option_errors_are_one_line_like_every_other_error(run_cli, args, says):
    """Typer's own parse errors (it draws a box of several lines) go through the same one-line
    printer as posecast's errors, pointing at the command's --help."""
    result = run_cli(*args)
    assert result.code == 2 and says in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0]


def test_the_library_lists_pipeline_without_importing_torch():
    """Issue 35 (item 8): `dir(posecast)` did not list `Pipeline` (it is imported on first use,
    so that `import posecast` stays light)."""
    script = ("import sys, posecast; print('Pipeline' in dir(posecast), "
              "'torch' in sys.modules, posecast.__version__ == posecast.version.__version__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.split() == ["True", "False", "True"], result.stdout + result.stderr


def _options_by_name() -> dict[str, list[tuple[str, object]]]:
    """Every visible option of every command: long name → [(command, option)]."""
    import typer

    from posecast.cli import app

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), command

    found: dict[str, list[tuple[str, object]]] = {}
    for path, command in walk(typer.main.get_command(app), []):
        for option in command.params:
            if option.param_type_name == "option" and not option.hidden:
                long = next(name for name in option.opts if name.startswith("--"))
                found.setdefault(long, []).append((path, option))
    return found


# one name, two ideas: a student's steps (1-8) and a teacher's (up to 1,000)
TEACHER_STEPS = {"teacher", "bench teacher"}


def test_one_idea_has_one_name_short_form_and_range_on_every_command():
    """Issue 35, point 3: the output is -o/--output everywhere (no --out), and an option name
    used by several commands has one short form, one range (numbers of one type) and, for
    --preset, one default."""
    from posecast.cli import RENAMED

    options = _options_by_name()
    assert not set(RENAMED) & set(options), "an old spelling is still an option"
    outputs = [(path, option.opts) for uses in options.values() for path, option in uses
               if option.name in ("out", "output")]
    assert outputs and all(sorted(opts) == ["--output", "-o"] for _, opts in outputs), outputs
    for name, uses in options.items():
        shorts = {tuple(sorted(o for o in option.opts if not o.startswith("--")))
                  for _, option in uses}
        assert len(shorts) == 1, (name, shorts)
        groups: dict[tuple, set] = {}
        for path, option in uses:
            kind = [t for t in typing.get_args(option.type_descriptor.annotation)
                    if t is not type(None)] or [option.type_descriptor.annotation]  # int | None
            idea = (str(kind), name == "--steps" and path in TEACHER_STEPS)
            groups.setdefault(idea, set()).add((option.min, option.max))
        assert all(len(ranges) == 1 for ranges in groups.values()), (name, groups)
    assert len({option.default for _, option in options["--preset"]}) == 1


def test_an_old_option_spelling_still_works_for_a_release_with_a_warning(run_cli, tmp_path):
    result = run_cli("train-motion", tmp_path / "none", "--out", tmp_path / "m")
    assert "--out is now --output" in result.stderr
    assert "no such dataset folder" in result.stderr  # parsed as --output: the next check ran
    from posecast.cli import current_spelling

    assert current_spelling(["distill", "--student-steps=2", "--", "--out"]) == \
        ["distill", "--steps=2", "--", "--out"]  # after --, a value


def test_the_library_is_found_from_help_and_its_callbacks_are_typed():
    """Issue 35 (item 8): `help(posecast)` names Pipeline and shows how to use it, and
    `Pipeline.render` names its callbacks and limits (it took untyped **callbacks)."""
    import inspect
    import pydoc

    import posecast

    text = pydoc.render_doc(posecast)
    assert "posecast.Pipeline" in text and "pipe.render(" in text
    parameters = inspect.signature(posecast.Pipeline.render).parameters
    assert all(p.kind is not p.VAR_KEYWORD for p in parameters.values())
    for name in ("on_progress", "on_warning", "warn_seconds", "max_minutes"):
        assert parameters[name].kind is parameters[name].KEYWORD_ONLY
        assert parameters[name].annotation != inspect.Parameter.empty, name


def test_the_extras_named_in_errors_are_the_installs_extras():
    """posecast/extras.py says which modules each pip extra brings; pyproject.toml declares
    them: the two agree, so the error's `pip install 'posecast[EXTRA]'` installs what it
    names."""
    import re
    from pathlib import Path

    import tomllib

    from posecast.extras import EXTRAS

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = project["project"]["optional-dependencies"]
    dependencies = {re.match(r"[A-Za-z0-9_.-]+", requirement).group()
                    for requirement in project["project"]["dependencies"]}
    for extra, (_, modules) in EXTRAS.items():
        names = {re.match(r"[A-Za-z0-9_.-]+", requirement).group()
                 for requirement in declared[extra]}
        assert names == set(modules), extra
        assert not names & dependencies, f"{extra}: also in the default install"
    assert "posecast[mimicmotion]" in declared["dev"]  # the test command installs it


@pytest.mark.parametrize("args", [
    ("import", "mimicmotion", "--output", "{tmp}/mm"),
    ("bench", "render", "--preset", "mimicmotion-tiny", "--device", "cpu"),
    ("teacher", "{tmp}/p.png", "--poses", "{examples}/astronaut_poses.npz", "-o",
     "{tmp}/t.mp4", "--model", "{tmp}/folder", "--device", "cpu"),
], ids=["import", "bench", "teacher"])
def test_a_missing_extra_is_named_in_one_line(run_cli, tmp_path, monkeypatch, portrait_path,
                                              args):
    """Issue 35 (item 9): without transformers (the `mimicmotion` extra), every way into the
    MimicMotion family stops with one line that says what to install, before any work."""
    import json
    import shutil

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text(json.dumps({"family": "mimicmotion"}))
    shutil.copy(portrait_path, tmp_path / "p.png")
    examples = Path(__file__).parents[1] / "examples"
    result = run_cli(*(arg.format(tmp=tmp_path, examples=examples) for arg in args))
    assert result.code == 2, result.stderr
    assert result.stderr.strip() == ("error: MimicMotion models need transformers, which the "
                                     "default install leaves out: pip install "
                                     "'posecast[mimicmotion]'"), result.stderr
    assert not (tmp_path / "mm").exists() and not (tmp_path / "t.mp4").exists()
