from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cli_json
from synthetic import synthetic_clip

from posecast.attention.backends import (
    flex_attention,
    input_aware_attention,
    xformers_available,
)
from posecast.attention.mask import REGION_COUNT, InputAwareMask, build_mask, mask_for_window
from posecast.attention.plan import AttentionPlan, block_tables
from posecast.config import preset
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


def oracle(q, k, v, mask: InputAwareMask) -> torch.Tensor:
    """Masked softmax attention written out in float64, from the token mask alone."""
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask.token_mask(), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v.double()).to(q.dtype)


def streaming_masks(frames=12, chunk=4, window=8, seed=0):
    """The masks a student's rollout gives its chunks (ring cache with EMPTY slots, queries
    sorted by group), from moving synthetic poses."""
    from posecast.streaming.planner import ChunkPlanner

    _, poses = synthetic_clip(32, frames, 25.0, np.random.default_rng(seed))
    config = preset("tiny", attention="input_aware", chunk=chunk, window=window, k_frames=2)
    planner = ChunkPlanner(config, batch=1)
    out = []
    for start in range(0, frames, chunk):
        end = start + chunk
        masks, _ = planner.masks(start, end, [poses[max(0, end - window):end]])
        planner.commit(start, end, masks)
        out.append(masks[0])
    return out


def _cases():
    """(name, masks of one shape): whole windows in token and in sorted order, a chunk's
    queries against its cache in token order, and the rollout's own streaming masks."""
    from posecast.attention.plan import sorted_by_group

    cases = []
    for frames, rows, cols, k, chunk, reference in SETTINGS[:3]:
        whole = [_random_mask(frames, rows, cols, k, chunk, reference, seed=frames),
                 _pose_mask(frames, 8, k, chunk, reference, seed=frames)]
        cases.append((f"whole-{frames}", whole[:1]))
        cases.append((f"pose-{frames}", whole[1:]))
        cases.append((f"sorted-{frames}", [sorted_by_group(whole[1])[0]]))
        if chunk:
            start = (frames - chunk) * rows * cols + (rows * cols if reference else 0)
            cases.append((f"cache-{frames}", [whole[0].for_queries_from(start)]))
    streaming = streaming_masks()
    cases.append(("stream-first", streaming[:1]))
    cases.append(("stream-steady", streaming[2:3]))
    return cases


CASES = _cases()


def _qkv(masks, seed, dim=8, heads=3):
    g = torch.Generator().manual_seed(seed)
    nq, nk = masks[0].query_groups.numel(), masks[0].key_groups.numel()
    q = torch.randn(len(masks), heads, nq, dim, generator=g, requires_grad=True)
    k, v = (torch.randn(len(masks), heads, nk, dim, generator=g, requires_grad=True)
            for _ in range(2))
    return q, k, v


def _expected(q, k, v, masks):
    return torch.cat([oracle(q[b:b + 1], k[b:b + 1], v[b:b + 1], m)
                      for b, m in enumerate(masks)])


@pytest.mark.parametrize("name,masks", CASES, ids=[name for name, _ in CASES])
@pytest.mark.parametrize("backend", ["dense", "gather"])
def test_backends_equal_the_oracle_outputs_and_gradients(backend, name, masks):
    q, k, v = _qkv(masks, seed=len(name))
    plan = AttentionPlan(masks, backend, torch.device("cpu"), block_size=16)
    got = input_aware_attention(q, k, v, plan)
    expected = _expected(q, k, v, masks)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    grads_expected = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    grads_got = torch.autograd.grad((got * weights).sum(), (q, k, v))
    for a, b in zip(grads_got, grads_expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert 0 < masks[0].density() < 1


@pytest.mark.parametrize("name,masks", CASES, ids=[name for name, _ in CASES])
def test_eager_flex_equals_the_oracle(name, masks):
    """Eager FlexAttention evaluates mask_mod on every pair and ignores the block tables, so
    this checks that mask_mod alone encodes the exact mask (it once checked key padding only,
    and eager flex silently computed dense attention). CPU flex has no backward: gradients
    are checked on a GPU (test_flex_gradients_on_cuda)."""
    q, k, v = (x.detach() for x in _qkv(masks, seed=len(name)))
    plan = AttentionPlan(masks, "flex", torch.device("cpu"), block_size=16)
    got = flex_attention(q, k, v, plan, compiled=False)
    torch.testing.assert_close(got, _expected(q, k, v, masks), atol=1e-5, rtol=1e-5)


def test_block_tables_are_the_block_reduction_of_the_token_mask():
    found = {16: 0, 32: 0}  # full blocks in all the cases, per block size
    for name, masks in CASES:
        mask = masks[0]
        for block in (16, 32):
            kv_count, kv_index, full_count, full_index = block_tables(
                mask.query_groups.numpy(), mask.key_groups.numpy(), mask.allowed.numpy(),
                block)
            token = mask.token_mask()
            nq, nk = token.shape
            pad = torch.zeros(-(-nq // block) * block, -(-nk // block) * block, dtype=torch.bool)
            valid = pad.clone()
            pad[:nq, :nk], valid[:nq, :nk] = token, True
            blocks = pad.view(pad.shape[0] // block, block, -1, block)
            any_allowed = blocks.any(dim=(1, 3))
            all_allowed = (pad | ~valid).view_as(blocks).all(dim=(1, 3)) & \
                valid.view_as(blocks).all(dim=(1, 3))
            # "full" (no per-token test, FlexAttention's fast path) is exactly the complete
            # blocks whose every pair is allowed: a short block is always tested token by token
            complete = torch.zeros_like(all_allowed)
            complete[:nq // block, :nk // block] = True
            full_expected = all_allowed & complete
            found[block] += int(full_expected.sum())
            for row in range(any_allowed.shape[0]):
                kept = set(kv_index[row, :kv_count[row]].tolist()) | \
                    set(full_index[row, :full_count[row]].tolist())
                assert kept == set(torch.nonzero(any_allowed[row]).flatten().tolist()), name
                full = set(full_index[row, :full_count[row]].tolist())
                assert full == set(torch.nonzero(full_expected[row]).flatten().tolist()), name
    assert found[16] > 0 and found[32] > 0, found  # the cases have full blocks to find


@pytest.mark.slow
def test_compiled_flex_equals_the_oracle_on_cpu():
    """Compiled FlexAttention (about 15 s to compile on this CPU per shape), which is what
    uses the block tables: a whole window and a streaming chunk against its cache."""
    for name, masks in (CASES[1], CASES[-1]):
        q, k, v = (x.detach() for x in _qkv(masks, seed=len(name)))
        plan = AttentionPlan(masks, "flex", torch.device("cpu"), block_size=16)
        got = flex_attention(q, k, v, plan, compiled=True)
        torch.testing.assert_close(got, _expected(q, k, v, masks), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", [
    "flex",
    pytest.param("xformers", marks=pytest.mark.skipif(
        not xformers_available(), reason="xformers is an optional extra (pip install "
        "'posecast[xformers]'); without it there is no xformers backend to check")),
])
def test_flex_gradients_on_cuda(backend):
    """On CUDA: compiled flex (and xformers when installed) against the oracle, forward and
    backward, whole windows and cached chunks."""
    device = torch.device("cuda")
    for name, masks in CASES:
        q, k, v = (x.detach().to(device).requires_grad_() for x in _qkv(masks, len(name),
                                                                        dim=16))
        plan = AttentionPlan(masks, backend, device, block_size=128)  # CUDA kernel tiles
        got = input_aware_attention(q, k, v, plan)
        expected = torch.cat([oracle(q[b:b + 1], k[b:b + 1], v[b:b + 1],
                                     InputAwareMask(m.query_groups.to(device),
                                                    m.key_groups.to(device),
                                                    m.allowed.to(device)))
                              for b, m in enumerate(masks)])
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=2e-4)
        weights = torch.randn_like(expected)
        for a, b in zip(torch.autograd.grad((got * weights).sum(), (q, k, v)),
                        torch.autograd.grad((expected * weights).sum(), (q, k, v)),
                        strict=True):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


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


def test_denoiser_runs_with_input_aware_attention():
    from posecast.dit.denoiser import Denoiser

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


def _fine_tune_loss_and_gradients(model, config, batch, seed=4):
    """The teacher fine-tune's loss (train.teacher.flow_matching_loss) on `batch` under
    `config`, and the gradient of every parameter of `model`."""
    from posecast.dit.codecs import PixelCodec
    from posecast.dit.train import flow_matching_loss

    model.zero_grad(set_to_none=True)
    loss = flow_matching_loss(model, PixelCodec(config.codec), batch, config,
                              torch.Generator().manual_seed(seed), torch.device("cpu"))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


class _DenseWithMask(torch.nn.Module):
    """The dense oracle: the same network in dense attention, given each window's boolean
    token mask (InputAwareMask.token_mask, over the tokens in their natural order) instead of
    the input-aware plan (sorted tokens, gathered groups)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, *args, layout=None, **kwargs):
        dense = torch.stack([mask.token_mask() for mask in layout])[:, None]  # (B, 1, N, N)
        self.network.config = self.network.config.replace(attention="dense")
        try:
            return self.network(*args, layout=dense, **kwargs)
        finally:
            self.network.config = self.network.config.replace(attention="input_aware")


def test_the_input_aware_fine_tune_equals_its_dense_oracle(synthetic_dataset, monkeypatch):
    """The input-aware teacher fine-tune (`posecast train --init-from T --attention
    input_aware`): with a mask that allows every pair its loss and gradients are the dense
    path's; with the poses' real mask, those of dense attention under the same boolean mask
    (which differ from unmasked attention: the mask matters)."""
    from posecast.attention.mask import InputAwareMask
    from posecast.data.clips import ClipDataset
    from posecast.dit import train as teacher
    from posecast.dit.denoiser import Denoiser

    config = preset("tiny", attention="input_aware", attention_backend="gather", k_frames=1,
                    reference_frame=True)
    torch.manual_seed(0)
    model = Denoiser(config)
    with torch.no_grad():  # away from the zero-initialised output, so gradients reach everywhere
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    data = ClipDataset(synthetic_dataset, config.height, config.width)
    batch = data.sample(2, config.window, torch.Generator().manual_seed(1))

    dense_loss, dense_grads = _fine_tune_loss_and_gradients(model, config.replace(
        attention="dense"), batch)
    real_mask = teacher.mask_for_window

    def allow_everything(poses, config, reference_poses=None):
        tokens = real_mask(poses, config, reference_poses).query_groups.numel()
        group = torch.zeros(tokens, dtype=torch.int64)  # one group, seeing itself
        return InputAwareMask(group, group, torch.tensor([[True, False], [False, False]]))

    monkeypatch.setattr(teacher, "mask_for_window", allow_everything)
    loss, grads = _fine_tune_loss_and_gradients(model, config, batch)
    torch.testing.assert_close(loss, dense_loss, atol=1e-6, rtol=1e-6)
    for grad, dense in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(grad, dense, atol=1e-6, rtol=1e-5)

    monkeypatch.setattr(teacher, "mask_for_window", real_mask)
    loss, grads = _fine_tune_loss_and_gradients(model, config, batch)
    oracle_loss, oracle_grads = _fine_tune_loss_and_gradients(_DenseWithMask(model), config,
                                                              batch)
    assert model.config.attention == "input_aware"
    torch.testing.assert_close(loss, oracle_loss, atol=1e-6, rtol=1e-6)
    for grad, oracle in zip(grads, oracle_grads, strict=True):
        torch.testing.assert_close(grad, oracle, atol=1e-6, rtol=1e-5)
    # the real mask restricts attention: 100× the tolerance above apart from the dense path
    assert max((grad - dense).abs().max()
               for grad, dense in zip(grads, dense_grads, strict=True)) > 1e-4


def test_teacher_fine_tunes_and_samples_with_input_aware_attention(tmp_path, trained_tiny,
                                                                   synthetic_dataset):
    from posecast.dit.codecs import PixelCodec
    from posecast.dit.pretrained import from_pretrained
    from posecast.dit.sampling import prepare_conditions, sample_latents
    from posecast.dit.train import TrainConfig, train_teacher

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
    from posecast.dit.denoiser import Denoiser

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


@pytest.mark.slow
def test_bench_attention_check_covers_every_backend_and_case(run_cli):
    """`posecast bench attention --check --json` on the CPU: dense, gather and flex (compiled
    and eager) on random and pose masks, whole windows and cached chunks, forward (and
    backward where the CPU has one), all within tolerance of the float64 oracle."""

    result = run_cli("bench", "attention", "--check", "--json", "--device", "cpu")
    assert result.code == 0, result.stderr
    report = cli_json(result.stdout, "bench attention")
    assert report["ok"] and all(case["ok"] for case in report["cases"])
    seen = {(c["backend"], c["mode"], c["queries"], c["direction"]) for c in report["cases"]}
    for queries in ("all", "cache"):
        for backend in ("dense", "gather"):
            assert {(backend, "-", queries, "forward"), (backend, "-", queries, "backward")} <= seen
        assert {("flex", "compiled", queries, "forward"), ("flex", "eager", queries, "forward")} \
            <= seen
    assert {c["mask"] for c in report["cases"]} == {"random", "pose"}
