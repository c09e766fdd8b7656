"""Channel models for transmitted semantic maps (paper Sec. IV-A, Eq. 15, Tables VI-VII, Sec. IV-C).

Every model is a :class:`SemanticChannel`: ``channel(x, transmitted=None, generator=None)`` with ``x`` of shape
``(B, C, H, W)``; channels outside the ``(B, C)`` bool mask ``transmitted`` come out as exact zeros.

Names load on first use (diffusers' pattern): importing the package, or the names of :mod:`.registry`, imports no
torch.
"""

from ..utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "awgn": ("AWGNChannel", "OFFICIAL_PSNR_TO_SIGMA"),
    "base": ("check_psnr", "empirical_psnr", "gaussian_noise", "psnr_to_sigma", "SemanticChannel"),
    "digital": ("BITS_PER_QPSK_SYMBOL", "bits_to_bytes", "bytes_to_bits", "ComplexAWGN", "DigitalLinkChannel",
        "ebn0_to_n0", "MultipathChannel", "OFDMDemodulator", "OFDMModulator", "qam_ber_awgn", "qam_ber_rayleigh",
        "qam_ber_rician", "QAM_ORDERS", "QAMDemodulator", "QAMModulator", "qpsk_ber_awgn", "qpsk_ber_rayleigh",
        "QPSKDemodulator", "QPSKModulator", "RicianFlatChannel", "ZeroForcingEqualizer"),
    "factory": ("build_channel", "channel_for", "channel_summary", "describe_channel", "resolve_psnr_convention",
        "stored_psnr_convention"),
    "fading": ("RayleighFadingChannel",),
    "poisson": ("PoissonChannel", "PoissonGaussianChannel"),
    "registry": ("CHANNEL_REGISTRY", "MODULATIONS", "PSNR_CONVENTIONS"),
})
