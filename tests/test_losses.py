"""The training loss of Eq. 9-11 (gesco_diffusers/diffusion/losses.py), checked against independent closed forms."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from scipy.stats import norm

from gesco_diffusers.diffusion import (
    PAPER_DIFFUSION_CONFIG,
    GaussianDiffusion,
    betas_from_scheduler_config,
    default_scheduler,
    hybrid_loss,
    normal_kl,
)

TOY_BETAS = np.array([0.05, 0.1, 0.2, 0.3, 0.4])


def toy_inputs(t, seed=0, batch=None):
    """x0 in [-1, 1] (the ends included), noise, v and eps for the 5-step toy diffusion, as float64 numpy."""
    rng = np.random.default_rng(seed)
    batch = batch or len(t)
    x0 = rng.uniform(-1, 1, size=(batch, 3, 4, 5))
    x0[:, 0, 0, 0], x0[:, 0, 0, 1] = -1.0, 1.0
    noise = rng.standard_normal(x0.shape)
    eps = noise + 0.3 * rng.standard_normal(x0.shape)  # an imperfect prediction
    v = rng.uniform(-1, 1, size=x0.shape)
    return x0, noise, eps, v


def closed_form_vb_bits(x0, x_t, eps, v, t, betas):
    """Per-sample L_t in bits/dim written from the DDPM / Improved DDPM formulas, independently of the package.

    t >= 1: KL(N(m_q, s_q^2) || N(m_p, s_p^2)) = log(s_p/s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2.
    t = 0: -log of the Gaussian mass of the pixel's bin [x - 1/255, x + 1/255] (open-ended at -1 and 1).
    """
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    out = []
    for i, ti in enumerate(t):
        ab, ab_prev = abar[ti], (abar[ti - 1] if ti > 0 else 1.0)
        x0_hat = (x_t[i] - np.sqrt(1 - ab) * eps[i]) / np.sqrt(ab)

        def post_mean(x_start):
            return (np.sqrt(ab_prev) * betas[ti] / (1 - ab)) * x_start + (
                np.sqrt(alphas[ti]) * (1 - ab_prev) / (1 - ab)) * x_t[i]

        post_var = lambda k: betas[k] * (1 - abar[k - 1]) / (1 - abar[k])  # noqa: E731, valid for k >= 1
        log_min = math.log(post_var(max(ti, 1)))  # beta~_0 = 0 is clipped to beta~_1
        frac = (v[i] + 1) / 2
        var_p = np.exp(frac * math.log(betas[ti]) + (1 - frac) * log_min)
        m_p = post_mean(x0_hat)
        if ti > 0:
            m_q, var_q = post_mean(x0[i]), post_var(ti)
            kl = 0.5 * np.log(var_p / var_q) + (var_q + (m_q - m_p) ** 2) / (2 * var_p) - 0.5
            out.append(kl.mean() / math.log(2))
        else:
            s = np.sqrt(var_p)
            upper = norm.cdf((x0[i] + 1 / 255 - m_p) / s)
            lower = norm.cdf((x0[i] - 1 / 255 - m_p) / s)
            mass = np.where(x0[i] < -0.999, upper, np.where(x0[i] > 0.999, 1 - lower, upper - lower))
            out.append(-np.log(mass).mean() / math.log(2))
    return np.array(out)


def run_hybrid(t, seed=0, vlb_weight=0.001, betas=TOY_BETAS):
    x0, noise, eps, v = toy_inputs(t, seed)
    diffusion = GaussianDiffusion(betas)
    tt = torch.tensor(t)
    x0_t, noise_t = torch.tensor(x0, dtype=torch.float32), torch.tensor(noise, dtype=torch.float32)
    x_t = diffusion.q_sample(x0_t, tt, noise_t)
    model_output = torch.tensor(np.concatenate([eps, v], axis=1), dtype=torch.float32, requires_grad=True)
    terms = hybrid_loss(model_output, x0_t, x_t, tt, noise_t, diffusion, vlb_weight)
    return terms, model_output, (x0, noise, eps, v, x_t.double().numpy())


def test_vb_equals_closed_form_kl_and_decoder_nll():
    t = [0, 1, 2, 4, 3, 0]
    terms, _, (x0, noise, eps, v, x_t) = run_hybrid(t)
    expected = closed_form_vb_bits(x0, x_t, eps, v, t, TOY_BETAS)
    np.testing.assert_allclose(terms["vb"].detach().double().numpy(), expected, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(terms["mse"].detach().numpy(), ((noise - eps) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_lambda_weights_the_full_vlb():
    # lambda * T * L_t: with T = 5 and lambda = 0.1 the sampled term counts half.
    terms, _, _ = run_hybrid([1, 3], vlb_weight=0.1)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.5 * terms["vb"])
    # The paper's lambda = 0.001 at T = 1000 is exactly guided-diffusion's hybrid loss mse + vb.
    diffusion = GaussianDiffusion.from_scheduler(default_scheduler())
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1, torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([0, 637])
    out = torch.randn(2, 6, 4, 4, generator=g)
    terms = hybrid_loss(out, x0, diffusion.q_sample(x0, t, noise), t, noise, diffusion)
    assert torch.equal(terms["loss"], terms["mse"] + terms["vb"])
    assert (terms["vb"] > 0).all()


def test_vb_gradient_reaches_only_the_variance_channels():
    terms, model_output, _ = run_hybrid([0, 2, 4])
    terms["vb"].sum().backward()
    grad = model_output.grad
    assert torch.count_nonzero(grad[:, :3]) == 0  # the mean is frozen (stop-gradient)
    assert torch.count_nonzero(grad[:, 3:]) == grad[:, 3:].numel()
    model_output.grad = None
    terms["mse"].sum().backward()
    assert torch.count_nonzero(model_output.grad[:, 3:]) == 0
    assert torch.count_nonzero(model_output.grad[:, :3]) > 0


def test_fixed_variance_output_has_no_vb_term():
    diffusion = GaussianDiffusion(TOY_BETAS)
    x0, noise = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    t = torch.tensor([2])
    terms = hybrid_loss(torch.zeros(1, 3, 2, 2), x0, diffusion.q_sample(x0, t, noise), t, noise, diffusion)
    assert terms["vb"].item() == 0.0 and terms["loss"].item() == pytest.approx(1.0)


def test_buffers_match_the_schedulers_in_float64():
    scheduler = default_scheduler()
    diffusion = GaussianDiffusion.from_scheduler(scheduler)
    betas = diffusion.buffer("betas")
    assert betas.dtype == torch.float64 and diffusion.num_timesteps == 1000
    assert torch.equal(betas, torch.from_numpy(np.linspace(1e-4, 0.02, 1000, dtype=np.float64)))
    torch.testing.assert_close(diffusion.buffer("alphas_cumprod").float(), scheduler.alphas_cumprod, atol=1e-6,
                               rtol=1e-5)
    for schedule in ("scaled_linear", "squaredcos_cap_v2"):
        ddpm = DDPMScheduler(num_train_timesteps=50, beta_schedule=schedule)
        torch.testing.assert_close(betas_from_scheduler_config(ddpm.config).float(), ddpm.betas)


def test_q_sample_and_learned_range_variance_match_diffusers_ddpm():
    scheduler = DDPMScheduler(**PAPER_DIFFUSION_CONFIG, variance_type="learned_range")
    diffusion = GaussianDiffusion.from_scheduler(scheduler)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1, torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([1, 400, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(x_t, scheduler.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)
    v = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    p = diffusion.p_mean_variance(torch.cat([noise, v], 1), x_t, t)
    for i, ti in enumerate(t.tolist()):
        expected = scheduler._get_variance(ti, predicted_variance=v[i])  # diffusers returns the log-variance here
        torch.testing.assert_close(p["log_variance"][i], expected, atol=1e-4, rtol=1e-4)
    # v = -1 / +1 are the two ends of the range: log beta~_t (clipped) and log beta_t.
    ends = diffusion.p_mean_variance(torch.cat([noise, -torch.ones_like(v)], 1), x_t, t)["log_variance"]
    torch.testing.assert_close(ends[:, 0, 0, 0], diffusion.buffer("posterior_log_variance_clipped")[t].float())
    ends = diffusion.p_mean_variance(torch.cat([noise, torch.ones_like(v)], 1), x_t, t)["log_variance"]
    torch.testing.assert_close(ends[:, 0, 0, 0], diffusion.buffer("betas")[t].log().float())


def test_normal_kl_is_zero_for_equal_gaussians_and_positive_otherwise():
    m, lv = torch.tensor([0.3, -1.0]), torch.tensor([-2.0, 0.5])
    assert torch.allclose(normal_kl(m, lv, m, lv), torch.zeros(2))
    assert (normal_kl(m, lv, m + 0.1, lv - 0.2) > 0).all()


def test_bad_inputs_are_rejected():
    diffusion = GaussianDiffusion(TOY_BETAS)
    x = torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError, match="timesteps"):
        hybrid_loss(torch.zeros(2, 6, 2, 2), x, x, torch.tensor([0, 5]), x, diffusion)
    with pytest.raises(ValueError, match="same shape"):
        hybrid_loss(torch.zeros(2, 6, 2, 2), x, x, torch.tensor([0, 1]), torch.zeros(2, 3, 2, 3), diffusion)
    with pytest.raises(ValueError, match="model_output"):
        diffusion.p_mean_variance(torch.zeros(2, 4, 2, 2), x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        hybrid_loss(torch.zeros(2, 6, 2, 2), x, x, torch.tensor([0, 1]), x, diffusion, vlb_weight=-1)
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion([0.1, 1.5])


def test_x0_clipping_of_the_default_sampler_is_static_clipping_to_the_image_range():
    """diffusers' ``thresholding`` with ``sample_max_value=1`` clamps its percentile threshold to 1: whatever the
    spread of x0, it clips to [-1, 1] (what DDPM's ``clip_sample`` does), which is why it is not called dynamic."""
    from gesco_diffusers.diffusion import X0_CLIPPING, default_scheduler

    scheduler = default_scheduler()
    assert all(scheduler.config[key] == value for key, value in X0_CLIPPING.items())
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3.0  # |x0| up to ~10
    torch.testing.assert_close(scheduler._threshold_sample(x0.clone()), x0.clamp(-1.0, 1.0))
