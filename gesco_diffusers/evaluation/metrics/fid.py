"""Fréchet Inception Distance (FID, Sec. IV-A, Tables I and IV).

FID fits a Gaussian to the features of each image set and measures the Fréchet (2-Wasserstein) distance between
them:

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})

with ``mu``/``S`` the mean and the unbiased (N - 1) covariance of the features. ``Tr((S_r S_g)^{1/2})`` is computed
exactly in float64 as ``sum_i sqrt(lambda_i)`` over the eigenvalues of the symmetric PSD matrix
``S_r^{1/2} S_g S_r^{1/2}`` (which has the same eigenvalues as ``S_r S_g``), with ``S_r^{1/2}`` from a symmetric
eigen-decomposition; rounding-level negative eigenvalues (> -1e-8 of the largest) are treated as 0.

Features come either from the standard FID network (the TF-Inception-2015 port of torch-fidelity, 2048-d pool
features, the network torchmetrics' ``FrechetInceptionDistance`` uses) loaded from a *local* weights file, or from any
``torch.nn.Module`` mapping ``(B, 3, H, W)`` images in ``[0, 1]`` to ``(B, D)`` features.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch

from ._inputs import ImageInput, as_image_batch, check_batch_size
from ._pretrained import prepare_model, resolve_device

#: Release asset of torch-fidelity with the FID InceptionV3 weights (ported from TF "2015-12-05").
FID_INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


def default_fid_weights_path() -> Path:
    """Where torch-fidelity caches the FID Inception weights: ``<torch hub dir>/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]


def _check_covariance(sigma: torch.Tensor, name: str) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(sigma.shape)}")
    if not torch.isfinite(sigma).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not torch.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-9 * max(1.0, sigma.abs().max().item())):
        raise ValueError(f"{name} is not symmetric")
    return (sigma + sigma.T) / 2


def _psd_eigen(matrix: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix; rounding-level negative eigenvalues become 0."""
    values, vectors = torch.linalg.eigh(matrix)
    tolerance = 1e-8 * max(values.abs().max().item(), 1e-300)
    if values.min().item() < -tolerance:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {values.min().item():.3g})")
    return values.clamp_min(0.0), vectors


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric PSD square root ``A^{1/2}`` of a symmetric PSD matrix (float64)."""
    values, vectors = _psd_eigen(_check_covariance(matrix, "matrix"), "matrix")
    return (vectors * values.sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})`` of two Gaussians (float64, exact)."""
    mu1 = torch.as_tensor(mu1, dtype=torch.float64)
    mu2 = torch.as_tensor(mu2, dtype=torch.float64)
    sigma1 = _check_covariance(sigma1, "sigma1")
    sigma2 = _check_covariance(sigma2, "sigma2")
    d = mu1.shape[-1] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != mu1.shape or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"inconsistent shapes: mu1 {tuple(mu1.shape)}, mu2 {tuple(mu2.shape)}, sigma1 {tuple(sigma1.shape)}, "
            f"sigma2 {tuple(sigma2.shape)}"
        )
    root1 = sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues, _ = _psd_eigen((middle + middle.T) / 2, "sqrt(sigma1) sigma2 sqrt(sigma1)")
    trace_sqrt = eigenvalues.sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(value)


class FeatureStatistics:
    """Running mean and covariance of feature vectors, accumulated exactly in float64 over batches."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: Optional[torch.Tensor] = None
        self._outer: Optional[torch.Tensor] = None

    def update(self, features: torch.Tensor) -> "FeatureStatistics":
        features = torch.as_tensor(features).detach().to("cpu", torch.float64)
        if features.ndim != 2:
            raise ValueError(f"features must have shape (N, D), got {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or inf")
        if self._sum is None:
            self._sum = torch.zeros(features.shape[1], dtype=torch.float64)
            self._outer = torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64)
        elif features.shape[1] != self._sum.shape[0]:
            raise ValueError(f"feature dimension changed from {self._sum.shape[0]} to {features.shape[1]}")
        self.count += features.shape[0]
        self._sum += features.sum(dim=0)
        self._outer += features.T @ features
        return self

    def merge(self, other: "FeatureStatistics") -> "FeatureStatistics":
        """Add another accumulator's float64 sums (e.g. another process's): the statistics of both sets, exactly as
        one accumulator over both would hold them up to float64 rounding (sums, never averages of averages)."""
        if other.count == 0:
            return self
        if self._sum is None:
            self._sum, self._outer = other._sum.clone(), other._outer.clone()
        elif other._sum.shape != self._sum.shape:
            raise ValueError(f"cannot merge features of dimension {other._sum.shape[0]} into {self._sum.shape[0]}")
        else:
            self._sum += other._sum
            self._outer += other._outer
        self.count += other.count
        return self

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        mean = self._sum / self.count
        covariance = (self._outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, (covariance + covariance.T) / 2


class _InceptionPool3(torch.nn.Module):
    """The standard FID network: images in [0, 1] -> uint8 (what it expects) -> 2048-d pool features."""

    def __init__(self, weights_path: Path):
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as error:  # pragma: no cover - torchmetrics is installed with the metrics extra
            raise ModuleNotFoundError("FID needs torchmetrics: pip install gesco-diffusers[metrics]") from error
        try:
            import torch_fidelity  # noqa: F401  (NoTrainInceptionV3 is built on it)
        except ImportError as error:
            raise ModuleNotFoundError(
                "the standard FID Inception network needs torch-fidelity: pip install torch-fidelity "
                "(or pass any torch.nn.Module as feature_extractor)"
            ) from error
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images * 255).round().to(torch.uint8))


def load_fid_inception(weights_path: Optional[Union[str, os.PathLike]] = None) -> torch.nn.Module:
    """The FID InceptionV3 from a local file (default: :func:`default_fid_weights_path`)."""
    path = Path(weights_path) if weights_path is not None else default_fid_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"FID Inception weights not found at {path}. Nothing can be downloaded at evaluation time: fetch "
            f"{FID_INCEPTION_WEIGHTS_URL} on a machine with internet and put it at {default_fid_weights_path()} "
            "(or pass its path), or pass your own torch.nn.Module as feature_extractor."
        )
    return _InceptionPool3(path)


class FIDMetric:
    """FID between a set of real and a set of generated images, accumulated over batches.

    Args:
        feature_extractor: ``None`` -> the standard FID Inception from :func:`default_fid_weights_path`; a path ->
            the FID Inception weights file; a ``torch.nn.Module`` -> any network mapping ``(B, 3, H, W)`` images in
            ``[0, 1]`` to ``(B, D)`` (or ``(B, D, 1, 1)``) features.
        device: where the network runs (default CPU).
        batch_size: images per forward pass.

    Example::

        fid = FIDMetric(tiny_net)
        fid.update(real_images, real=True)
        fid.update(generated_images, real=False)
        value = fid.compute()
    """

    def __init__(
        self,
        feature_extractor: Union[None, str, os.PathLike, torch.nn.Module] = None,
        *,
        device: Optional[Union[str, torch.device]] = None,
        batch_size: int = 50,
    ):
        if feature_extractor is None or isinstance(feature_extractor, (str, os.PathLike)):
            feature_extractor = load_fid_inception(feature_extractor)
        if not isinstance(feature_extractor, torch.nn.Module):
            raise TypeError(f"feature_extractor must be None, a path or a torch.nn.Module, got {type(feature_extractor)}")
        self.device = resolve_device(device)
        self.feature_extractor = prepare_model(feature_extractor, self.device)
        self.batch_size = check_batch_size(batch_size)
        self.real = FeatureStatistics()
        self.generated = FeatureStatistics()

    @torch.no_grad()
    def features(self, images: ImageInput) -> torch.Tensor:
        """``(N, D)`` features of a batch of images."""
        x = as_image_batch(images)
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            feats = self.feature_extractor(x[start : start + self.batch_size].to(self.device))
            out.append(feats.reshape(feats.shape[0], -1).double().cpu())
        return torch.cat(out)

    def update(self, images: ImageInput, real: bool) -> "FIDMetric":
        (self.real if real else self.generated).update(self.features(images))
        return self

    def reset(self) -> None:
        self.real, self.generated = FeatureStatistics(), FeatureStatistics()

    def compute(self) -> float:
        mu_r, sigma_r = self.real.mean_and_covariance()
        mu_g, sigma_g = self.generated.mean_and_covariance()
        return frechet_distance(mu_r, sigma_r, mu_g, sigma_g)
