from __future__ import annotations

import numpy as np
import pytest
import torch

from posecast.attention.backends import dense_attention, flex_attention_layout, gather_attention
from posecast.attention.layout import build_layout
from posecast.attention.mask import REGION_COUNT, build_mask, mask_for_window
from posecast.config import preset
from posecast.data.synthetic import synthetic_clip
from posecast.pose.regions import Region


def _random_mask(frames, rows, cols, k, chunk, reference, seed):
    rng = np.random.default_rng(seed)
    regions = rng.integers(0, REGION_COUNT, (frames, rows, cols))
    past = np.full((frames, k), -1)
    for t in range(1, frames):
        chosen = rng.permutation(t)[:k]
        past[t, : len(chosen)] = chosen
    reference_regions = rng.integers(0, REGION_COUNT, (rows, cols)) if reference else None
    return build_mask(regions, past, reference_regions, chunk, background_reach=seed % 2)


def _pose_mask(frames, grid, k, chunk, reference, seed):
    _, poses = synthetic_clip(64, frames, 25.0, np.random.default_rng(seed))
    config = preset("tiny", height=64, width=64, patch_size=64 // grid, k_frames=k,
                    reference_frame=reference, chunk=chunk, window=frames,
                    pose_guider_channels=(8,) * int(np.log2(64 // grid)))
    return mask_for_window(poses, config)


SETTINGS = [(3, 4, 5, 1, 0, False), (6, 8, 8, 2, 0, True), (8, 6, 6, 3, 2, False),
            (5, 7, 3, 8, 1, False)]


@pytest.mark.parametrize("frames,rows,cols,k,chunk,reference", SETTINGS)
def test_gather_equals_dense_outputs_and_gradients(frames, rows, cols, k, chunk, reference):
    for mask in (_random_mask(frames, rows, cols, k, chunk, reference, seed=frames),
                 _pose_mask(frames, 8, k, chunk, reference, seed=frames)):
        n = mask.tokens
        g = torch.Generator().manual_seed(n)
        q, k_, v = (torch.randn(2, 3, n, 8, generator=g, requires_grad=True) for _ in range(3))
        expected = dense_attention(q, k_, v, mask)
        got = gather_attention(q, k_, v, mask)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        weights = torch.randn(expected.shape, generator=g)
        grads_expected = torch.autograd.grad((expected * weights).sum(), (q, k_, v))
        grads_got = torch.autograd.grad((got * weights).sum(), (q, k_, v))
        for a, b in zip(grads_got, grads_expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert 0 < mask.density() < 1


@pytest.mark.parametrize("block_size", [16, 64, 128])
def test_layout_round_trips_and_its_block_table_is_exact(block_size):
    mask = _random_mask(6, 8, 10, 2, 0, True, seed=3)
    layout = build_layout(mask, block_size)
    x = torch.randn(2, mask.tokens, 4)
    torch.testing.assert_close(layout.unpermute(layout.permute(x)), x)
    assert layout.length % block_size == 0 and layout.key_valid.sum() == mask.tokens
    # every block is region-pure within one frame: one group per block
    groups = torch.cat([mask.token_groups, torch.tensor([-1])])[layout.gather_index]
    per_block = groups.view(-1, block_size)
    for row in per_block:
        assert len(set(row[row >= 0].tolist())) == 1
    # the table is the block reduction of the token mask, and every block is all-or-nothing
    token_mask = mask.token_mask()
    real = layout.gather_index < mask.tokens
    laid = torch.zeros(layout.length, layout.length, dtype=torch.bool)
    index = layout.gather_index[real]
    laid[np.ix_(real.numpy(), real.numpy())] = token_mask[index][:, index]
    valid = real[:, None] & real[None, :]
    blocks = layout.length // block_size
    any_allowed = laid.view(blocks, block_size, blocks, block_size).any(dim=(1, 3))
    all_allowed = (laid | ~valid).view(blocks, block_size, blocks, block_size).all(dim=(1, 3))
    assert torch.equal(any_allowed, layout.block_table)
    assert torch.equal(layout.block_table & all_allowed, layout.block_table)
    # capacity pads with empty blocks and keeps the shapes static
    padded = build_layout(mask, block_size, capacity=layout.length + 2 * block_size)
    assert padded.length == layout.length + 2 * block_size
    assert not padded.block_table[-2:].any() and not padded.block_table[:, -2:].any()


def _hand_made_regions(frames=4, rows=4, cols=4):
    regions = np.full((frames, rows, cols), Region.BACKGROUND)
    regions[:, 0, 1:3] = Region.FACE
    regions[:, 2, 0] = Region.LEFT_HAND
    regions[:, 2:, 1:3] = Region.BODY
    return regions


def test_semantics_on_hand_made_regions():
    regions = _hand_made_regions()
    past = np.array([[-1], [0], [0], [1]])  # frame 3 resembles frame 1, frame 2 frame 0
    mask = build_mask(regions, past)
    allowed = mask.token_mask()
    n = 16  # tokens per frame
    token = lambda t, r, c: t * n + r * 4 + c  # noqa: E731
    hand3 = token(3, 2, 0)
    seen = allowed[hand3].view(4, 4, 4)
    assert seen[3].all()  # its own frame, densely
    assert seen[1, 2, 0] and seen[1].sum() == 1  # only the hand of its selected frame
    assert not seen[0].any() and not seen[2].any()  # unselected frames: nothing
    background3 = token(3, 3, 3)
    assert allowed[background3].view(4, 16)[:3].sum() == 0  # background never crosses frames
    # nothing of a later frame is ever visible (the mask is causal), chunks or not
    for chunk in (0, 2):
        full = build_mask(regions, np.array([[-1], [0], [1], [2]]), chunk=chunk).token_mask()
        frame_of = torch.arange(4 * n) // n
        assert not (full & (frame_of[None, :] > frame_of[:, None])).any()


def test_reference_frame_tokens_see_only_their_own_region():
    regions = _hand_made_regions(frames=2)
    mask = build_mask(regions, np.array([[-1], [0]]), reference_regions=regions[0])
    allowed = mask.token_mask()  # tokens: reference (16) then frames 0 and 1
    face_query = 16 + 16 + 1  # frame 1, row 0, col 1: face
    reference_seen = allowed[face_query, :16].view(4, 4)
    assert torch.equal(reference_seen, torch.from_numpy(regions[0] == Region.FACE))
    assert not allowed[16 + 16 + 15, :16].any()  # background sees no reference tokens
    assert not allowed[:16, 16:].any()  # the reference frame sees only itself


@pytest.mark.slow
def test_flex_layout_equals_dense_on_cpu():
    """FlexAttention compiles on the CPU for inference (about 30 s here), which checks the
    BlockMask built from the block table; its speed is measured on a GPU by the benchmark."""
    mask = _random_mask(5, 6, 8, 2, 2, True, seed=0)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, mask.tokens, 16, generator=g) for _ in range(3))
    got = flex_attention_layout(q, k, v, build_layout(mask, 16))
    torch.testing.assert_close(got, dense_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_denoiser_runs_with_input_aware_attention():
    from posecast.models.denoiser import Denoiser

    torch.manual_seed(0)
    outputs = {}
    for backend in ("dense", "gather"):
        config = preset("tiny", attention="input_aware", attention_backend=backend,
                        reference_frame=True, height=64, width=64, patch_size=8,
                        pose_guider_channels=(8, 8, 8))
        model = Denoiser(config)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
                        * 0.05)
        _, poses = synthetic_clip(64, 4, 25.0, np.random.default_rng(1))
        masks = [mask_for_window(poses, config, poses[0])] * 2
        g = torch.Generator().manual_seed(2)
        noisy = torch.randn(2, 4, 3, 64, 64, generator=g)
        out = model(noisy, torch.rand(2, generator=g), torch.randn(2, 3, 64, 64, generator=g),
                    torch.rand(2, 4, 3, 64, 64, generator=g), layout=masks)
        out.square().mean().backward()
        outputs[backend] = out.detach()
    torch.testing.assert_close(outputs["gather"], outputs["dense"], atol=1e-5, rtol=1e-5)


def test_teacher_fine_tunes_and_samples_with_input_aware_attention(tmp_path, trained_tiny,
                                                                   synthetic_dataset):
    from posecast.generate import prepare_conditions, sample_latents
    from posecast.models.codecs import PixelCodec
    from posecast.models.pretrained import from_pretrained
    from posecast.train.teacher import TrainConfig, train_teacher

    config = from_pretrained(trained_tiny[0]).config.replace(attention="input_aware",
                                                             k_frames=2)
    out = train_teacher(synthetic_dataset, tmp_path / "sparse", config,
                        TrainConfig(max_steps=3, batch_size=2), device="cpu",
                        init_from=str(trained_tiny[0]))
    model = from_pretrained(out)
    assert model.config.attention == "input_aware"
    video, poses = synthetic_clip(32, 9, 25.0, np.random.default_rng(7))
    latents = sample_latents(model, PixelCodec(config.codec),
                             prepare_conditions(video[0], poses, 32, 32), steps=2, cfg=2.0,
                             seed=0)
    assert latents.shape == (1, 9, 3, 32, 32) and torch.isfinite(latents).all()


def test_bench_attention_prints_a_table(run_cli):
    result = run_cli("bench", "attention", "--frames", "4", "--grids", "8", "--k-frames", "1,2",
                     "--heads", "2", "--head-dim", "16", "--repeats", "1", "--block-size", "16",
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.strip().startswith("│")]
    assert len(rows) == 2 and "256" in rows[0]  # 4 frames × 8 × 8 tokens


def test_xformers_backend_names_its_extra_when_missing(monkeypatch):
    import sys

    from posecast.attention.backends import resolve_backend
    from posecast.errors import PosecastError

    monkeypatch.setitem(sys.modules, "xformers", None)  # import fails, as without the extra
    with pytest.raises(PosecastError, match=r"posecast\[xformers\]"):
        resolve_backend("xformers", torch.device("cpu"))


def test_a_block_causal_student_never_sees_later_chunks():
    """The student's configuration (input-aware + chunks of 2 frames): changing the noisy
    input of chunk 1 leaves chunk 0's output untouched, and changes chunk 1's."""
    from posecast.models.denoiser import Denoiser

    config = preset("tiny", attention="input_aware", chunk=2, k_frames=2)
    torch.manual_seed(0)
    model = Denoiser(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
                    * 0.1)
    _, poses = synthetic_clip(32, 4, 25.0, np.random.default_rng(3))
    masks = [mask_for_window(poses, config)]
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 4, 3, 32, 32, generator=g)
    args = (torch.rand(1, generator=g), torch.randn(1, 3, 32, 32, generator=g),
            torch.rand(1, 4, 3, 32, 32, generator=g))
    changed = noisy.clone()
    changed[:, 2:] += 1.0  # frames of chunk 1
    with torch.no_grad():
        before, after = model(noisy, *args, layout=masks), model(changed, *args, layout=masks)
    torch.testing.assert_close(before[:, :2], after[:, :2], atol=0, rtol=0)
    assert not torch.allclose(before[:, 2:], after[:, 2:])
