r"""Training objective of the semantic diffusion model (paper Sec. III-C, Eq. 9-11), in one readable place.

The math follows Improved DDPM (Nichol & Dhariwal 2021, the paper's ref. [48]) and its reference implementation,
openai/guided-diffusion ``gaussian_diffusion.py``, which SDM and GESCO build on. Notation (``t`` is the 0-based step
index ``0 .. T-1``; the paper's ``alpha_t`` in Eq. 9 is the cumulative ``abar_t`` below):

* forward process ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``, ``abar_t = prod_{s<=t} (1 - beta_s)``;
* posterior ``q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)`` with
  ``mu~_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x_0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) x_t`` and
  ``beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)``;
* model ``p(x_{t-1} | x_t, y) = N(mu_theta, Sigma_theta)``: the U-Net predicts ``eps`` (3 channels) and ``v``
  (3 channels); ``mu_theta = mu~_t(x0_hat, x_t)`` with ``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, and
  the *learned range* variance ``log Sigma_theta = frac log beta_t + (1 - frac) log beta~_t``, ``frac = (v + 1) / 2``.

Loss (Eq. 11) ``L = L_simple + lambda L_vlb``:

* ``L_simple`` (Eq. 9) ``= mean over pixels of (eps - eps_theta)^2``. Eq. 9 prints a plain 2-norm; every
  implementation (DDPM, Improved DDPM, SDM, GESCO) uses this mean *squared* error, and so do we.
* ``L_vlb = sum_t L_t`` with ``L_t = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))`` for ``t >= 1`` (Eq. 10; the paper
  writes the arguments in the other order, but the ELBO term is ``KL(q || p)``) and the decoder term
  ``L_0 = -log p(x_0 | x_1)`` under a discretised Gaussian (256 bins over [-1, 1]). Each ``L_t`` is averaged over
  pixels and measured in bits (divided by ``ln 2``), as in Improved DDPM.

**What lambda means here.** Improved DDPM sets ``lambda = 0.001`` (the paper: "according to [71]") and estimates
``L_vlb = sum_t L_t`` with one uniformly drawn ``t`` per sample: ``L_vlb ~ T * L_t``. So the per-sample term is
``lambda * T * L_t``; for the paper's ``T = 1000`` that is exactly ``1 * L_t``, which is guided-diffusion's "hybrid"
loss ``mse + vb`` (``LossType.MSE`` with ``learn_sigma``; its ``RESCALED_MSE`` multiplies ``vb`` by ``T / 1000``,
i.e. the same ``lambda = 0.001`` for any ``T``). :func:`hybrid_loss` takes ``vlb_weight = lambda`` and applies
``lambda * T * L_t``, so ``vlb_weight=0.001`` reproduces guided-diffusion/SDM bit for bit at ``T = 1000`` and stays
"lambda on the full VLB" for other ``T``.

**Stop-gradient.** As in Improved DDPM, ``L_vlb`` is computed with the predicted mean frozen (``eps`` detached): the
VLB term trains only the variance channels ``v``, while ``L_simple`` alone trains ``eps``. (The authors' released GESCO
code dropped the VLB term, leaving its variance channels untrained; reference doc section 5. This package follows the
paper.)

All schedule buffers are computed in float64 from the scheduler's configuration and cast to float32 when used.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

__all__ = [
    "PAPER_VLB_WEIGHT",
    "GaussianDiffusion",
    "betas_from_scheduler_config",
    "discretized_gaussian_log_likelihood",
    "hybrid_loss",
    "mean_flat",
    "normal_kl",
]

#: Improved DDPM's weight of the variational bound (paper Sec. IV-A: "The loss balance term lambda is set to 0.001").
PAPER_VLB_WEIGHT = 0.001


# ----------------------------------------------------------------------------------------------------------------------
# Elementwise densities


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: ``(B, ...) -> (B,)``."""
    return tensor.mean(dim=tuple(range(1, tensor.ndim)))


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    r"""Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats.

    ``KL = 1/2 [ logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1 ]``.
    Arguments broadcast against each other.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, num_bins: int = 256
) -> torch.Tensor:
    r"""Elementwise ``log P(x)`` in nats of data ``x`` in [-1, 1] quantised to ``num_bins`` levels (DDPM Eq. 13).

    Bin ``x`` covers ``[x - 1/(num_bins-1), x + 1/(num_bins-1)]`` of ``N(means, exp(log_scales)^2)``; the two end bins
    extend to -inf and +inf. Unlike guided-diffusion (which uses a tanh approximation of the normal CDF), the exact
    CDF is used, with ``log_ndtr`` in the tails so that extreme values stay finite.

    Args:
        x: target values in [-1, 1] (images scaled as in training).
        means, log_scales: the Gaussian's mean and log *standard deviation*, broadcastable to ``x``.
    """
    if x.shape != means.shape:
        raise ValueError(f"x {tuple(x.shape)} and means {tuple(means.shape)} must have the same shape")
    half_bin = 1.0 / (num_bins - 1)
    inv_std = torch.exp(-log_scales)
    centered = x - means
    upper = inv_std * (centered + half_bin)
    lower = inv_std * (centered - half_bin)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= x + half_bin): the lowest bin
    log_survival_lower = torch.special.log_ndtr(-lower)  # log P(X >= x - half_bin): the highest bin
    # Middle bins: log(Phi(upper) - Phi(lower)) = log Phi(upper) + log(1 - exp(log Phi(lower) - log Phi(upper))).
    # Written this way it is accurate even when both CDF values are tiny; the clamp keeps an empty bin finite.
    log_cdf_lower = torch.special.log_ndtr(lower)
    log_bin = log_cdf_upper + torch.log((-torch.expm1(log_cdf_lower - log_cdf_upper)).clamp(min=1e-12))
    edge = 1.0 - half_bin / 2  # 0.999 for 256 bins: x at the ends of the range
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_survival_lower, log_bin))


# ----------------------------------------------------------------------------------------------------------------------
# Schedule buffers


def betas_from_scheduler_config(config) -> torch.Tensor:
    """The scheduler's ``beta_t`` recomputed in float64 from its config (diffusers stores them in float32).

    Supports ``trained_betas`` and the ``linear``, ``scaled_linear`` and ``squaredcos_cap_v2`` schedules; the paper's
    is ``linear`` from 1e-4 to 0.02 over T = 1000 steps, i.e. guided-diffusion's ``np.linspace(..., dtype=float64)``.
    """
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    if get("trained_betas") is not None:
        return torch.as_tensor(np.asarray(get("trained_betas"), dtype=np.float64))
    T = int(get("num_train_timesteps"))
    schedule = get("beta_schedule", "linear")
    start, end = float(get("beta_start", 1e-4)), float(get("beta_end", 0.02))
    if schedule == "linear":
        betas = np.linspace(start, end, T, dtype=np.float64)
    elif schedule == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, T, dtype=np.float64) ** 2
    elif schedule == "squaredcos_cap_v2":
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])
    else:
        raise ValueError(
            f"beta_schedule {schedule!r} is not supported for training; use 'linear' (the paper's), 'scaled_linear', "
            f"'squaredcos_cap_v2' or trained_betas"
        )
    return torch.from_numpy(betas)


class GaussianDiffusion:
    """The Gaussian diffusion of the paper as tensors of per-step coefficients, with the training-time math.

    Args:
        betas: ``beta_t`` for ``t = 0 .. T-1`` (float64 recommended; stored as float64).

    Use :meth:`from_scheduler` to build it from the diffusers scheduler that samples the trained model, so training
    and sampling share one noise schedule.
    """

    def __init__(self, betas: Union[torch.Tensor, np.ndarray]) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D sequence of at least 2 values, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.num_timesteps = betas.numel()
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)  # beta~_t
        self._buffers64 = {
            "betas": betas,
            "log_betas": torch.log(betas),
            "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            # beta~_0 = 0, so log beta~ is clipped by replacing step 0 with step 1 (guided-diffusion's convention).
            "posterior_log_variance_clipped": torch.log(
                torch.cat([posterior_variance[1:2], posterior_variance[1:]])
            ),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        }
        self._cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    @classmethod
    def from_scheduler(cls, scheduler) -> "GaussianDiffusion":
        """Build from a diffusers scheduler (or its config): betas recomputed in float64 from the config."""
        return cls(betas_from_scheduler_config(getattr(scheduler, "config", scheduler)))

    def buffer(self, name: str) -> torch.Tensor:
        """The float64 buffer ``name`` (``"betas"``, ``"alphas_cumprod"``, ``"posterior_variance"``, ...)."""
        return self._buffers64[name]

    def _extract(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``buffer[t]`` as float32 on ``t``'s device, shaped ``(B, 1, ..., 1)`` to broadcast over ``ndim`` dims."""
        if t.ndim != 1:
            raise ValueError(f"timesteps must be a 1-D (B,) tensor, got shape {tuple(t.shape)}")
        cache = self._cache.get(t.device)
        if cache is None:
            cache = {k: v.to(device=t.device, dtype=torch.float32) for k, v in self._buffers64.items()}
            self._cache[t.device] = cache
        return cache[name][t.long()].reshape(-1, *([1] * (ndim - 1)))

    def check_timesteps(self, t: torch.Tensor) -> None:
        if t.is_floating_point() or int(t.min()) < 0 or int(t.max()) >= self.num_timesteps:
            raise ValueError(f"timesteps must be integers in [0, {self.num_timesteps}), got {t.tolist()}")

    # ------------------------------------------------------------------------------------------------------------------
    # Forward process and posterior

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``q(x_t | x_0)``: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (the argument of Eq. 9)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise {tuple(noise.shape)} must have the shape of x0 {tuple(x0.shape)}")
        return (self._extract("sqrt_alphas_cumprod", t, x0.ndim) * x0
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * noise)

    def q_posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)``."""
        mean = (self._extract("posterior_mean_coef1", t, x_t.ndim) * x0
                + self._extract("posterior_mean_coef2", t, x_t.ndim) * x_t)
        return (mean, self._extract("posterior_variance", t, x_t.ndim),
                self._extract("posterior_log_variance_clipped", t, x_t.ndim))

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps``."""
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t.ndim) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t.ndim) * eps)

    # ------------------------------------------------------------------------------------------------------------------
    # Reverse process

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
        variance_type: Optional[str] = None,
    ) -> dict[str, torch.Tensor]:
        """Mean and (log-)variance of ``p(x_{t-1} | x_t, y)`` from the U-Net output.

        Args:
            model_output: ``(B, C, H, W)`` eps, or ``(B, 2C, H, W)`` eps followed by the variance value ``v``.
            x_t: the noisy images ``(B, C, H, W)``.
            t: ``(B,)`` step indices.
            clip_denoised: clip ``x0_hat`` to [-1, 1] (the authors' sampler does; training does not).
            variance_type: ``"learned_range"`` (default with 2C channels), ``"fixed_large"`` (``beta_t``, with
                ``beta~_1`` at step 0; default with C channels) or ``"fixed_small"`` (``beta~_t``, clipped).

        Returns:
            ``dict(mean, variance, log_variance, pred_x0)``.
        """
        channels = x_t.shape[1]
        if model_output.shape[1] not in (channels, 2 * channels) or model_output.shape[2:] != x_t.shape[2:]:
            raise ValueError(
                f"model_output {tuple(model_output.shape)} must be (B, {channels} or {2 * channels}, H, W) for "
                f"x_t {tuple(x_t.shape)}"
            )
        learned = model_output.shape[1] == 2 * channels
        variance_type = variance_type or ("learned_range" if learned else "fixed_large")
        eps = model_output[:, :channels]
        min_log = self._extract("posterior_log_variance_clipped", t, x_t.ndim)
        if variance_type == "learned_range":
            if not learned:
                raise ValueError("variance_type='learned_range' needs the 2C-channel output (eps and v)")
            frac = (model_output[:, channels:] + 1.0) / 2.0
            max_log = self._extract("log_betas", t, x_t.ndim)
            log_variance = frac * max_log + (1.0 - frac) * min_log
        elif variance_type == "fixed_large":
            # beta_t, except beta~_1 at t = 0 so that the decoder's variance is not the (larger) beta_0 guess.
            log_betas = self._extract("log_betas", t, x_t.ndim)
            log_variance = torch.where((t == 0).reshape(-1, *([1] * (x_t.ndim - 1))), min_log, log_betas)
            log_variance = log_variance.expand_as(x_t)
        elif variance_type == "fixed_small":
            log_variance = min_log.expand_as(x_t)
        else:
            raise ValueError(f"unknown variance_type {variance_type!r}")
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "variance": torch.exp(log_variance), "log_variance": log_variance, "pred_x0": pred_x0}

    def vb_terms_bpd(
        self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample VLB term ``L_t`` in bits per dimension, ``(B,)``.

        ``L_t = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))`` for ``t >= 1`` and ``L_0 = -log p(x_0|x_1)`` (discretised
        Gaussian decoder) at ``t = 0``, both averaged over pixels and divided by ``ln 2``.
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        p = self.p_mean_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, p["mean"], p["log_variance"])) / math.log(2.0)
        decoder_nll = -mean_flat(
            discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
        ) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)


# ----------------------------------------------------------------------------------------------------------------------
# The loss of Eq. 11


def hybrid_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    diffusion: Union[GaussianDiffusion, torch.Tensor, np.ndarray],
    vlb_weight: float = PAPER_VLB_WEIGHT,
) -> dict[str, torch.Tensor]:
    r"""Per-sample training loss ``L = L_simple + lambda L_vlb`` of Eq. 11 (see the module docstring).

    Args:
        model_output: U-Net output ``(B, 2C, H, W)`` (eps, v) or ``(B, C, H, W)`` (eps only: then ``vb = 0``).
        x0: clean images ``(B, C, H, W)`` in [-1, 1].
        x_t: ``q_sample(x0, t, noise)``.
        t: ``(B,)`` integer step indices in ``[0, T)``.
        noise: the ``eps`` used to make ``x_t``.
        diffusion: a :class:`GaussianDiffusion`, or the betas to build one from.
        vlb_weight: ``lambda`` of Eq. 11, weighting the *full* VLB ``sum_t L_t``; the sampled term ``L_t`` is
            multiplied by ``lambda * T`` (1 for the paper's 0.001 and T = 1000, i.e. guided-diffusion's ``mse + vb``).

    Returns:
        ``dict(loss, mse, vb)``, each ``(B,)`` float32: ``mse`` is ``L_simple``, ``vb`` is the unweighted ``L_t`` in
        bits per dimension (its gradient reaches only the variance channels), ``loss = mse + lambda * T * vb``.
    """
    if not isinstance(diffusion, GaussianDiffusion):
        diffusion = GaussianDiffusion(diffusion)
    if not x0.shape == x_t.shape == noise.shape:
        raise ValueError(
            f"x0 {tuple(x0.shape)}, x_t {tuple(x_t.shape)} and noise {tuple(noise.shape)} must have the same shape"
        )
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    if vlb_weight < 0:
        raise ValueError(f"vlb_weight (lambda) must be non-negative, got {vlb_weight}")
    diffusion.check_timesteps(t)
    # The loss is always computed in float32, whatever precision the U-Net ran in.
    model_output, x0, x_t, noise = model_output.float(), x0.float(), x_t.float(), noise.float()
    channels = x0.shape[1]
    eps = model_output[:, :channels]
    mse = mean_flat((noise - eps) ** 2)
    if model_output.shape[1] == 2 * channels and vlb_weight > 0:
        # Stop-gradient on the mean: the VLB term may only move the variance (Improved DDPM Sec. 3.1).
        frozen = torch.cat([eps.detach(), model_output[:, channels:]], dim=1)
        vb = diffusion.vb_terms_bpd(frozen, x0, x_t, t)
    else:
        vb = torch.zeros_like(mse)
    loss = mse + vlb_weight * diffusion.num_timesteps * vb
    return {"loss": loss, "mse": mse, "vb": vb}
