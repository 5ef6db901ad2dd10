"""The training maths against oracles computed here (issue 31): loss values for models that
return exactly the right (or a known wrong) answer, gradients from their formulas, the
distributions of the random draws that shape training, and the region weight map against
shapes drawn by hand. Every fake model is built in the test, so each test takes well under a
second (the one short training run, about two)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posecast.config import preset
from posecast.pose.keypoints import (
    LEFT_ELBOW,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    RIGHT_ELBOW,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
    Keypoints,
)
from posecast.train.distill import DistillConfig

DRAWS = 4000  # draws per distribution check
# Kolmogorov–Smirnov: P(√n·D > 1.95) ≈ 0.001 for n draws from the hypothesised distribution
KS_LIMIT = 1.95 / math.sqrt(DRAWS)


def _inverse_shift(t: np.ndarray, shift: float) -> np.ndarray:
    """The time before SD3's shift t' = s·t / (1 + (s − 1)·t), solved for t."""
    return t / (shift - (shift - 1) * t)


def _assert_uniform(u: np.ndarray) -> None:
    """u: DRAWS values that must be U[0, 1]. Its range reaches both ends (P(no draw in the
    lowest 1 %) = 0.99^4000 ≈ 3e-18), its median is ½ within 5 standard deviations of a
    sample median (1 / (2√n)), and its KS distance to U[0, 1] is below the 0.1 % level."""
    assert u.shape == (DRAWS,)
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6, (u.min(), u.max())
    assert u.min() < 0.01 and u.max() > 0.99, (u.min(), u.max())
    assert abs(np.median(u) - 0.5) < 5 / (2 * math.sqrt(DRAWS)), np.median(u)
    ordered = np.sort(np.clip(u, 0, 1))
    ranks = np.arange(1, DRAWS + 1) / DRAWS
    ks = max((ranks - ordered).max(), (ordered - (ranks - 1 / DRAWS)).max())
    assert ks < KS_LIMIT, ks


def _assert_binomial_rate(hits: int, draws: int, rate: float) -> None:
    """`hits` of `draws` Bernoulli(rate) trials: within 5 binomial standard deviations."""
    sd = math.sqrt(draws * rate * (1 - rate))
    assert abs(hits - draws * rate) < 5 * sd, (hits, draws * rate, sd)


def _assert_standard_normal(z: np.ndarray) -> None:
    """z: DRAWS values that must be N(0, 1): the median within 5 standard deviations of a
    sample median (√(π/2)/√n), the standard deviation within 5 of its own (1/√(2n)), and the
    KS distance to Φ below the 0.1 % level."""
    assert z.shape == (DRAWS,) and np.isfinite(z).all()
    assert abs(np.median(z)) < 5 * math.sqrt(math.pi / 2 / DRAWS), np.median(z)
    assert abs(z.std() - 1) < 5 / math.sqrt(2 * DRAWS), z.std()
    ordered = np.sort(z)
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in ordered]))
    ranks = np.arange(1, DRAWS + 1) / DRAWS
    ks = max((ranks - cdf).max(), (cdf - (ranks - 1 / DRAWS)).max())
    assert ks < KS_LIMIT, ks


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


class FakeDenoiser:
    """A stand-in for a Denoiser: the tiny preset's config and a velocity given by `respond`
    (x, t, keep) → v; it records the times and `keep` flags it was called with."""

    def __init__(self, respond, config=None) -> None:
        self.config = config or preset("tiny")
        self.respond, self.times, self.keeps = respond, [], []

    def __call__(self, x, t, reference, pose_maps, keep=None, layout=None):
        self.times.append(t.detach().clone())
        self.keeps.append(None if keep is None else keep.detach().clone())
        return self.respond(x, t, keep)


def _predicting(clean: torch.Tensor, unconditional: torch.Tensor | None = None):
    """A velocity whose flow-matching clean estimate x − t·v is exactly `clean` (or, for the
    rows run without conditions, `unconditional`); a batch twice clean's (CFG's two branches
    in one) gets it twice."""
    def respond(x, t, keep=None):
        repeat = x.shape[0] // clean.shape[0]
        target = clean.repeat(repeat, *[1] * (x.dim() - 1))
        if keep is not None and unconditional is not None:
            other = unconditional.repeat(repeat, *[1] * (x.dim() - 1))
            target = torch.where(keep.view(-1, *[1] * (x.dim() - 1)), target, other)
        return (x - target) / t.view(-1, *[1] * (x.dim() - 1))
    return respond


def _window(batch: int) -> SimpleNamespace:
    """What teacher_velocity reads of a Window: conditions to repeat, no attention plan."""
    return SimpleNamespace(conditions=torch.zeros(batch, 1), maps=torch.zeros(batch, 1),
                           layout_for=lambda size: None)


def _dit_run(teacher, critic, settings=None, cfg: float = 2.0):
    """The DiT family's distillation maths (dit/distill.py) around fake networks: its
    scores, levels and critic weighting, with the student's flow-matching noising."""
    from posecast.dit.distill import DitDistillation
    from posecast.dit.student import DitStudent

    run = DitDistillation.__new__(DitDistillation)  # no networks are loaded
    run.teacher, run.critic, run.cfg = teacher, critic, cfg
    run.settings = settings or DistillConfig()
    run.student = SimpleNamespace(noisy=lambda clean, level, noise:
                                  DitStudent.noisy(None, clean, level, noise))
    return run


def _mimicmotion_run(student_settings, teacher=None, critic=None, cfg: float = 1.0,
                     settings=None):
    """The MimicMotion family's distillation maths (mimicmotion/distill.py) around fake
    networks called as GuidedTeacher is: (window, x, σ, lead_noise, cfg) → D(x; σ)."""
    from posecast.mimicmotion.distill import MimicMotionDistillation
    from posecast.mimicmotion.student import MimicMotionStudent

    run = MimicMotionDistillation.__new__(MimicMotionDistillation)
    run.teacher, run.critic, run.cfg = teacher, critic, cfg
    run.settings, run.student_settings = settings or DistillConfig(), student_settings
    run.student = SimpleNamespace(device=torch.device("cpu"),
                                  noisy=lambda clean, level, noise:
                                  MimicMotionStudent.noisy(None, clean, level, noise))
    return run


# ------------------------------------------------------------------------- DMD gradient


def test_the_dmd_gradient_is_the_score_difference_over_the_teachers_distance():
    """DMD's generator gradient (METHOD.md; train/distill.py's docstring) at a student sample
    x is (x̂₀_critic − x̂₀_teacher) / mean|x − x̂₀_teacher|, the mean taken per sample, times
    the region weights; the teacher's x̂₀ is guided (x̂₀_u + cfg·(x̂₀_c − x̂₀_u)), the
    critic's is its conditional one. Here both models predict fixed clean frames, different
    with and without conditions, and the samples sit at very different distances from the
    teacher's (each frame at its own), so the oracle differs from the unnormalised
    difference, from a batch-wide or per-frame mean, and from an unguided or guided critic."""
    from posecast.train.distill import dmd_gradient, dmd_scores

    g = torch.Generator().manual_seed(0)
    shape = (2, 2, 3, 4, 4)
    teacher_c, teacher_u, critic_c, critic_u = (torch.randn(shape, generator=g)
                                                for _ in range(4))
    real = teacher_u + 2.0 * (teacher_c - teacher_u)  # cfg 2
    spread = torch.tensor([[3.0, 1.0], [0.25, 0.5]]).view(2, 2, 1, 1, 1)  # per sample, frame
    x = real + spread * torch.randn(shape, generator=g)
    run = _dit_run(FakeDenoiser(_predicting(teacher_c, teacher_u)),
                   FakeDenoiser(_predicting(critic_c, critic_u)))
    weights = 1 + torch.rand(2, 2, 1, 4, 4, generator=g)
    distance = torch.stack([(x[b] - real[b]).abs().mean() for b in range(2)]).view(2, 1, 1, 1, 1)
    assert distance[0] > 1.5 and distance[1] < 0.4
    for w in (None, weights):
        teacher_x0, critic_x0 = dmd_scores(run, x, _window(2), torch.Generator().manual_seed(1))
        gradient = dmd_gradient(x, teacher_x0, critic_x0, w)
        expected = (critic_c - real) / distance * (1 if w is None else w)
        torch.testing.assert_close(gradient, expected, rtol=1e-4, atol=1e-4)


def test_the_mimicmotion_scores_see_the_sample_noised_by_sigma():
    """The EDM family re-noises a student sample for DMD as x_σ = x + σ·ε: both scores see
    exactly that, at the same σ, with one draw of lead-frame noise; and the gradient is the
    same (D_critic − D_teacher) / mean|x − D_teacher| as the DiT's."""
    from posecast.mimicmotion.student import StudentSettings
    from posecast.train.distill import dmd_gradient, dmd_scores

    g = torch.Generator().manual_seed(0)
    shape = (2, 2, 4, 4, 4)
    real, fake = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    x = real + torch.tensor([3.0, 0.25]).view(-1, 1, 1, 1, 1) * torch.randn(shape, generator=g)
    seen = []

    def scored(prediction):
        def score(window, noisy, sigma, lead_noise, cfg):
            seen.append((noisy.clone(), sigma.clone(), lead_noise))
            return prediction
        return score

    run = _mimicmotion_run(StudentSettings(), scored(real), scored(fake))
    window = SimpleNamespace(lead_latent=torch.zeros(2, 4, 4, 4))
    teacher_x0, critic_x0 = dmd_scores(run, x, window, torch.Generator().manual_seed(1))
    replay = torch.Generator().manual_seed(1)  # the draws in dmd_scores' order
    fraction = 0.02 + 0.96 * torch.rand(2, generator=replay, dtype=torch.float64)
    noise = torch.randn(shape, generator=replay)
    sigma = run.dmd_levels(fraction).float()
    for noisy, s, _ in seen:
        torch.testing.assert_close(noisy, x + sigma.view(-1, 1, 1, 1, 1) * noise)
        assert torch.equal(s, sigma)
    assert seen[0][2] is seen[1][2]  # one lead-frame noise for both scores
    distance = torch.stack([(x[b] - real[b]).abs().mean() for b in range(2)]).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(dmd_gradient(x, teacher_x0, critic_x0, None),
                               (fake - real) / distance, rtol=1e-5, atol=1e-6)


def test_dmd_times_spread_over_the_configured_range():
    """The DiT family re-noises student samples at t = shift(u) with u ~ U[min, max]
    (dmd_min_time, dmd_max_time) and the teacher's sampler shift: undoing the shift and the
    range must leave DRAWS uniform values on [0, 1], and both scores see the same times."""
    from posecast.train.distill import dmd_scores

    settings = DistillConfig(dmd_min_time=0.1, dmd_max_time=0.7)
    shape = (DRAWS, 1, 1, 1, 1)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    teacher = FakeDenoiser(_predicting(torch.zeros(shape)))
    critic = FakeDenoiser(_predicting(torch.ones(shape)))
    dmd_scores(_dit_run(teacher, critic, settings, 1.0), x, _window(DRAWS),
               torch.Generator().manual_seed(1))
    (times,), (critic_times,) = teacher.times, critic.times
    assert torch.equal(times, critic_times)
    shift = teacher.config.sampler.shift
    assert shift == 3.0
    before = _inverse_shift(times.double().numpy(), shift)
    _assert_uniform((before - 0.1) / (0.7 - 0.1))


def test_mimicmotion_dmd_levels_spread_over_the_configured_range():
    """The EDM family compares the scores at σ = (σ_min^(1/ρ) + t·(σ_max^(1/ρ) −
    σ_min^(1/ρ)))^ρ, t ~ U[min, max] (Karras' ρ-scale): undone, DRAWS uniform values."""
    from posecast.mimicmotion.student import StudentSettings
    from posecast.train.distill import dmd_scores

    levels = []

    def score(window, noisy, sigma, lead_noise, cfg):
        levels.append(sigma)
        return noisy

    student = StudentSettings(sigma_min=0.002, sigma_max=700.0, rho=7.0)
    settings = DistillConfig(dmd_min_time=0.1, dmd_max_time=0.7)
    run = _mimicmotion_run(student, score, score, settings=settings)
    dmd_scores(run, torch.zeros(DRAWS, 1, 1, 1, 1),
               SimpleNamespace(lead_latent=torch.zeros(DRAWS, 1, 1, 1)),
               torch.Generator().manual_seed(0))
    sigma = levels[0]
    assert sigma.shape == (DRAWS,)
    low, high = 0.002 ** (1 / 7), 700.0 ** (1 / 7)
    t = (sigma.double().numpy() ** (1 / 7) - low) / (high - low)
    _assert_uniform((t - 0.1) / (0.7 - 0.1))


# ------------------------------------------------------------------ flow-matching targets


def test_heun_steps_match_a_hand_computed_case():
    """Heun's method on dx/dt = t·x over the times 1 → ½ → 0: the first step averages the
    slope at the start (x) and at the Euler point (½x, t = ½: slope ¼x), x₁ = x − ½·½·(x +
    ¼x) = 0.6875·x; the last step, ending at t = 0, is Euler: x₂ = x₁ − ½·(½·x₁) = 0.75·x₁."""
    from posecast.diffusion.flow import heun

    x = torch.tensor([1.0, -2.0])
    result = heun(lambda state, t: t * state, x, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(result, 0.6875 * 0.75 * x)


@pytest.fixture(scope="module")
def tiny_batch(synthetic_dataset):
    from posecast.data.clips import ClipDataset

    config = preset("tiny")
    data = ClipDataset(synthetic_dataset, config.height, config.width, with_region_bits=True)
    return data.sample(2, config.window, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("alphas", [{}, {"face": 2.0, "lips": 4.0, "hands": 3.0}])
def test_the_teacher_loss_is_zero_for_the_true_velocity(tiny_batch, alphas):
    """Rectified flow's velocity is v = ε − x₀ (diffusion/flow.py), so a model that answers
    (x_t − x₀)/t, the true velocity of the path through x_t, has loss 0 (with and without
    the region weights); off by a constant δ everywhere, its loss is δ². The flipped target
    x₀ − ε would charge the true velocity 4·mean((ε − x₀)²), about 5."""
    from posecast.dit.codecs import make_codec
    from posecast.dit.train import flow_matching_loss

    config = preset("tiny")
    codec = make_codec(config.codec, torch.device("cpu"))
    clean = tiny_batch["frames"]  # the pixel codec's latents are the frames

    def loss(offset):
        model = FakeDenoiser(lambda x, t, keep: _predicting(clean)(x, t) + offset)
        value = flow_matching_loss(model, codec, tiny_batch, config,
                                   torch.Generator().manual_seed(3), torch.device("cpu"),
                                   alphas).item()
        (t,) = model.times
        assert (t > 0.02).all()  # (x_t − x₀)/t stays exact in float32
        return value

    assert loss(0.0) < 1e-8
    assert loss(0.5) == pytest.approx(0.25, rel=1e-4)


def test_the_critic_loss_is_zero_for_the_true_velocity():
    """The critic (DMD's fake score) is trained by flow matching on the student's samples
    x₀: the true velocity ε − x₀ = (x_t − x₀)/t gives loss 0, an offset δ gives δ²."""
    from posecast.train.distill import critic_loss

    sample = torch.randn(3, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def loss(offset):
        critic = FakeDenoiser(lambda x, t, keep: _predicting(sample)(x, t) + offset)
        value = critic_loss(_dit_run(None, critic), _window(3), sample,
                            torch.Generator().manual_seed(1)).item()
        (t,) = critic.times
        assert (t > 0.02).all()
        return value

    assert loss(0.0) < 1e-8
    assert loss(-0.3) == pytest.approx(0.09, rel=1e-4)


# --------------------------------------------------------------------- condition dropout


@pytest.mark.parametrize("dropout", [0.1, 0.25])
def test_condition_dropout_drops_the_configured_share_of_windows(dropout):
    """Each window is trained without its conditions (CFG's unconditional branch) with
    probability `condition_dropout`: over DRAWS windows the dropped count is binomial. The
    same windows' times are SD3's logit-normal, shifted like the sampler's (diffusion/flow.py):
    unshifted and through the logit, standard normal."""
    from posecast.dit.codecs import make_codec
    from posecast.dit.train import flow_matching_loss

    config = preset("tiny", condition_dropout=dropout)
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.rand(DRAWS, 1, 3, 2, 2, generator=g) * 2 - 1,
             "reference": torch.rand(DRAWS, 3, 2, 2, generator=g) * 2 - 1,
             "pose_maps": torch.rand(DRAWS, 1, 3, 2, 2, generator=g)}
    model = FakeDenoiser(lambda x, t, keep: torch.zeros_like(x), config)
    flow_matching_loss(model, make_codec(config.codec), batch, config,
                       torch.Generator().manual_seed(1), torch.device("cpu"))
    (keep,), (times,) = model.keeps, model.times
    assert keep.shape == (DRAWS,) and keep.dtype == torch.bool
    _assert_binomial_rate(int((~keep).sum()), DRAWS, dropout)
    _assert_standard_normal(_logit(_inverse_shift(times.double().numpy(), 3.0)))


def test_the_critics_training_times_are_logit_normal_and_exit_steps_uniform():
    """The critic's flow-matching times are the teacher's distribution (shifted logit-normal),
    and the student's rollouts stop each chunk at a step drawn uniformly from its k steps
    (backward simulation): every step's count over DRAWS chunks is binomial(1/k)."""
    from posecast.train.distill import critic_loss, random_exit_steps

    sample = torch.zeros(DRAWS, 1, 1, 1, 1)
    critic = FakeDenoiser(lambda x, t, keep: torch.zeros_like(x))
    critic_loss(_dit_run(None, critic), _window(DRAWS), sample, torch.Generator().manual_seed(0))
    (times,) = critic.times
    _assert_standard_normal(_logit(_inverse_shift(times.double().numpy(), 3.0)))
    steps = 4
    exits = np.array(random_exit_steps(DRAWS, steps, torch.Generator().manual_seed(1)))
    assert exits.shape == (DRAWS,) and set(exits.tolist()) <= set(range(steps))
    for step in range(steps):
        _assert_binomial_rate(int((exits == step).sum()), DRAWS, 1 / steps)


class FakeSvdNetwork(torch.nn.Module):
    """MimicMotion's network signature; records its inputs and answers with `respond`."""

    def __init__(self, respond) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # its dtype is the network's
        self.respond, self.calls = respond, []

    def forward(self, sample, c_noise, embeddings, time_ids, maps, keep):
        self.calls.append(SimpleNamespace(sample=sample, c_noise=c_noise,
                                          embeddings=embeddings, keep=keep))
        return self.respond(sample, c_noise)


def _fake_latents(pixels: torch.Tensor) -> torch.Tensor:
    """The fake VAE's (unscaled) latent: the 3 colour channels and the first again."""
    return torch.cat([pixels, pixels[:, :1]], dim=1)


SCALING = 0.5  # the fake VAE's scaling factor


def _fake_svd_teacher(network, monkeypatch):
    """What svd_loss reads of a MimicMotion teacher, with a weight-free VAE and CLIP (a
    constant embedding) and blank pose maps; frames are 8 × 8 pixels, latents too."""
    import posecast.mimicmotion.train as train_module
    import posecast.pose.dwpose as dwpose

    class Vae:
        config = SimpleNamespace(scaling_factor=SCALING)

        def encode(self, pixels):
            latent = _fake_latents(pixels)
            return SimpleNamespace(latent_dist=SimpleNamespace(
                sample=lambda generator: latent, mode=lambda: latent))

    monkeypatch.setattr(train_module, "clip_embedding", lambda teacher, image: torch.ones(1, 1, 4))
    monkeypatch.setattr(dwpose, "draw_dwpose", lambda poses, height, width: np.zeros(
        (len(poses), height, width, 3), np.uint8))
    recipe = SimpleNamespace(height=8, width=8, fps=7, motion_bucket_id=127,
                             noise_aug_strength=0.02)
    return SimpleNamespace(network=network, vae=Vae(), device=torch.device("cpu"),
                           recipe=recipe)


def _svd_batch(size: int, frames: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"reference": torch.rand(size, 3, 8, 8, generator=g) * 2 - 1,
            "frames": torch.rand(size, frames, 3, 8, 8, generator=g) * 2 - 1,
            "reference_poses": [Keypoints.empty(1, 8, 8)] * size,
            "poses": [Keypoints.empty(frames, 8, 8)] * size}


def test_mimicmotion_condition_dropout_drops_the_configured_share_of_windows(monkeypatch):
    """The fine-tune drops all three conditions (CLIP token, reference latent, pose) of a
    window with probability condition_dropout: the dropped count over DRAWS windows is
    binomial, and exactly the dropped windows reach the network with a zero CLIP token and a
    zero reference latent. The same windows' noise levels are log-normal, log σ ~ N(0.7,
    1.6²) as SVD was trained (the network sees c_noise = ¼ ln σ)."""
    from posecast.mimicmotion.train import FineTuneConfig, svd_loss

    network = FakeSvdNetwork(lambda sample, c_noise: torch.zeros_like(sample[:, :, :4]))
    teacher = _fake_svd_teacher(network, monkeypatch)
    batch = _svd_batch(DRAWS, 1)
    svd_loss(teacher, None, batch, FineTuneConfig(condition_dropout=0.1),
             torch.Generator().manual_seed(1))
    (call,) = network.calls
    keep = call.keep
    assert keep.shape == (DRAWS,) and keep.dtype == torch.bool
    _assert_binomial_rate(int((~keep).sum()), DRAWS, 0.1)
    token_kept = call.embeddings.abs().flatten(1).amax(1) > 0
    reference_kept = call.sample[:, :, 4:].abs().flatten(1).amax(1) > 0
    assert torch.equal(token_kept, keep) and torch.equal(reference_kept, keep)
    log_sigma = 4 * call.c_noise.double().numpy()
    _assert_standard_normal((log_sigma - 0.7) / 1.6)


# -------------------------------------------------------------------------- EDM weights


def test_the_svd_loss_weights_a_known_error_by_the_edm_weight(monkeypatch):
    """SVD's loss is (σ² + 1)/σ² · ‖D(x) − x₀‖² with D = c_skip·x + c_out·F (EDM with
    v-prediction: c_in = 1/√(σ²+1), c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1), c_noise = ¼ ln σ).
    With log σ's spread 0, σ = ½ for every window, so the weight is 5; a network whose D
    misses the clean latents by a known δ then has loss 5·mean(δ²)."""
    from posecast.mimicmotion.train import FineTuneConfig, svd_loss

    sigma = 0.5
    c_in, c_skip = 1 / math.sqrt(sigma**2 + 1), 1 / (sigma**2 + 1)
    c_out = -sigma / math.sqrt(sigma**2 + 1)
    batch = _svd_batch(2, 2)
    pixels = torch.cat([batch["reference"][:, None], batch["frames"]], dim=1)  # frame 0 leads
    clean = _fake_latents(pixels.flatten(0, 1)).unflatten(0, pixels.shape[:2]) * SCALING
    delta = 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))

    def missing_by_delta(sample, c_noise):
        noisy = sample[:, :, :4] / c_in
        return (clean + delta - c_skip * noisy) / c_out

    network = FakeSvdNetwork(missing_by_delta)
    teacher = _fake_svd_teacher(network, monkeypatch)
    settings = FineTuneConfig(noise_mean=math.log(sigma), noise_std=0.0, condition_dropout=0.0)
    loss = svd_loss(teacher, None, batch, settings, torch.Generator().manual_seed(1))
    (call,) = network.calls
    torch.testing.assert_close(call.c_noise, torch.full((2,), 0.25 * math.log(sigma)))
    weight = (sigma**2 + 1) / sigma**2
    assert weight == 5.0
    torch.testing.assert_close(loss, weight * (delta**2).mean(), rtol=1e-4, atol=0)

    # with region α's: a mean weighted by w = 1 + Σ α_r·m_r, normalised by w's mean, where
    # the window's frame 0 (the reference, whose regions the batch lacks) weighs 1
    bits = torch.zeros(2, 2, 8, 8, dtype=torch.uint8)  # the clip frames 1 and 2 of each window
    bits[0, 0, 2:5, 3:6] = 1  # face
    bits[1, 1, 0:2, :] = 2  # lips
    regions = torch.ones(2, 3, 1, 8, 8)
    regions[0, 1, 0, 2:5, 3:6] += 3.0
    regions[1, 2, 0, 0:2, :] += 1.0
    settings = FineTuneConfig(noise_mean=math.log(sigma), noise_std=0.0, condition_dropout=0.0,
                              region_alphas={"face": 3.0, "lips": 1.0})
    loss = svd_loss(teacher, None, {**batch, "region_bits": bits}, settings,
                    torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, (regions * weight * delta**2).mean() / regions.mean(),
                               rtol=1e-4, atol=0)


def test_the_mimicmotion_critic_loss_weights_a_known_error_by_the_edm_weight():
    """The MimicMotion critic is trained with the same EDM loss on the student's samples: a
    critic missing them by δ has loss mean((σ² + 1)/σ² · δ²) at the levels σ it was asked."""
    from posecast.mimicmotion.student import StudentSettings
    from posecast.train.distill import critic_loss

    g = torch.Generator().manual_seed(0)
    sample = torch.randn(6, 2, 4, 4, 4, generator=g)
    delta = 0.1 * torch.randn(sample.shape, generator=g)
    levels = []

    def critic(window, x, sigma, lead_noise, cfg):
        levels.append(sigma.clone())
        return sample + delta

    window = SimpleNamespace(lead_latent=torch.zeros(6, 4, 4, 4))
    loss = critic_loss(_mimicmotion_run(StudentSettings(), critic=critic), window, sample,
                       torch.Generator().manual_seed(1))
    (sigma,) = levels
    weight = ((sigma**2 + 1) / sigma**2).view(-1, 1, 1, 1, 1)
    assert weight.min() > 1.01  # far enough from 1 for the check to see it
    torch.testing.assert_close(loss, (weight * delta**2).mean(), rtol=1e-4, atol=0)

    # its levels are SVD's log-normal ones, log σ ~ N(0.7, 1.6²)
    levels.clear()
    many = torch.zeros(DRAWS, 1, 1, 1, 1)
    run = _mimicmotion_run(StudentSettings(), critic=lambda window, x, sigma, lead_noise, cfg:
                           levels.append(sigma) or many)
    critic_loss(run, SimpleNamespace(lead_latent=torch.zeros(DRAWS, 1, 1, 1)), many,
                torch.Generator().manual_seed(2))
    _assert_standard_normal((levels[0].double().log().numpy() - 0.7) / 1.6)


def test_the_mimicmotion_teacher_trajectory_solves_a_known_ode():
    """EDM's probability-flow ODE dx/dσ = (x − D(x; σ))/σ, for a teacher whose D is a fixed
    clean latent c, has the straight solution x(σ) = c + (σ/σ_max)·(x(σ_max) − c), on which
    Euler steps are exact. So the ODE pair's states at the student's k levels (Karras:
    σ_i = (σ_max^(1/ρ) + i/k·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ) lie on it and its end point is c;
    and the teacher is asked, with the pair's guidance, at ode_steps/k levels per interval
    on Karras' ρ-spacing from σ_i towards σ_{i+1} (σ_min after the last), then at σ_min."""
    from posecast.mimicmotion.student import StudentSettings
    from posecast.train.distill import euler_trajectory

    k, rho, high, low = 3, 7.0, 700.0, 0.002
    student = StudentSettings(steps=k, sigma_min=low, sigma_max=high, rho=rho)
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 3, 4, 2, 2, generator=g)
    noise = torch.randn(clean.shape, generator=g)
    asked = []

    def teacher(window, x, sigma, lead_noise, cfg):
        assert cfg == 2.5 and torch.all(sigma == sigma[0])
        asked.append(float(sigma[0]))
        return clean

    run = _mimicmotion_run(student, teacher, cfg=2.5)
    levels, marks = run.trajectory_levels(2 * k)
    score = run.score(SimpleNamespace(lead_latent=torch.zeros(2, 4, 2, 2)), g)
    states, end = euler_trajectory(score, run.student.noisy(0.0, levels[0], noise), levels,
                                   marks, run.cfg)
    top, bottom = high ** (1 / rho), low ** (1 / rho)
    levels = [(top + i / k * (bottom - top)) ** rho for i in range(k)]
    start = noise * high
    torch.testing.assert_close(states, torch.stack([clean + s / high * (start - clean)
                                                    for s in levels]), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(end, clean)
    bounds = [*levels, low]
    expected = [(bounds[i] ** (1 / rho) + j / 2 * (bounds[i + 1] ** (1 / rho)
                                                   - bounds[i] ** (1 / rho))) ** rho
                for i in range(k) for j in range(2)] + [low]
    np.testing.assert_allclose(asked, expected, rtol=1e-5)


# ---------------------------------------------------------------------------------- EMA


def _parameters(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


def test_ema_update_moves_the_average_a_share_of_the_way():
    """ema ← decay·ema + (1 − decay)·param, by hand on known numbers."""
    from posecast.dit.train import ema_update

    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        ema.weight.copy_(torch.tensor([[1.0, -2.0]]))
        ema.bias.fill_(4.0)
        model.weight.copy_(torch.tensor([[3.0, 2.0]]))
        model.bias.fill_(-6.0)
    ema_update(ema, model, 0.9)
    torch.testing.assert_close(ema.weight, torch.tensor([[1.2, -1.6]]))
    torch.testing.assert_close(ema.bias, torch.tensor([3.0]))
    torch.testing.assert_close(model.bias, torch.tensor([-6.0]))  # the model is left alone


def test_the_teachers_ema_follows_its_formula_through_training(tmp_path, synthetic_dataset,
                                                               monkeypatch):
    """A 3-step teacher run, its raw weights recorded after every optimiser step: the saved
    model (the EMA) equals the average replayed here from the initial weights with the
    warm-up decay d_k = min(ema_decay, (1 + k)/(10 + k)) after step k."""
    import posecast.dit.train as teacher_module
    from posecast.dit.pretrained import from_pretrained
    from posecast.train import loop

    snapshots = []
    apply_gradients = loop.apply_gradients

    def recording(loss, module, optimizer, grad_clip):
        if not snapshots:
            snapshots.append(_parameters(module))  # the initial weights
        apply_gradients(loss, module, optimizer, grad_clip)
        snapshots.append(_parameters(module))

    monkeypatch.setattr(loop, "apply_gradients", recording)
    out = tmp_path / "teacher"
    teacher_module.train_teacher(synthetic_dataset, out, preset("tiny"),
                                 teacher_module.TrainConfig(max_steps=3, batch_size=1,
                                                            learning_rate=1e-2,
                                                            checkpoint_every=3, seed=2),
                                 device="cpu")
    assert len(snapshots) == 4
    ema = snapshots[0]
    for k, raw in enumerate(snapshots[1:], start=1):
        decay = min(0.999, (1 + k) / (10 + k))
        ema = decay * ema + (1 - decay) * raw
    saved = _parameters(from_pretrained(out))
    torch.testing.assert_close(saved, ema, rtol=0, atol=1e-6)
    moved = (snapshots[-1] - snapshots[0]).abs().max()
    assert moved > 1e-3 and (saved - snapshots[-1]).abs().max() > 0.1 * moved


# -------------------------------------------------------------------- region weight map


def test_the_latent_weight_grid_averages_each_latent_pixels_footprint():
    """Pixel weights (B, T, 1, H, W) → the latent grid: each latent pixel takes the mean of
    its (H/h) × (W/w) block of pixels (a non-square 8 × 12 → 2 × 3); at the latent size it
    is the identity (the pixel codec)."""
    from posecast.train.region_loss import to_latent_grid

    weights = 1 + torch.rand(2, 3, 1, 8, 12, generator=torch.Generator().manual_seed(0)) * 4
    expected = weights.view(2, 3, 1, 2, 4, 3, 4).mean(dim=(4, 6))
    torch.testing.assert_close(to_latent_grid(weights, (2, 3)), expected)
    assert torch.equal(to_latent_grid(weights, (8, 12)), weights)

HEIGHT, WIDTH = 48, 80  # raster rows × columns
SCALE_X, SCALE_Y = 2.0, 3.0  # the keypoints' frame: 160 × 144, scaled unlike on each axis
ALPHAS = {"face": 1.0, "lips": 2.0, "hands": 4.0, "arms": 8.0}  # w − 1 spells the regions
GROW = 0.02 * max(HEIGHT, WIDTH)  # the documented dilation: 2 % of the longer side


def _corners(box):
    """A box's corners in the keypoints' frame."""
    x0, y0, x1, y1 = box
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32) * (SCALE_X, SCALE_Y)


# Raster pixels: boxes inclusive (x0, y0, x1, y1), joints (x, y). Frame 1 raises the left arm.
FRAMES = [
    {"face": (32, 1, 48, 13), "lips": (36, 9, 44, 11),
     "right_hand": (2, 36, 12, 46), "left_hand": (68, 36, 78, 46),
     "joints": {RIGHT_SHOULDER: (32, 18), LEFT_SHOULDER: (48, 18), RIGHT_HIP: (34, 46),
                LEFT_HIP: (46, 46), RIGHT_ELBOW: (16, 24), LEFT_ELBOW: (64, 24),
                RIGHT_WRIST: (8, 38), LEFT_WRIST: (72, 38)}},
]
FRAMES.append({**FRAMES[0], "left_hand": (66, 1, 76, 9),
               "joints": {**FRAMES[0]["joints"], LEFT_ELBOW: (62, 12), LEFT_WRIST: (70, 6)}})


def _drawn_person() -> Keypoints:
    from posecast.pose.face_mesh import LIP_OUTLINE

    kp = Keypoints.empty(len(FRAMES), width=int(WIDTH * SCALE_X),
                         height=int(HEIGHT * SCALE_Y))
    body, face = kp.body.copy(), kp.face.copy()
    hands = {"left_hand": kp.left_hand.copy(), "right_hand": kp.right_hand.copy()}
    for t, frame in enumerate(FRAMES):
        corners = _corners(frame["face"])
        face[t, :, :2] = corners[np.arange(face.shape[1]) % 4]
        face[t, list(LIP_OUTLINE), :2] = _corners(frame["lips"])[
            np.arange(len(LIP_OUTLINE)) % 4]
        face[t, :, 2] = 1.0
        for part, points in hands.items():
            points[t, :, :2] = _corners(frame[part])[np.arange(points.shape[1]) % 4]
            points[t, :, 2] = 1.0
        for joint, xy in frame["joints"].items():
            body[t, joint] = (SCALE_X * xy[0], SCALE_Y * xy[1], 1.0)  # the nose stays undetected
    return Keypoints(body, face, hands["left_hand"], hands["right_hand"], 25.0, kp.width,
                     kp.height)


def _box_distance(box, xs, ys):
    """Distance of pixel centres to an inclusive box (0 inside)."""
    x0, y0, x1, y1 = box
    return np.hypot(np.maximum(np.maximum(x0 - xs, xs - x1), 0),
                    np.maximum(np.maximum(y0 - ys, ys - y1), 0))


def _segment_distance(a, b, xs, ys):
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    s = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / (d @ d), 0, 1)
    return np.hypot(xs - (a[0] + s * d[0]), ys - (a[1] + s * d[1]))


def _expected_regions(frame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(surely inside, surely outside) per weighted region, from the shapes alone: a box
    region covers its box and reaches at most its dilation (GROW; the lips' is half that)
    + 1.5 px of rasterisation beyond it; an arm covers the pixels within 1 px of its
    shoulder–elbow–wrist line and, drawn at most half a shoulder width thick, reaches at most
    a quarter shoulder width + GROW + 1.5 px from it."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(float)
    joints = frame["joints"]
    out = {}
    for name, hands in (("face", ("face",)), ("lips", ("lips",)),
                        ("hands", ("left_hand", "right_hand"))):
        distance = np.min([_box_distance(frame[part], xs, ys) for part in hands], axis=0)
        margin = (0.01 * max(HEIGHT, WIDTH) if name == "lips" else GROW) + 1.5
        out[name] = (distance == 0, distance > margin)
    shoulder_width = math.dist(joints[LEFT_SHOULDER], joints[RIGHT_SHOULDER])
    arm = np.min([_segment_distance(joints[a], joints[b], xs, ys)
                  for chain in ((RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST),
                                (LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST))
                  for a, b in zip(chain[:-1], chain[1:], strict=True)], axis=0)
    out["arms"] = (arm <= 1.0, arm > shoulder_width / 4 + GROW + 1.5)
    return out


def test_the_region_weight_map_matches_shapes_drawn_by_hand():
    """w = 1 + α_face·m_face + α_lips·m_lips + α_hands·m_hands + α_arms·m_arms on a 80 × 48
    frame (keypoints given in a 160 × 144 one), with α = 1, 2, 4, 8 so that w − 1 names the
    regions covering each pixel. The oracle is the drawn shapes themselves: boxes for face,
    lips and hands, the shoulder–elbow–wrist lines for the arms; every pixel surely inside a
    region must carry its α, every pixel surely outside must not. The torso is no weighted
    region: its middle, far from both arms, weighs 1. Frame 1 raises the left arm."""
    from posecast.train.region_loss import RegionWeights, batch_region_bits, weights_from_bits

    weights = weights_from_bits(batch_region_bits([_drawn_person()], HEIGHT, WIDTH),
                                RegionWeights(**ALPHAS))
    assert weights.shape == (1, len(FRAMES), 1, HEIGHT, WIDTH)
    codes = (weights[0, :, 0] - 1).numpy()
    assert np.array_equal(codes, np.round(codes))  # only sums of the α's
    codes = codes.astype(int)
    for t, frame in enumerate(FRAMES):
        for bit, (name, (inside, outside)) in enumerate(_expected_regions(frame).items()):
            assert inside.sum() >= 15 and outside.sum() >= 1000, (t, name)
            carries = (codes[t] >> bit) & 1 == 1  # α = 2**bit in ALPHAS' order
            assert carries[inside].all(), (t, name, np.argwhere(inside & ~carries)[:5])
            assert not carries[outside].any(), (t, name, np.argwhere(outside & carries)[:5])
        assert (codes[t, 28:41, 38:43] == 0).all(), t  # the torso's middle, far from the arms
    # the raised arm moved its weight: the hanging hand's pixels weigh 1 in frame 1
    assert codes[0, 44, 74] == 4 and codes[1, 44, 74] == 0


# ------------------------------------------------------------------------------------- SSIM


def _ssim_written_out(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5
                      ) -> np.ndarray:
    """SSIM (Wang et al. 2004) per pixel of two (H, W) images of data range 2, from its
    definition: Gaussian-weighted local means, variances and covariance over a size × size
    window (edges reflected), C1 = (0.01·2)², C2 = (0.03·2)²; loops, no convolution."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.array([math.exp(-o * o / (2 * sigma * sigma)) for o in offsets])
    weights = np.outer(g, g) / np.outer(g, g).sum()
    half = size // 2
    xp, yp = (np.pad(image, half, mode="reflect") for image in (x, y))
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    out = np.empty_like(x)
    for row in range(x.shape[0]):
        for col in range(x.shape[1]):
            a, b = xp[row:row + size, col:col + size], yp[row:row + size, col:col + size]
            mu_a, mu_b = (weights * a).sum(), (weights * b).sum()
            var_a = (weights * (a - mu_a) ** 2).sum()
            var_b = (weights * (b - mu_b) ** 2).sum()
            cov = (weights * (a - mu_a) * (b - mu_b)).sum()
            out[row, col] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / \
                ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return out


def test_ssim_map_is_ssim_written_out_on_a_non_square_picture():
    """The SSIM term of the region loss against its definition, pixel by pixel, on a 13 × 17
    picture with a low-contrast copy, noise and a shift: each constant, the window and the
    reflected edges count (a C2 left unsquared moves low-contrast pixels by > 0.1)."""
    from posecast.train.region_loss import ssim_map

    rng = np.random.default_rng(31)
    x = rng.uniform(-1, 1, (3, 13, 17))
    y = np.stack([0.3 * x[0] + 0.1, x[1] + rng.normal(0, 0.3, (13, 17)), np.roll(x[2], 2, 1)])
    y = np.clip(y, -1, 1)
    got = ssim_map(torch.tensor(x[None], dtype=torch.float64),
                   torch.tensor(y[None], dtype=torch.float64))
    assert got.shape == (1, 1, 13, 17)
    expected = np.mean([_ssim_written_out(x[c], y[c]) for c in range(3)], axis=0)
    np.testing.assert_allclose(got[0, 0].numpy(), expected, atol=1e-6)
    same = ssim_map(torch.tensor(x[None]), torch.tensor(x[None]))
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-6)
