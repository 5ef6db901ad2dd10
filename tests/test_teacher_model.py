from __future__ import annotations

import json

import pytest
import torch

from posecast.config import PRESETS, DenoiserConfig, preset
from posecast.dit.denoiser import Denoiser
from posecast.errors import UsageError


def _inputs(config: DenoiserConfig, batch: int = 2, frames: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = config.latent_size
    c = config.codec.latent_channels
    return (torch.randn(batch, frames, c, h, w, generator=g), torch.rand(batch, generator=g),
            torch.randn(batch, c, h, w, generator=g),
            torch.rand(batch, frames, 3, config.height, config.width, generator=g))


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised layers weights, so every input path matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_config_round_trip(tmp_path):
    for name, config in PRESETS.items():
        path = tmp_path / f"{name}.json"
        config.save(path)
        assert DenoiserConfig.load(path) == config
        json.loads(path.read_text())
    with pytest.raises(ValueError, match="colour is not a known field"):
        DenoiserConfig.from_dict({"height": 32, "colour": "red"})
    with pytest.raises(ValueError, match="patch_size 4 does not divide"):
        preset("tiny", height=34)
    with pytest.raises(UsageError, match="unknown preset"):
        preset("huge")


def test_preset_sizes():
    assert PRESETS["base"].token_grid == (32, 32)  # 1,024 tokens per frame
    assert PRESETS["small"].token_grid == (16, 16)
    with torch.device("meta"):
        base = sum(p.numel() for p in Denoiser(PRESETS["base"]).parameters())
    assert 0.9e9 < base < 1.2e9


def test_denoiser_shapes_and_reference_frame():
    for reference_frame in (False, True):
        config = preset("tiny", reference_frame=reference_frame)
        model = _randomise(Denoiser(config))
        noisy, t, reference, maps = _inputs(config)
        out = model(noisy, t, reference, maps)
        assert out.shape == noisy.shape and torch.isfinite(out).all()


def test_every_input_matters():
    config = preset("tiny")
    model = _randomise(Denoiser(config)).eval()
    noisy, t, reference, maps = _inputs(config)
    base = model(noisy, t, reference, maps)
    assert not torch.allclose(base, model(noisy, t, reference + 1, maps))
    assert not torch.allclose(base, model(noisy, t, reference, maps.flip(-1)))
    assert not torch.allclose(base, model(noisy, t * 0.5, reference, maps))
    # attention mixes frames: changing frame 0 changes frame 2's output
    changed = noisy.clone()
    changed[:, 0] += 1
    assert not torch.allclose(base[:, 2], model(changed, t, reference, maps)[:, 2])


def test_dropping_the_condition_equals_zero_reference_and_pose():
    config = preset("tiny")
    model = _randomise(Denoiser(config)).eval()
    noisy, t, reference, maps = _inputs(config)
    keep = torch.tensor([True, False])
    dropped = model(noisy, t, reference, maps, keep)
    manual = model(noisy, t, reference * keep[:, None, None, None].float(),
                   maps * keep[:, None, None, None, None].float())
    torch.testing.assert_close(dropped, manual)
    torch.testing.assert_close(dropped[:1], model(noisy, t, reference, maps)[:1])


def test_gradient_checkpointing_gives_the_same_gradients():
    config = preset("tiny")
    grads = []
    for checkpointing in (False, True):
        model = _randomise(Denoiser(config)).train()
        model.gradient_checkpointing = checkpointing
        model(*_inputs(config)).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
