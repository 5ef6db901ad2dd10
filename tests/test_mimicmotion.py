"""The MimicMotion family on tiny random components (diffusers' own SVD test sizes, CLIP at
224 px input): import, sampling against diffusers' SVD pipeline, the pose path, window fusion."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, torchrun
from PIL import Image
from safetensors.torch import load_file

from posecast.mimicmotion.model import MimicMotion, Recipe, load_teacher
from posecast.mimicmotion.sampling import fuse, fusion_weights, sample_latents, window_indices

UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=8,
            out_channels=4, down_block_types=("CrossAttnDownBlockSpatioTemporal",
                                              "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=32, num_attention_heads=8,
            projection_class_embeddings_input_dim=96, addition_time_embed_dim=32)
SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                 interpolation_type="linear", num_train_timesteps=1000,
                 prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                 steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
                 use_karras_sigmas=True)


def _unet_config() -> dict:
    from diffusers import UNetSpatioTemporalConditionModel

    return json.loads(UNetSpatioTemporalConditionModel(**UNET).to_json_string())


def _write_svd(folder, vae_blocks: int = 2):
    """A folder laid out like stabilityai/stable-video-diffusion-img2vid-xt-1-1 (the VAE as
    the repo's fp16 variant, the image encoder in full precision); `vae_blocks` 4 gives the
    real VAE's 8× downsampling, which the pose network's grid matches."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps(_unet_config()))
    AutoencoderKLTemporalDecoder(block_out_channels=[32] * vae_blocks if vae_blocks > 2
                                 else [32, 64], in_channels=3, out_channels=3,
                                 down_block_types=["DownEncoderBlock2D"] * vae_blocks,
                                 latent_channels=4
                                 ).save_pretrained(folder / "vae", variant="fp16")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        image_size=224, intermediate_size=37, patch_size=32)).save_pretrained(
            folder / "image_encoder")
    CLIPImageProcessor(crop_size=224, size=224).save_pretrained(folder / "feature_extractor")
    EulerDiscreteScheduler(**SCHEDULER).save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory):
    return _write_svd(tmp_path_factory.mktemp("svd"))


def _random_state() -> dict[str, torch.Tensor]:
    """A MimicMotion state dict as the real file holds it: fp16, unet.* and pose_net.*, with
    the pose network's projection not zero (so the pose matters)."""
    torch.manual_seed(1)
    network = MimicMotion(_unet_config())
    with torch.no_grad():
        network.pose_net.final_proj.weight.normal_(0, 0.2)
    return {key: value.half() for key, value in network.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "MimicMotion_1-1.pth"
    state = _random_state()
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def imported(tmp_path_factory, svd_folder, checkpoint):
    from posecast.mimicmotion.importer import import_mimicmotion

    out = tmp_path_factory.mktemp("models") / "mimicmotion"
    return import_mimicmotion(out, str(svd_folder), str(checkpoint[0]))


def test_the_import_carries_every_tensor_exactly(imported, checkpoint):
    carried = load_file(imported / "model.safetensors")
    state = checkpoint[1]
    assert carried.keys() == state.keys()
    for key, value in state.items():
        assert carried[key].dtype == value.dtype and torch.equal(carried[key], value), key
    config = json.loads((imported / "config.json").read_text())
    assert config["family"] == "mimicmotion" and config["recipe"]["window"] == 72
    assert "academic, research and education use only" in (imported / "README.md").read_text()
    assert not list(imported.rglob("*.bin")) and not list(imported.rglob("*.pth"))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def test_a_malicious_pickle_is_refused_without_running(run_cli, tmp_path, svd_folder):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pth"
    with open(bad, "wb") as file:
        pickle.dump({"unet.conv_in.weight": _Payload(marker)}, file)
    result = run_cli("import", "mimicmotion", "--svd", svd_folder, "--checkpoint", bad,
                     "--output", tmp_path / "out")
    assert result.code == 1
    assert "refused without running it" in result.stderr
    assert len(result.stderr.strip().splitlines()[-1:]) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_checkpoint_that_does_not_fit_names_the_first_mismatch(run_cli, tmp_path, svd_folder,
                                                                 checkpoint):
    state = dict(checkpoint[1])
    state["pose_net.final_proj.weight"] = state["pose_net.final_proj.weight"][:16]
    torch.save(state, tmp_path / "shape.pth")
    del state["pose_net.final_proj.weight"]
    torch.save(state, tmp_path / "missing.pth")
    result = run_cli("import", "mimicmotion", "--svd", svd_folder, "--checkpoint",
                     tmp_path / "shape.pth", "--output", tmp_path / "a")
    assert result.code == 1 and "'pose_net.final_proj.weight' has shape" in result.stderr
    result = run_cli("import", "mimicmotion", "--svd", svd_folder, "--checkpoint",
                     tmp_path / "missing.pth", "--output", tmp_path / "b")
    assert result.code == 1 and "lacks 'pose_net.final_proj.weight'" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_svd_folder_without_a_component_says_which(run_cli, tmp_path, svd_folder,
                                                      checkpoint):
    import shutil

    partial = tmp_path / "svd"
    shutil.copytree(svd_folder, partial)
    shutil.rmtree(partial / "scheduler")
    result = run_cli("import", "mimicmotion", "--svd", partial, "--checkpoint", checkpoint[0],
                     "--output", tmp_path / "out")
    assert result.code == 1 and "lacks scheduler/scheduler_config.json" in result.stderr


def test_without_pose_the_sampler_equals_diffusers_svd_pipeline(imported):
    """One window, no pose: posecast's sampler gives the latents of diffusers'
    StableVideoDiffusionPipeline on the same components, noise and settings."""
    from diffusers import StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    teacher = load_teacher(imported)
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    recipe = Recipe(height=64, width=64, window=3, overlap=1, steps=3, min_guidance=1.0,
                    max_guidance=2.5, fps=7, motion_bucket_id=100, noise_aug_strength=0.02)
    ours = sample_latents(teacher, portrait, None, torch.Generator().manual_seed(5), frames=3,
                          recipe=recipe)
    pipeline = StableVideoDiffusionPipeline(
        vae=teacher.vae, image_encoder=teacher.image_encoder, unet=teacher.network.unet,
        scheduler=teacher.scheduler(),
        feature_extractor=CLIPImageProcessor.from_pretrained(imported / "feature_extractor"))
    pipeline.set_progress_bar_config(disable=True)
    theirs = pipeline(Image.fromarray(portrait), height=64, width=64, num_frames=3,
                      num_inference_steps=3, min_guidance_scale=1.0, max_guidance_scale=2.5,
                      fps=7, motion_bucket_id=100, noise_aug_strength=0.02,
                      generator=torch.Generator().manual_seed(5), output_type="latent").frames
    assert ours.shape == theirs.shape == (1, 3, 4, 32, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_the_pose_path_adds_the_pose_network_after_conv_in(imported):
    """MimicMotion.forward with pose maps equals the UNet whose conv_in output is explicitly
    offset by PoseNet(pose maps); pose_keep=False gives the pose-free output."""
    teacher = load_teacher(imported)
    network = teacher.network
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(2, 3, 8, 32, 32, generator=g)
    embeddings = torch.randn(2, 1, 32, generator=g)
    time_ids = torch.tensor([[6.0, 127.0, 0.0]] * 2)
    # PoseNet downsamples 8× (the real VAE's factor; this tiny VAE's is 2×): 256 px → 32
    pose = torch.rand(2, 3, 3, 256, 256, generator=g) * 2 - 1
    with torch.no_grad():
        ours = network(sample, 10.0, embeddings, time_ids, pose,
                       torch.tensor([True, False]))
        plain = network(sample, 10.0, embeddings, time_ids)
        features = network.pose_net(pose.flatten(0, 1))
        conv_in = network.unet.conv_in

        class Offset(torch.nn.Module):
            def forward(self, x):
                return conv_in(x) + features

        network.unet.conv_in = Offset()
        try:
            explicit = network.unet(sample, 10.0, encoder_hidden_states=embeddings,
                                    added_time_ids=time_ids, return_dict=False)[0]
        finally:
            network.unet.conv_in = conv_in
    torch.testing.assert_close(ours[:1], explicit[:1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1:], plain[1:], atol=1e-5, rtol=1e-5)
    assert (ours[:1] - plain[:1]).abs().max() > 1e-3  # the pose changes the prediction


def test_windows_are_led_by_frame_zero_and_fused_with_triangular_weights():
    windows = window_indices(10, 4, 2)
    assert windows == [[0, 1, 2, 3], [0, 3, 4, 5], [0, 5, 6, 7], [0, 7, 8, 9]]
    assert window_indices(9, 4, 1) == [[0, 1, 2, 3], [0, 4, 5, 6], [0, 6, 7, 8]]
    assert window_indices(3, 4, 2) == [[0, 1, 2]]
    torch.testing.assert_close(fusion_weights(4), torch.tensor([0.25, 0.75, 0.75, 0.25],
                                                               dtype=torch.float64))
    # window k predicts the constant k + 1 everywhere: each frame gets the weighted mean
    fused = fuse(windows, 10, lambda index: torch.full((1, len(index), 1), 1.0 + windows.index(
        index), dtype=torch.float64))[0, :, 0]
    expected = torch.tensor([
        (1 + 2 + 3 + 4) / 4,  # frame 0: position 0 of every window, equal weights
        1, 1,
        (0.25 * 1 + 0.75 * 2) / 1.0,  # frame 3: last of window 1, second of window 2
        2,
        (0.25 * 2 + 0.75 * 3) / 1.0,
        3,
        (0.25 * 3 + 0.75 * 4) / 1.0,
        4, 4], dtype=torch.float64)
    torch.testing.assert_close(fused, expected)


@pytest.fixture(scope="module")
def imported_8x(tmp_path_factory, checkpoint):
    """An imported teacher whose VAE downsamples 8× like SVD's, so poses line up."""
    from posecast.mimicmotion.importer import import_mimicmotion

    svd = _write_svd(tmp_path_factory.mktemp("svd8"), vae_blocks=4)
    out = tmp_path_factory.mktemp("models8") / "mimicmotion"
    import_mimicmotion(out, str(svd), str(checkpoint[0]))
    config = json.loads((out / "config.json").read_text())
    config["recipe"].update(height=64, width=64)  # CPU-sized frames (a latent grid of 8 × 8)
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_the_teacher_command_samples_a_mimicmotion_folder(run_cli, tmp_path, imported_8x,
                                                         portrait_path, talking_video,
                                                         speech_path, monkeypatch):
    """`posecast teacher` through the family seam: DWPose maps of the portrait's pose then
    the driving poses, one window, the reference's frame dropped; exact length with audio."""
    import posecast.pose.dwpose as dwpose
    from posecast.media import iter_video_frames, probe_video
    from posecast.media.ffmpeg import decode_audio
    from posecast.pose.extract import extract_video

    poses = tmp_path / "poses.npz"
    extract_video(talking_video).save(poses)
    fitted = []  # issue 34 (item 5): the family's default alignment is MimicMotion's own
    fit = dwpose.whole_video_alignment
    monkeypatch.setattr(dwpose, "whole_video_alignment",
                        lambda *args: fitted.append(1) or fit(*args))
    out = tmp_path / "mm.mp4"
    result = run_cli("teacher", portrait_path, "--poses", poses, "-o", out, "--model",
                     imported_8x, "--steps", "2", "--size", "64x64", "--audio", speech_path,
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    info = probe_video(out)
    frames = sum(1 for _ in iter_video_frames(out, info))
    audio_seconds = len(decode_audio(speech_path, 16000)) / 16000
    assert (info.width, info.height, info.has_audio) == (64, 64, True)
    assert info.fps == 12.5 and abs(frames / info.fps - audio_seconds) <= 1 / info.fps
    assert fitted == [1]
    result = run_cli("teacher", portrait_path, "--poses", poses, "-o", tmp_path / "x.mp4",
                     "--model", imported_8x, "--size", "100x64", "--device", "cpu")
    assert result.code == 2 and "multiples of 64" in result.stderr
    out = tmp_path / "sparse.mp4"
    result = run_cli("teacher", portrait_path, "--poses", poses, "-o", out, "--model",
                     imported_8x, "--steps", "1", "--size", "64x64", "--attention",
                     "input_aware", "--k-frames", "2", "--device", "cpu")
    assert result.code == 0, result.stderr
    # issue 34 (item 6): every 2nd driving pose, as MimicMotion samples 25 fps video
    assert sum(1 for _ in iter_video_frames(out)) == 6 and probe_video(out).fps == 12.5


def test_render_refuses_a_mimicmotion_teacher(run_cli, tmp_path, imported, speech_path,
                                              portrait_path):
    result = run_cli("render", speech_path, portrait_path, "-o", tmp_path / "x.mp4", "--model",
                     imported, "--device", "cpu")
    assert result.code == 2 and "is a teacher" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dwpose_maps_follow_openpose_conventions():
    """The neck is the shoulders' midpoint; limb 0 (neck → right shoulder) is drawn in
    DWPose's first colour (pure blue once its BGR canvas is read as RGB), dimmed and thin (it
    is 8 px wide on the 2,160-px canvas); undetected parts draw nothing."""
    from posecast.pose.dwpose import COLOURS, draw_dwpose, openpose_body
    from posecast.pose.keypoints import Keypoints

    keypoints = Keypoints.empty(1, 256, 256)
    body = keypoints.body.copy()
    body[0, 12] = (80, 100, 1)  # right shoulder (image left)
    body[0, 11] = (176, 100, 1)  # left shoulder
    keypoints = Keypoints(body, keypoints.face, keypoints.left_hand, keypoints.right_hand,
                          25.0, 256, 256)
    op = openpose_body(body[0])
    assert tuple(op[1]) == (128, 100, 1) and tuple(op[2]) == (80, 100, 1)
    image = draw_dwpose(keypoints, 256, 256)[0]
    middle = image[100, 104].astype(int)  # between neck (128) and right shoulder (80)
    assert COLOURS[0] == (0, 0, 255) and middle[0] == middle[1] == 0
    assert 40 < middle[2] <= 0.6 * 255 + 1
    assert image[200:, :].max() == 0  # no hips, legs, hands or face: nothing drawn there
    assert draw_dwpose(Keypoints.empty(1, 64, 64), 64, 64).max() == 0


def test_bench_teacher_times_mimicmotion_windows(run_cli):
    """The real-size bench's code path on the tiny UNet (random weights built on the meta
    device): one row per window length."""
    result = run_cli("bench", "teacher", "--preset", "mimicmotion-tiny", "--size", "128x64",
                     "--frames", "2,3", "--repeats", "1", "--device", "cpu")
    assert result.code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.strip().startswith("│")]
    assert len(rows) == 4 and "2 M" in rows[0]  # dense and input-aware, two windows each
    assert "input-aware" in rows[2] and "input-aware" in rows[3]
    result = run_cli("bench", "teacher", "--preset", "mimicmotion-huge", "--device", "cpu")
    assert result.code == 2 and "unknown preset" in result.stderr


def _unet_inputs(frames: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, frames, 8, 8, 8, generator=g), torch.randn(2, 1, 32, generator=g),
            torch.tensor([[6.0, 127.0, 0.0]] * 2))


@pytest.mark.parametrize("k_frames", [0, 2])
def test_input_aware_attention_in_the_unet_equals_its_dense_oracle(k_frames):
    """The spatial self-attentions made joint over 4 frames under pose masks (levels 0 and 1
    of the tiny UNet): the gather backend equals the dense masked oracle; with K = 0 every
    token sees only its own frame, which is the plain UNet; with K = 2 the output differs
    from it (the cross-frame attention is live)."""
    from synthetic import synthetic_clip

    from posecast.mimicmotion.attention import InputAwareSettings, InputAwareUNet

    torch.manual_seed(4)
    network = MimicMotion(_unet_config()).eval()
    _, poses = synthetic_clip(64, 4, 25.0, np.random.default_rng(1))  # 64 px = 8 × 8 latent
    sample, embeddings, time_ids = _unet_inputs(4)
    with torch.no_grad():
        plain = network(sample, 10.0, embeddings, time_ids)
        outputs = {}
        for backend in ("dense", "gather"):
            joint = InputAwareUNet(network, InputAwareSettings(k_frames=k_frames, levels=(0, 1),
                                                               backend=backend))
            with joint.window(poses, (8, 8)):
                outputs[backend] = network(sample, 10.0, embeddings, time_ids)
    torch.testing.assert_close(outputs["gather"], outputs["dense"], atol=1e-5, rtol=1e-5)
    if k_frames == 0:
        torch.testing.assert_close(outputs["dense"], plain, atol=1e-5, rtol=1e-5)
    else:
        assert (outputs["dense"] - plain).abs().max() > 1e-4


def test_the_svd_loss_inverts_the_samplers_parametrisation(imported_8x):
    """The loss's denoiser D(x) = c_skip·x + c_out·F(c_in·x, ¼ ln σ) is what SVD's scheduler
    takes as its clean prediction: for the same network output, D(x) equals the scheduler's
    x₀ at that σ (so fine-tuning trains what `teacher` samples)."""
    from diffusers import EulerDiscreteScheduler

    from posecast.diffusion.edm import edm_scalings

    teacher = load_teacher(imported_8x)
    scheduler = EulerDiscreteScheduler.from_config(teacher.scheduler_config)
    scheduler.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 4, 8, 8, generator=g)
    output = torch.randn(1, 2, 4, 8, 8, generator=g)
    for index in (0, 3):
        scheduler._step_index = index
        sigma = scheduler.sigmas[index]
        step = scheduler.step(output, scheduler.timesteps[index], x)
        c_in, c_skip, c_out, c_noise = edm_scalings(sigma)
        torch.testing.assert_close(c_skip * x + c_out * output, step.pred_original_sample)
        torch.testing.assert_close(scheduler.timesteps[index], c_noise, atol=1e-4, rtol=1e-4)
        scheduler._step_index = index  # step() moved it on
        torch.testing.assert_close(c_in * x, scheduler.scale_model_input(x, scheduler.timesteps[
            index]))


def test_a_fine_tune_runs_and_resumes_exactly(tmp_path, imported_8x, synthetic_dataset):
    """Two steps straight through, and one step then --resume for the second, give the same
    weights bit for bit (input-aware attention and the region loss on); the result is a
    MimicMotion model folder the teacher loads."""
    from posecast.mimicmotion.train import FineTuneConfig, fine_tune

    settings = FineTuneConfig(max_steps=2, batch_size=1, frames=3, learning_rate=1e-3,
                              checkpoint_every=1, attention="input_aware", k_frames=2,
                              region_alphas={"face": 2.0})
    straight = fine_tune(synthetic_dataset, tmp_path / "straight", str(imported_8x),
                         settings, device="cpu")
    fine_tune(synthetic_dataset, tmp_path / "split", str(imported_8x),
              FineTuneConfig(**{**settings.__dict__, "max_steps": 1}), device="cpu")
    split = fine_tune(synthetic_dataset, tmp_path / "split", str(imported_8x), settings,
                      resume=True, device="cpu")
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    original = load_file(imported_8x / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[key], original[key].float()) for key in a)  # it trained
    losses = [json.loads(line)["loss"] for line in (straight / "train_log.jsonl").open()]
    assert len(losses) == 2 and all(np.isfinite(losses))
    tuned = load_teacher(straight)
    assert json.loads((straight / "config.json").read_text())["attention"] == \
        {"mode": "input_aware", "k_frames": 2, "levels": [1, 2, 3]}
    assert tuned.recipe.window == 72
    from posecast.families import load_teacher as load_family

    family = load_family(str(straight), torch.device("cpu"))  # samples as it was trained
    assert family.attention is not None and family.attention.settings.k_frames == 2


def test_posecast_train_fine_tunes_a_mimicmotion_folder(run_cli, tmp_path, imported_8x,
                                                        synthetic_dataset):
    """`posecast train --init-from MIMICMOTION` takes the family's fine-tune; `--resume`
    finds it again from the checkpoint alone."""
    out = tmp_path / "tuned"
    common = ["--batch-size", "1", "--frames", "3", "--checkpoint-every", "1", "--device", "cpu"]
    result = run_cli("train", synthetic_dataset, "--init-from", imported_8x, "--output", out,
                     "--max-steps", "1", "--attention", "input_aware", *common)
    assert result.code == 0, result.stderr
    result = run_cli("train", synthetic_dataset, "--output", out, "--max-steps", "2", "--resume",
                     *common)
    assert result.code == 0, result.stderr
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").open()]
    assert steps == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "mimicmotion" and config["attention"]["mode"] == "input_aware"


def test_the_recipe_is_configurable_and_checked(run_cli, tmp_path, imported, portrait_path,
                                               talking_video):
    """--recipe KEY=VALUE sets MimicMotion's sampling (a 4-frame window overlapping by 1 on
    13 frames: 4 windows × 1 step model calls); bad keys and values are one-line errors; the
    DiT family refuses --recipe."""
    from posecast.families import load_teacher as load_family
    from posecast.pose.extract import extract_video

    family = load_family(str(imported), torch.device("cpu"))
    family.configure({"window": "4", "overlap": "1", "min_guidance": "1.5"})
    assert (family.recipe.window, family.recipe.overlap, family.recipe.min_guidance) == \
        (4, 1, 1.5)
    assert family.model_calls(12, 1, 2.0) == len(window_indices(13, 4, 1)) == 4
    poses = tmp_path / "poses.npz"
    extract_video(talking_video).save(poses)
    common = ["teacher", portrait_path, "--poses", poses, "-o", tmp_path / "x.mp4", "--model",
              imported, "--device", "cpu"]
    for bad, message in ((["--recipe", "colour=3"], "not a sampling setting"),
                         (["--recipe", "window=big"], "not a number"),
                         (["--recipe", "window"], "KEY=VALUE"),
                         (["--recipe", "overlap=9", "--recipe", "window=4"], "overlap")):
        result = run_cli(*common, *bad)
        assert result.code == 2 and message in result.stderr, (bad, result.stderr)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_torchrun_fine_tunes_the_same_with_and_without_fsdp(tmp_path, imported_8x,
                                                            synthetic_dataset):
    """Two processes with averaged gradients (DDP), and the same with the network sharded
    (FSDP2), fine-tune the same weights; the sharded run resumes. Adam's first step moves each
    weight by about lr·sign(gradient), so where a gradient is near zero the two reduction
    orders may move it differently: the weights must agree to half a step (5e-4), which
    unsynchronised shards (each rank stepping on its own gradient) would not."""

    common = [synthetic_dataset, "--init-from", imported_8x, "--max-steps", "1", "--frames",
              "3", "--batch-size", "1", "--checkpoint-every", "1", "--learning-rate", "1e-3",
              "--device", "cpu"]
    plain = torchrun("train", [*common, "--output", tmp_path / "ddp"], 29541)
    assert plain.returncode == 0, plain.stderr[-3000:]
    sharded = torchrun("train", [*common, "--output", tmp_path / "fsdp", "--fsdp"], 29542)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("ddp", "fsdp"))
    original = load_file(imported_8x / "model.safetensors")
    assert a.keys() == b.keys() == original.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=5e-4, rtol=0)
    assert any(not torch.equal(a[key], original[key].float()) for key in a)
    resumed = torchrun("train", [synthetic_dataset, "--output", tmp_path / "fsdp", "--max-steps",
                                 "2", "--frames", "3", "--batch-size", "1", "--device", "cpu",
                                 "--fsdp", "--resume"], 29543)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "fsdp" / "checkpoint" / "state.json").read_text())["step"] \
        == 2


def test_the_teacher_decodes_with_the_reference_frame_then_drops_it(imported_8x, monkeypatch):
    """Issue 34 (item 1): Tencent's pipeline decodes every latent, frame 0 (the reference's)
    included, in chunks of decode_chunk, then drops frame 0; decoding without it shifted every
    chunk of the temporal decoder by one frame. Oracle: the VAE called by hand on those chunks."""
    from posecast.families import load_teacher
    from posecast.mimicmotion import sampling
    from posecast.pose.keypoints import Keypoints

    teacher = load_teacher(str(imported_8x), torch.device("cpu"))
    teacher.configure({"decode_chunk": "3"})
    poses = Keypoints.load(EXAMPLES / "astronaut_poses.npz")[:5]
    portrait_keypoints = Keypoints.load(EXAMPLES / "astronaut_keypoints.npz")
    latents = torch.randn(1, 6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(sampling, "sample_latents", lambda *args, **kwargs: latents)
    portrait = np.full((64, 64, 3), 128, np.uint8)
    made = list(teacher.frames(portrait, poses, portrait_keypoints, 1, 1.0, 0))

    vae = teacher.teacher.vae
    scaled = latents[0] / vae.config.scaling_factor
    with torch.no_grad():  # chunks [0, 1, 2] and [3, 4, 5], then frame 0 dropped
        decoded = torch.cat([vae.decode(scaled[i:i + 3], num_frames=3).sample
                             for i in (0, 3)])
    expected = ((decoded[1:].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
    assert len(made) == 5
    for frame, wanted in zip(made, expected.numpy(), strict=True):
        assert np.abs(frame.astype(int) - wanted.astype(int)).max() <= 1


def test_dwpose_maps_keep_dwposes_confidence_rules():
    """Issue 34 (item 4): DWPose draws a body joint only above 0.3 and gives the neck
    confidence 1 when both shoulders are above 0.3 (0 otherwise); posecast drew any joint
    above 0 and gave the neck the lower shoulder's confidence, dimming it. Drawn at DWPose's
    own canvas size (no resize), so the dots' pixels are their colours exactly."""
    from posecast.pose.dwpose import COLOURS, draw_frame
    from posecast.pose.keypoints import Keypoints

    empty = Keypoints.empty(1, 2160, 2160)
    body = empty.body[0].copy()
    body[11] = (800, 1000, 0.5)  # left shoulder (OpenPose 5)
    body[12] = (1400, 1000, 0.6)  # right shoulder (OpenPose 2)
    body[0] = (1100, 300, 0.25)  # the nose, not sure enough
    canvas = draw_frame(body, empty.face[0], empty.left_hand[0], empty.right_hand[0], 2160,
                        2160)
    assert tuple(canvas[1000, 1100]) == COLOURS[1]  # the neck, at full confidence
    assert tuple(canvas[1000, 1400]) == tuple(int(c * 0.6) for c in COLOURS[2])
    assert not canvas[280:320, 1080:1120].any()  # no nose dot, no neck-nose limb
    body[11, 2] = 0.29  # a shoulder below the threshold: no neck, no shoulder limbs to it
    canvas = draw_frame(body, empty.face[0], empty.left_hand[0], empty.right_hand[0], 2160,
                        2160)
    assert not canvas[990:1010, 1090:1110].any() and not canvas[990:1010, 790:810].any()


def test_mimicmotion_turns_its_frame_to_the_portrait(run_cli, tmp_path, imported_8x,
                                                     portrait_path):
    """Issue 34 (item 2): Tencent's inference renders a reference taller than wide at
    576×1024 and any other (a square one too) at 1024×576; posecast's own teachers keep their
    size. Through the CLI: a landscape portrait, no --size, a lying frame; --size wins."""
    import shutil

    import soundfile

    from posecast.assets import starter_teacher
    from posecast.families import load_teacher
    from posecast.media import load_portrait, probe_video

    teacher = load_teacher(str(imported_8x), torch.device("cpu"))
    teacher.resize(128, 64)
    for (height, width), frame in (((300, 200), (128, 64)), ((200, 300), (64, 128)),
                                   ((256, 256), (64, 128)), ((301, 300), (128, 64))):
        teacher.orient(height, width)
        assert (teacher.height, teacher.width) == frame, (height, width)
    own = load_teacher(str(starter_teacher()), torch.device("cpu"))
    size = (own.height, own.width)
    own.orient(100, 300)
    assert (own.height, own.width) == size

    folder = tmp_path / "upright"  # the tiny import with an upright 64×128 frame
    shutil.copytree(imported_8x, folder)
    config = json.loads((folder / "config.json").read_text())
    config["recipe"].update(height=128, width=64)
    (folder / "config.json").write_text(json.dumps(config))
    landscape = tmp_path / "landscape.png"  # 512 wide, 300 tall, the face kept
    Image.fromarray(load_portrait(portrait_path)[80:380]).save(landscape)
    audio = tmp_path / "a.wav"
    soundfile.write(audio, np.zeros(4000, np.float32), 16_000)  # 0.25 s: 4 frames
    poses = EXAMPLES / "astronaut_poses.npz"
    for extra, frame in (((), (128, 64)), (("--size", "64x128"), (64, 128))):
        out = tmp_path / f"t{len(extra)}.mp4"
        result = run_cli("teacher", landscape, "--poses", poses, "-o", out, "--model", folder,
                         "--steps", "1", "--audio", audio, "--device", "cpu", *extra)
        assert result.code == 0, result.stderr
        info = probe_video(out)
        assert (info.width, info.height) == frame


def test_split_guidance_halves_the_batch_and_keeps_the_latents(imported_8x):
    """Issue 34 (item 8): the guidance's conditional and unconditional halves as two batch-1
    calls (`--recipe split_guidance=1`, as Tencent's inference runs them: about half the
    activations) give the latents of one batch of 2, with twice the calls."""
    from posecast.families import load_teacher as load_teacher_for_cli
    from posecast.mimicmotion.sampling import sample_latents

    teacher = load_teacher(imported_8x)
    portrait = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    maps = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    batches = []
    hook = teacher.network.register_forward_pre_hook(
        lambda module, args: batches.append(args[0].shape[0]))
    runs = {}
    try:
        for split in (0, 1):
            recipe = teacher.recipe.replace(window=4, overlap=1, steps=2, min_guidance=1.5,
                                            max_guidance=2.5, split_guidance=split)
            batches.clear()
            latents = sample_latents(teacher, portrait, maps, torch.Generator().manual_seed(7),
                                     recipe=recipe)
            runs[split] = (latents, list(batches))
    finally:
        hook.remove()
    # the same sums in another order (batch-1 or batch-2 kernels): float32 rounding, which
    # the first step scales by SVD's largest sigma (700) into the latents (5e-5 seen)
    difference = (runs[1][0] - runs[0][0]).abs().max() / runs[0][0].abs().max()
    assert difference < 5e-4, float(difference)
    assert set(runs[0][1]) == {2} and set(runs[1][1]) == {1}
    assert len(runs[1][1]) == 2 * len(runs[0][1])
    # out of memory, `posecast teacher` names the split first, while it is not on
    sampler = load_teacher_for_cli(str(imported_8x), torch.device("cpu"))
    assert "--recipe split_guidance=1" in sampler.memory_hint()
    sampler.configure({"split_guidance": "1"})
    assert "split_guidance" not in sampler.memory_hint()


def test_driving_poses_are_sampled_near_15_fps_for_mimicmotion_only(imported_8x):
    """Issue 34 (item 6): Tencent's inference takes every `sample_stride` (2) × max(1,
    int(fps / 24)) driving frame, so the model sees about 15 fps of motion as in training;
    posecast's own teacher keeps the driving rate. Rates worked out by hand from that rule."""
    from posecast.assets import starter_teacher
    from posecast.families import load_teacher

    mimicmotion = load_teacher(str(imported_8x), torch.device("cpu"))
    rates = {30: 15, 25: 12.5, 24: 12, 60: 15, 50: 12.5, 72: 12, 10: 5}
    assert {fps: mimicmotion.frame_rate(fps) for fps in rates} == rates
    own = load_teacher(str(starter_teacher()), torch.device("cpu"))
    assert own.frame_rate(30) == 30 and own.frame_rate(25) == 25
    # item 5: and each puts driving poses on the portrait its own way by default (--align)
    assert (mimicmotion.alignment, own.alignment) == ("whole-video", "upper-body")
