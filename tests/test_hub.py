from __future__ import annotations

import os

import pytest
import torch

from posecast.config import CodecConfig, preset
from posecast.dit.denoiser import Denoiser
from posecast.dit.pretrained import from_pretrained, save_pretrained
from posecast.errors import InputError, PosecastError, UsageError
from posecast.hub import resolve_folder


def _hf_cache(root, repo_id: str, files: dict[str, bytes], revision: str = "a" * 40):
    """Lay out `files` the way huggingface_hub caches a snapshot of `repo_id`."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_save_load_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = Denoiser(preset("tiny", reference_frame=True))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    folder = save_pretrained(model, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [".posecast.json", "README.md",
                                                         "config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():  # readable like any new file (safetensors writes 0600)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
    loaded = from_pretrained(folder)
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_loads_offline_from_the_hf_cache(tmp_path, offline_cache):
    model = Denoiser(preset("tiny"))
    folder = save_pretrained(model, tmp_path / "model")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    _hf_cache(offline_cache, "posecast/tiny-test", files)
    loaded = from_pretrained("posecast/tiny-test")
    assert loaded.config == model.config


def test_hub_errors_are_one_line(tmp_path, offline_cache, monkeypatch):
    with pytest.raises(PosecastError, match="not in the local Hugging Face cache") as caught:
        from_pretrained("posecast/does-not-exist")
    assert "\n" not in str(caught.value) and "HF_HUB_OFFLINE" in str(caught.value)
    with pytest.raises(UsageError, match="no such model folder"):
        from_pretrained(tmp_path / "missing" / "folder")

    import huggingface_hub
    from huggingface_hub import errors

    for error, words in ((errors.RepositoryNotFoundError, "no such model on the Hugging Face"),
                         (errors.GatedRepoError, "gated")):
        def fail(*args, error=error, **kwargs):
            simulated = error.__new__(error)  # as the Hub client raises it, minus an HTTP reply
            Exception.__init__(simulated, "simulated")
            raise simulated

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
        with pytest.raises(PosecastError, match=words) as caught:
            resolve_folder("someone/missing-model")
        assert "\n" not in str(caught.value)


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text('{"height": 32, "favourite": 1}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="favourite is not a known field"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(InputError, match="not a posecast model folder"):
        from_pretrained(tmp_path)


def test_vae_codec_from_the_hf_cache(tmp_path, offline_cache):
    from diffusers import AutoencoderKL, AutoencoderTiny

    from posecast.dit.codecs import make_codec

    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                        norm_num_groups=4, layers_per_block=1)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                           latent_channels=4, upsampling_scaling_factor=2)
    tiny.save_pretrained(tmp_path / "taesd", safe_serialization=True)
    _hf_cache(offline_cache, "test/vae", {f"vae/{p.name}": p.read_bytes()
                                          for p in (tmp_path / "vae").iterdir()})
    codec_config = CodecConfig(kind="vae", repo="test/vae", subfolder="vae", latent_channels=4,
                               downsample=2, scaling_factor=0.5,
                               fast_decoder_repo=str(tmp_path / "taesd"))
    frames = torch.rand(3, 3, 16, 16) * 2 - 1
    for fast in (False, True):
        codec = make_codec(codec_config, fast_decode=fast)
        latents = codec.encode(frames)
        assert latents.shape == (3, 4, 8, 8)
        decoded = codec.decode(latents)
        assert decoded.shape == frames.shape and decoded.abs().max() <= 1
    config = preset("tiny", codec=codec_config, height=16, width=16, patch_size=2,
                    pose_guider_channels=(8, 8))
    out = Denoiser(config)(latents[None], torch.rand(1), latents[0:1], torch.rand(1, 3, 3, 16, 16))
    assert out.shape == (1, 3, 4, 8, 8)


def _two_revisions(cache, repo_id: str, tmp_path):
    """A cached repo whose main and v1 hold different models (depth 2 and depth 1)."""
    models = {}
    for name, depth, commit in (("main", 2, "a" * 40), ("v1", 1, "b" * 40)):
        model = Denoiser(preset("tiny", depth=depth))
        folder = save_pretrained(model, tmp_path / name)
        snapshot = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for path in folder.iterdir():
            (snapshot / path.name).write_bytes(path.read_bytes())
        refs = snapshot.parent.parent / "refs"
        refs.mkdir(exist_ok=True)
        (refs / name).write_text(commit)
        models[name] = model
    return models


def test_from_pretrained_takes_revision_cache_dir_and_local_files_only(tmp_path, monkeypatch):
    """As huggingface_hub's from_pretrained: a revision picks the snapshot, cache_dir names
    the cache, local_files_only keeps to it (without HF_HUB_OFFLINE)."""
    cache = tmp_path / "elsewhere"
    _two_revisions(cache, "posecast/tiny-test", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    options = {"cache_dir": cache, "local_files_only": True}
    assert from_pretrained("posecast/tiny-test", **options).config.depth == 2
    assert from_pretrained("posecast/tiny-test", "v1", **options).config.depth == 1
    with pytest.raises(PosecastError, match="not in the local Hugging Face cache"):
        from_pretrained("posecast/tiny-test", "v2", **options)  # no network tried
    with pytest.raises(PosecastError, match="not in the local Hugging Face cache"):
        from_pretrained("posecast/tiny-test", local_files_only=True)  # HF_HUB_CACHE is empty


def test_revision_on_the_command_line(run_cli, tmp_path, offline_cache, synthetic_dataset):
    """`--revision` picks the snapshot `--init-from` starts from, and the exported card names
    the repo and the revision."""
    _two_revisions(offline_cache, "posecast/tiny-test", tmp_path)
    out = tmp_path / "run"
    result = run_cli("train", synthetic_dataset, "--init-from", "posecast/tiny-test",
                     "--revision", "v1", "--output", out, "--max-steps", "1", "--batch-size", "1",
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    assert from_pretrained(out).config.depth == 1  # v1's architecture, not main's
    assert run_cli("export", out, tmp_path / "exported").code == 0
    card = (tmp_path / "exported" / "README.md").read_text()
    assert "base_model: posecast/tiny-test" in card
    assert "fine-tuned from `posecast/tiny-test` at revision `v1`" in card
    result = run_cli("teacher", tmp_path / "me.png", "-o", tmp_path / "x.mp4", "--poses",
                     tmp_path / "p.npz", "--revision", "v1")
    assert result.code == 2 and "--revision needs --model" in result.stderr


@pytest.fixture
def asked(monkeypatch):
    """Every Hub snapshot asked for, as (repo id, revision); the lookup then fails as an
    uncached repo does offline (one line), so the command stops there."""
    import huggingface_hub
    from huggingface_hub import errors

    seen = []

    def snapshot_download(repo_id, revision=None, **_):
        seen.append((repo_id, revision))
        raise errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return seen


def test_every_hub_id_a_command_takes_has_its_revision(run_cli, tmp_path, asked,
                                                       portrait_path, speech_path):
    """Issue 35 (item 7): --revision was missing on `render --motion`, `motion --motion`,
    `bench render --model/--teacher` and `distill --perceptual`; each now reaches the Hub
    lookup, and a revision beside a local folder is refused."""
    from posecast.train.perceptual import load_perceptual_terms

    inputs = (speech_path, portrait_path)
    cases = [
        (("render", *inputs, "-o", tmp_path / "a.mp4", "--motion", "me/motion",
          "--motion-revision", "v1", "--device", "cpu"), ("me/motion", "v1")),
        (("motion", *inputs, "-o", tmp_path / "a.npz", "--motion", "me/motion",
          "--motion-revision", "v2"), ("me/motion", "v2")),
        (("bench", "render", "--model", "me/student", "--revision", "v3", "--device", "cpu"),
         ("me/student", "v3")),
        (("bench", "render", "--teacher", "me/teacher", "--teacher-revision", "v4",
          "--preset", "tiny", "--device", "cpu"), ("me/teacher", "v4")),
    ]
    for args, wanted in cases:
        result = run_cli(*args)
        assert result.code == 1 and "not in the local Hugging Face cache" in result.stderr, \
            (args, result.stderr)
        assert asked[-1] == wanted, args
    messages = []
    assert load_perceptual_terms(("lpips=me/lpips@v5:0.5",), torch.device("cpu"),
                                 messages.append) == []
    assert asked[-1] == ("me/lpips", "v5") and "skipped" in messages[0]
    result = run_cli("motion", *inputs, "-o", tmp_path / "b.npz", "--motion", tmp_path,
                     "--motion-revision", "v1")
    assert result.code == 2 and "is a local folder, which has no revisions" in result.stderr
