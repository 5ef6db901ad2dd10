"""Typed, range-checked configs (issue 20, item 3): a model folder's config.json, a distill
--config file and the training settings give one line naming the file, the field, its value
and what is allowed, before anything is allocated or downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posecast.config import PRESETS, DenoiserConfig
from posecast.errors import ConfigError, InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# (change to the tiny preset's config.json, words the one line must hold); each of these was a
# traceback, a silent acceptance or a memory climb before
BAD_MODEL_CONFIGS = [
    ({"heads": 0}, "heads is 0; allowed: a whole number from 1 to 256"),
    ({"depth": "4"}, 'depth is "4"; allowed: a whole number from 1 to 512'),
    ({"hidden_size": 2**20}, "hidden_size is 1048576; allowed: a whole number from 8 to 16384"),
    ({"height": 2**20}, "height is 1048576; allowed: a whole number from 1 to 4096"),
    ({"depth": 10**9}, "depth is 1000000000; allowed: a whole number from 1 to 512"),
    ({"height": 1024, "width": 1024}, "65536 tokens per frame; allowed: at most 16384"),
    ({"colour": "red"}, "colour is not a known field; known: height, width"),
    ({"sampler": {"steps": 2.5}}, "sampler.steps is 2.5; allowed: a whole number from 1 to"),
    ({"codec": {"kind": "vae", "repo": "../../.."}},
     'codec.repo is "../../.."; allowed: a Hub repo id (owner/name) or a folder inside the '
     "model folder"),
    ({"codec": {"kind": "vae", "repo": "/"}}, 'codec.repo is "/"; allowed: a Hub repo id'),
]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny (untrained) model folder whose config.json each test rewrites."""
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.pretrained import save_pretrained

    return save_pretrained(Denoiser(PRESETS["tiny"]), tmp_path_factory.mktemp("m") / "tiny")


def _with_config(folder: Path, tmp_path: Path, change: dict) -> Path:
    """A copy of `folder` (its files linked) whose config.json has `change` applied."""
    copy = tmp_path / "model"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).symlink_to(path)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text(json.dumps({**PRESETS["tiny"].to_dict(), **change}))
    return copy


def _no_download(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def _one_line(result, code: int, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.code == code and len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("change,message", BAD_MODEL_CONFIGS)
def test_a_bad_model_config_is_one_line_in_render_and_teacher(run_cli, tmp_path, monkeypatch,
                                                              model_folder, portrait_path,
                                                              speech_path, change, message):
    _no_download(monkeypatch)
    folder = _with_config(model_folder, tmp_path, change)
    out = tmp_path / "out.mp4"
    result = run_cli("render", speech_path, portrait_path, "-o", out, "--model", folder,
                     "--device", "cpu")
    _one_line(result, 1, str(folder / "config.json"), message)
    result = run_cli("teacher", portrait_path, "--poses", EXAMPLES / "astronaut_poses.npz",
                     "-o", out, "--model", folder, "--device", "cpu")
    _one_line(result, 1, str(folder / "config.json"), message)
    assert not out.exists()


def test_a_codec_folder_inside_the_model_folder_is_found_there_not_in_the_current_one(
        tmp_path, monkeypatch, model_folder):
    """A relative codec repo means a folder inside the model folder, whatever the current
    folder; written back relative, so the folder can move."""
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.pretrained import load_config, save_pretrained

    _no_download(monkeypatch)
    folder = _with_config(model_folder, tmp_path, {"codec": {"kind": "vae", "repo": "a/vae"}})
    (folder / "a" / "vae").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # where a lookup against the current folder would go wrong
    (tmp_path / "a" / "vae").mkdir(parents=True)
    config = load_config(folder)
    assert config.codec.repo == str((folder / "a" / "vae").resolve())
    save_pretrained(Denoiser(config), folder)
    assert json.loads((folder / "config.json").read_text())["codec"]["repo"] == "a/vae"
    monkeypatch.chdir(folder / "a")
    assert load_config(folder).codec.repo == str((folder / "a" / "vae").resolve())


def test_a_mimicmotion_config_out_of_range_is_one_line(run_cli, tmp_path, portrait_path):
    folder = tmp_path / "mimic"
    folder.mkdir()
    config = {"family": "mimicmotion", "unet": {"block_out_channels": [320, 2**20]}}
    for unet_or_recipe, message in [
            (config, "unet.block_out_channels is [320, 1048576]; allowed: a list of at most 8 "
                     "whole numbers from 1 to 4096"),
            ({**config, "unet": {}, "recipe": {"window": "72"}},
             'recipe.window is "72"; allowed: a whole number from 2 to 1024'),
            ({**config, "unet": {}, "recipe": {"frames": 72}}, "recipe.frames is not a known")]:
        (folder / "config.json").write_text(json.dumps(unet_or_recipe))
        result = run_cli("teacher", portrait_path, "--poses", EXAMPLES / "astronaut_poses.npz",
                         "-o", tmp_path / "out.mp4", "--model", folder, "--device", "cpu")
        _one_line(result, 1, str(folder / "config.json"), message)


@pytest.mark.parametrize("settings,flags,message", [
    ({"learning_rate": "abc"}, [], 'learning_rate is "abc"; allowed: a number from 0 to 1'),
    ({"critic_updates": 0}, [], "critic_updates is 0; allowed: a whole number from 1 to 100"),
    ({"region_weights": {"lips": -2}}, [], "region_weights.lips is -2; allowed: a number from"),
    ({"perceptual": "lpips=x"}, [], 'perceptual is "lpips=x"; allowed: a list of at most'),
    ({"critic_update": 3}, [], "critic_update is not a known field; known: student_steps"),
    ({}, ["--learning-rate", "-1"], "--learning-rate: learning_rate is -1.0; allowed: a number"),
])
def test_a_bad_distill_config_is_one_line_naming_file_or_flag(run_cli, tmp_path, settings,
                                                               flags, message):
    config = tmp_path / "distill.json"
    config.write_text(json.dumps(settings))
    out = tmp_path / "student"
    result = run_cli("distill", tmp_path, "--teacher", tmp_path / "teacher", "--output", out,
                     "--config", config, *flags)
    _one_line(result, 2, message, *([] if flags else [f"{config}: "]))
    assert not out.exists()


def test_settings_objects_check_types_and_ranges_themselves():
    from posecast.dit.train import TrainConfig
    from posecast.train.distill import DistillConfig

    with pytest.raises(ConfigError, match='learning_rate is "abc"'):
        DistillConfig.from_dict({"learning_rate": "abc"})
    with pytest.raises(ConfigError, match="dmd_max_time is NaN"):
        DistillConfig(dmd_max_time=float("nan"))
    with pytest.raises(ConfigError, match="max_steps is true; allowed: a whole number"):
        TrainConfig(max_steps=True)
    with pytest.raises(ConfigError, match="region_alphas.lips is -1"):
        TrainConfig(region_alphas={"lips": -1})
    with pytest.raises(ConfigError, match="window is 0"):
        PRESETS["tiny"].replace(window=0)
    for config in PRESETS.values():  # every preset is inside the ranges, and round-trips
        assert DenoiserConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_model_config_that_is_not_json_is_one_line(tmp_path, model_folder):
    from posecast.dit.pretrained import load_config

    folder = _with_config(model_folder, tmp_path, {})
    (folder / "config.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not a posecast model config"):
        load_config(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"the config is \[1, 2\]; allowed: an object"):
        load_config(folder)


def test_a_bad_training_setting_is_one_line_before_the_output_is_touched(run_cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_log.jsonl").write_text("")  # a posecast run folder --overwrite may replace
    result = run_cli("train", tmp_path, "--output", out, "--preset", "tiny", "--overwrite",
                     "--learning-rate", "-1", "--device", "cpu")
    _one_line(result, 2, "--learning-rate: learning_rate is -1.0; allowed: a number from 0 to 1")
    assert [path.name for path in out.iterdir()] == ["train_log.jsonl"]
