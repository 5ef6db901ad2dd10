"""`posecast import lpips`: the published VGG16 and LPIPS weights → the perceptual plug-in's
safetensors, tested on random weights in the published files' key layout."""

from __future__ import annotations

import pytest
import torch

from posecast.train.perceptual import LPIPS_FILE, load_perceptual_terms

# torchvision's vgg16: features.<index> for its 13 convolutions, (in, out) channels
VGG16_CONVOLUTIONS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
                      12: (256, 256), 14: (256, 256), 17: (256, 512), 19: (512, 512),
                      21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
LPIPS_CHANNELS = (64, 128, 256, 512, 512)  # lin0 … lin4: relu1_2 … relu5_3


def _published(folder, head_prefix: str = "model.1"):
    """Random weights saved like vgg16-397923af.pth and LPIPS' v0.1 vgg.pth."""
    generator = torch.Generator().manual_seed(0)
    vgg = {}
    for index, (channels_in, channels_out) in VGG16_CONVOLUTIONS.items():
        vgg[f"features.{index}.weight"] = 0.05 * torch.randn(channels_out, channels_in, 3, 3,
                                                             generator=generator)
        vgg[f"features.{index}.bias"] = 0.01 * torch.randn(channels_out, generator=generator)
    for index in (0, 3, 6):  # the classifier, which LPIPS does not use (small stand-ins for
        vgg[f"classifier.{index}.weight"] = torch.zeros(4, 4)  # its 4096-wide layers)
        vgg[f"classifier.{index}.bias"] = torch.zeros(4)
    lin = {f"lin{tap}.{head_prefix}.weight": torch.rand(1, channels, 1, 1, generator=generator)
           for tap, channels in enumerate(LPIPS_CHANNELS)}
    torch.save(vgg, folder / "vgg16-397923af.pth")
    torch.save(lin, folder / "vgg.pth")
    return vgg, lin


@pytest.mark.parametrize("head_prefix", ["model.1", "model.0"])  # with and without dropout
def test_the_published_weights_become_the_plugin(run_cli, tmp_path, head_prefix):
    vgg, lin = _published(tmp_path, head_prefix)
    out = tmp_path / "lpips"
    result = run_cli("import", "lpips", tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth",
                     "--output", out)
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [".posecast.json", "README.md", LPIPS_FILE]
    (term,) = load_perceptual_terms((f"lpips={out}:0.5",), torch.device("cpu"))
    state = term.network.state_dict()
    assert len(state) == 2 * len(VGG16_CONVOLUTIONS) + len(LPIPS_CHANNELS)
    for index in VGG16_CONVOLUTIONS:
        for kind in ("weight", "bias"):
            key = f"features.{index}.{kind}"
            assert torch.equal(state[key], vgg[key]), key
    for tap in range(len(LPIPS_CHANNELS)):
        assert torch.equal(state[f"heads.{tap}.weight"], lin[f"lin{tap}.{head_prefix}.weight"])
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert term.network.distance_map(images, images).abs().max() == 0
    assert term.network.distance_map(images, images.flip(-1)).mean() > 0


class _Payload:  # a pickle that names a class: weights_only refuses it without running it
    pass


@pytest.mark.parametrize("damage,words", [
    (lambda vgg, lin: lin.pop("lin3.model.1.weight"), "lacks 'lin3.model.1.weight'"),
    (lambda vgg, lin: vgg.pop("features.14.bias"), "lacks 'features.14.bias'"),
    (lambda vgg, lin: vgg.update({"features.1.running_mean": torch.zeros(64)}),
     "not a convolution of VGG16"),  # vgg16_bn's layout
    (lambda vgg, lin: lin.update({"lin2.model.1.weight": torch.zeros(1, 64, 1, 1)}),
     "has shape (1, 64, 1, 1)"),
    (lambda vgg, lin: lin.update({"payload": _Payload()}), "refused without running it"),
])
def test_wrong_files_are_one_line_errors_and_write_nothing(run_cli, tmp_path, damage, words):
    vgg, lin = _published(tmp_path)
    damage(vgg, lin)
    torch.save(vgg, tmp_path / "vgg16-397923af.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    result = run_cli("import", "lpips", tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth",
                     "--output", tmp_path / "lpips")
    assert result.code != 0 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg.pth", "vgg16-397923af.pth"]
