"""Channel models for transmitted semantic maps (paper Sec. IV-A, Eq. 15, Tables VI-VII, Sec. IV-C).

Every model is a :class:`SemanticChannel`: ``channel(x, transmitted=None, generator=None)`` with ``x`` of shape
``(B, C, H, W)``; channels outside the ``(B, C)`` bool mask ``transmitted`` come out as exact zeros.
"""

from .awgn import OFFICIAL_PSNR_TO_SIGMA, AWGNChannel
from .base import SemanticChannel, check_psnr, empirical_psnr, gaussian_noise, psnr_to_sigma
from .digital import (
    BITS_PER_QPSK_SYMBOL,
    MODULATIONS,
    QAM_ORDERS,
    ComplexAWGN,
    DigitalLinkChannel,
    MultipathChannel,
    OFDMDemodulator,
    OFDMModulator,
    QAMDemodulator,
    QAMModulator,
    QPSKDemodulator,
    QPSKModulator,
    RicianFlatChannel,
    ZeroForcingEqualizer,
    bits_to_bytes,
    bytes_to_bits,
    ebn0_to_n0,
    qam_ber_awgn,
    qam_ber_rayleigh,
    qam_ber_rician,
    qpsk_ber_awgn,
    qpsk_ber_rayleigh,
)
from .factory import (
    CHANNEL_REGISTRY,
    PSNR_CONVENTIONS,
    build_channel,
    channel_for,
    channel_summary,
    describe_channel,
    resolve_psnr_convention,
    stored_psnr_convention,
)
from .fading import RayleighFadingChannel
from .poisson import PoissonChannel, PoissonGaussianChannel

__all__ = [
    "AWGNChannel",
    "BITS_PER_QPSK_SYMBOL",
    "CHANNEL_REGISTRY",
    "ComplexAWGN",
    "DigitalLinkChannel",
    "MODULATIONS",
    "MultipathChannel",
    "OFDMDemodulator",
    "OFDMModulator",
    "OFFICIAL_PSNR_TO_SIGMA",
    "PSNR_CONVENTIONS",
    "PoissonChannel",
    "PoissonGaussianChannel",
    "QAMDemodulator",
    "QAMModulator",
    "QAM_ORDERS",
    "QPSKDemodulator",
    "QPSKModulator",
    "RayleighFadingChannel",
    "RicianFlatChannel",
    "SemanticChannel",
    "ZeroForcingEqualizer",
    "bits_to_bytes",
    "build_channel",
    "bytes_to_bits",
    "channel_for",
    "channel_summary",
    "check_psnr",
    "describe_channel",
    "ebn0_to_n0",
    "empirical_psnr",
    "gaussian_noise",
    "psnr_to_sigma",
    "qam_ber_awgn",
    "qam_ber_rayleigh",
    "qam_ber_rician",
    "qpsk_ber_awgn",
    "qpsk_ber_rayleigh",
    "resolve_psnr_convention",
    "stored_psnr_convention",
]
