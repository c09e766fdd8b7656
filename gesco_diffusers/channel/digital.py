"""A digital link for the trace-driven evaluation of paper Sec. IV-C, built from small composable blocks.

    bits -> Gray M-QAM -> OFDM (N subcarriers, cyclic prefix) -> channel (flat Rayleigh/Rician or multipath)
         -> AWGN at Eb/N0 -> OFDM demodulation -> zero-forcing equalisation per subcarrier
         -> hard decisions (nearest point) or max-log LLRs -> bits

Each block is a ``torch.nn.Module`` working on batches of OFDM frames (one frame = one OFDM symbol of
``N`` subcarriers = ``k N`` bits, ``k = log2 M`` bits per symbol: QPSK (the paper's), 16-, 64- or 256-QAM);
:class:`DigitalLinkChannel` chains them and is also a :class:`~gesco_diffusers.channel.SemanticChannel`, carrying the
one-hot elements directly as bits as the paper does (reference doc 1.5), or a codec bitstream through
:meth:`DigitalLinkChannel.transmit_bits`. As in Sionna's ``phy`` blocks, the noise level is a call argument of the
blocks that need it (``ComplexAWGN``, the soft ``QAMDemodulator``).

Energy conventions (used by every block):

* Constellations have unit average energy, ``Es = 1`` (over equiprobable points); the unitary (I)FFT keeps it per
  time sample.
* Eb/N0 definition: ``N0 = Es / (k * Eb/N0)`` with ``k = log2 M`` bits per symbol (2 for QPSK). ``Es`` is the
  average symbol energy at the transmitter (``es_reference="transmitter"``, default; channels have unit average
  power ``E|H[k]|^2 = 1``, so this is also the *average* received Es and the textbook BER curves apply) or the energy
  of each frame measured at the receiver input before the noise (``es_reference="receiver"``, what the authors' 2025
  script does per sample, reference doc 1.5: it normalises away each frame's fading power). The cyclic-prefix
  overhead ``(N + CP) / N`` is not charged to ``Eb``, as in the reference (and in Sionna's ``ebnodb2no`` without a
  resource grid).
* The noise is complex circular, ``CN(0, N0)`` per time sample, which stays ``CN(0, N0)`` per subcarrier; after zero
  forcing, subcarrier ``k`` carries ``CN(0, N0 / |H[k]|^2)`` noise, the variance the soft demapper is given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .base import SemanticChannel, gaussian_noise
from .registry import MODULATIONS

__all__ = [
    "BITS_PER_QPSK_SYMBOL",
    "QAM_ORDERS",
    "ComplexAWGN",
    "DigitalLinkChannel",
    "MultipathChannel",
    "OFDMDemodulator",
    "OFDMModulator",
    "QAMDemodulator",
    "QAMModulator",
    "QPSKDemodulator",
    "QPSKModulator",
    "RicianFlatChannel",
    "ZeroForcingEqualizer",
    "bits_to_bytes",
    "bytes_to_bits",
    "ebn0_to_n0",
    "qam_ber_awgn",
    "qam_ber_rayleigh",
    "qam_ber_rician",
    "qpsk_ber_awgn",
    "qpsk_ber_rayleigh",
]

BITS_PER_QPSK_SYMBOL = 2
#: Constellation sizes ``M`` of the square Gray QAM blocks (4-QAM is QPSK).
QAM_ORDERS: tuple[int, ...] = (4, 16, 64, 256)
_LINK_CHANNELS = ("awgn", "rayleigh_flat", "rician_flat", "multipath")
_ES_REFERENCES = ("transmitter", "receiver")

EbN0 = Union[None, float, Sequence[float], np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------------
# Bits, bytes and closed-form references
# ----------------------------------------------------------------------------------------------------------------


def _check_bits(bits: torch.Tensor, name: str = "bits") -> torch.Tensor:
    """Return ``bits`` as uint8 after checking that it holds only 0s and 1s."""
    if not isinstance(bits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(bits).__name__}")
    if bits.is_floating_point() or bits.is_complex():
        raise TypeError(f"{name} must be an integer or bool tensor of 0/1, got dtype {bits.dtype}")
    if bits.numel() and not bool(((bits == 0) | (bits == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1")
    return bits.to(torch.uint8)


def bytes_to_bits(data: Union[bytes, bytearray]) -> torch.Tensor:
    """``bytes`` -> 1-D uint8 tensor of ``8 * len(data)`` bits, most significant bit of each byte first."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return torch.from_numpy(np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)).copy())


def bits_to_bytes(bits: torch.Tensor) -> bytes:
    """Inverse of :func:`bytes_to_bits`: a 1-D 0/1 tensor whose length is a multiple of 8 -> ``bytes``."""
    bits = _check_bits(bits)
    if bits.dim() != 1 or bits.numel() % 8:
        raise ValueError(f"bits must be 1-D with a length that is a multiple of 8, got shape {tuple(bits.shape)}")
    return np.packbits(bits.cpu().numpy()).tobytes()


def ebn0_to_n0(ebn0_db: Union[float, torch.Tensor], es: Union[float, torch.Tensor] = 1.0,
               bits_per_symbol: int = BITS_PER_QPSK_SYMBOL) -> Union[float, torch.Tensor]:
    """Noise power spectral density ``N0 = Es / (k * 10^(Eb/N0 / 10))`` (``inf`` dB gives ``N0 = 0``)."""
    if isinstance(ebn0_db, torch.Tensor):
        return es / (bits_per_symbol * torch.pow(10.0, ebn0_db / 10.0))
    return es / (bits_per_symbol * 10.0 ** (ebn0_db / 10.0))


def qpsk_ber_awgn(ebn0_db: float) -> float:
    """Theoretical Gray-QPSK bit error rate over AWGN: ``Q(sqrt(2 Eb/N0)) = erfc(sqrt(Eb/N0)) / 2``."""
    return 0.5 * math.erfc(math.sqrt(10.0 ** (ebn0_db / 10.0)))


def qpsk_ber_rayleigh(ebn0_db: float) -> float:
    """Theoretical Gray-QPSK BER over flat Rayleigh fading with coherent detection: ``(1 - sqrt(g / (1 + g))) / 2``,
    ``g`` the average Eb/N0 (linear)."""
    g = 10.0 ** (ebn0_db / 10.0)
    return 0.5 * (1.0 - math.sqrt(g / (1.0 + g)))


def _check_order(order: Any, name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or int(order) not in QAM_ORDERS:
        raise ValueError(f"{name} must be one of {QAM_ORDERS} (square Gray M-QAM), got {order!r}")
    return int(order)


def _check_real(value: Any, name: str, minimum: float = -math.inf) -> float:
    """A real number (``+inf`` allowed) ``>= minimum``; NaN, bools and non-numbers are refused, naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or value < minimum or value == -math.inf:
        bound = "" if minimum == -math.inf else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a number{bound} (inf allowed), got {value}")
    return value


def _qam_ber_terms(order: int) -> list[tuple[float, float]]:
    """Pairs ``(w_j, c_j)`` with ``BER(g) = sum_j w_j erfc(c_j sqrt(g))`` for Gray square M-QAM over AWGN, ``g`` the
    Eb/N0 (linear): Cho & Yoon (2002), with ``L = sqrt(M)`` levels and ``m = log2 L`` bits per dimension,

        ``BER = (1 / m) sum_{h=1..m} P(h)``,
        ``P(h) = (1 / L) sum_{i=0..(1 - 2^-h) L - 1} (-1)^floor(i 2^(h-1) / L) (2^(h-1) - floor(i 2^(h-1) / L + 1/2))
        erfc((2 i + 1) sqrt(3 log2(M) g / (2 (M - 1))))``.
    """
    levels = math.isqrt(order)
    m = levels.bit_length() - 1
    scale = math.sqrt(3.0 * math.log2(order) / (2.0 * (order - 1)))
    weights: dict[int, float] = {}
    for h in range(1, m + 1):
        half = 2 ** (h - 1)
        for i in range(levels - levels // 2 ** h):
            sign = -1.0 if (i * half // levels) % 2 else 1.0
            weights[i] = weights.get(i, 0.0) + sign * (half - (2 * i * half + levels) // (2 * levels)) / (levels * m)
    return [(w, (2 * i + 1) * scale) for i, w in sorted(weights.items()) if w != 0.0]


def _ebn0_linear(ebn0_db: Any) -> float:
    return 10.0 ** (_check_real(ebn0_db, "ebn0_db") / 10.0)


def qam_ber_awgn(order: int, ebn0_db: float) -> float:
    """Exact bit error rate of Gray-coded square M-QAM (``M`` in :data:`QAM_ORDERS`) with nearest-point detection
    over AWGN at ``Eb/N0`` dB: a weighted sum of ``erfc((2 i + 1) sqrt(3 log2(M) Eb/N0 / (2 (M - 1))))`` terms.

    The exact expression of K. Cho and D. Yoon, "On the general BER expression of one- and two-dimensional amplitude
    modulations", IEEE Trans. Commun. 50(7):1074-1080, 2002 (not the nearest-neighbour approximation); for
    ``M = 4`` it is :func:`qpsk_ber_awgn`, for ``M = 16`` ``3/8 erfc(d) + 1/4 erfc(3 d) - 1/8 erfc(5 d)``,
    ``d = sqrt(2 Eb/N0 / 5)``. It holds for any Gray labelling that is binary-reflected per dimension, such as the
    3GPP TS 38.211 Sec. 5.1 one of :class:`QAMModulator`.
    """
    g = _ebn0_linear(ebn0_db)
    return float(sum(w * math.erfc(c * math.sqrt(g)) for w, c in _qam_ber_terms(_check_order(order))))


def qam_ber_rayleigh(order: int, ebn0_db: float) -> float:
    """Exact BER of Gray square M-QAM over flat Rayleigh fading (``|h|^2 ~ Exp(1)``) with coherent detection and
    zero forcing, at *average* ``Eb/N0`` dB ``g``: :func:`qam_ber_awgn`'s sum with each term averaged in closed form,

        ``E[erfc(c sqrt(g |h|^2))] = 1 - sqrt(c^2 g / (1 + c^2 g))``

    (the BPSK-over-Rayleigh integral, Proakis & Salehi, Digital Communications, 5th ed., Sec. 13.3, at SNR
    ``c^2 g``). It also holds per subcarrier for OFDM over :class:`MultipathChannel` (every ``H[k] ~ CN(0, 1)``).
    """
    g = _ebn0_linear(ebn0_db)
    total = 0.0
    for w, c in _qam_ber_terms(_check_order(order)):
        snr = c * c * g
        total += w * (0.0 if math.isinf(snr) else 1.0 - math.sqrt(snr / (1.0 + snr)))
    return float(total)


_CRAIG_NODES, _CRAIG_WEIGHTS = np.polynomial.legendre.leggauss(256)


def qam_ber_rician(order: int, ebn0_db: float, k_factor: float) -> float:
    """BER of Gray square M-QAM over flat Rician fading with Rice factor ``K`` (unit mean power, see
    :class:`RicianFlatChannel`), coherent detection and zero forcing, at *average* ``Eb/N0`` dB ``g``.

    Each term of :func:`qam_ber_awgn` is averaged over the fading with Craig's form of the complementary error
    function, ``erfc(x) = (2 / pi) int_0^(pi/2) exp(-x^2 / sin^2 t) dt`` (J. W. Craig, MILCOM 1991; Simon & Alouini,
    Digital Communication over Fading Channels, 2nd ed. 2005, Eq. 4.2), and the moment generating function of the
    Rician SNR ``G = g |h|^2`` (Simon & Alouini, Table 2.2),

        ``E[exp(s G)] = (1 + K) / (1 + K - s g) exp(K s g / (1 + K - s g))``,

    so ``E[erfc(c sqrt(G))] = (2 / pi) int_0^(pi/2) E[exp(-c^2 G / sin^2 t)] dt``, integrated numerically with
    256-point Gauss-Legendre quadrature (a smooth integrand on a finite interval; agrees with
    :func:`qam_ber_rayleigh` at ``K = 0`` to about 1e-15). ``K = inf`` is :func:`qam_ber_awgn`.
    """
    k = _check_real(k_factor, "k_factor", 0.0)
    order = _check_order(order)
    if math.isinf(k):
        return qam_ber_awgn(order, ebn0_db)
    g = _ebn0_linear(ebn0_db)
    theta = (_CRAIG_NODES + 1.0) * (math.pi / 4.0)  # [-1, 1] -> [0, pi/2]
    sin2 = np.sin(theta) ** 2
    total = 0.0
    for w, c in _qam_ber_terms(order):
        if math.isinf(g):
            continue
        x = c * c * g / sin2  # -s g with s = -c^2 / sin^2 t
        mgf = (1.0 + k) / (1.0 + k + x) * np.exp(-k * x / (1.0 + k + x))
        total += w * (2.0 / math.pi) * (math.pi / 4.0) * float(np.dot(_CRAIG_WEIGHTS, mgf))
    return float(total)


# ----------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------


class QPSKModulator(nn.Module):
    """Gray QPSK: bit pairs ``(b0, b1)`` -> ``((1 - 2 b0) + j (1 - 2 b1)) / sqrt(2)``.

    That is ``{00: 1+1j, 01: 1-1j, 10: -1+1j, 11: -1-1j} / sqrt(2)`` (reference doc 1.5), unit average energy.
    Input ``(..., 2n)`` 0/1 bits, output ``(..., n)`` complex64 symbols.
    """

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        bits = _check_bits(bits)
        if bits.dim() == 0 or bits.shape[-1] % BITS_PER_QPSK_SYMBOL:
            raise ValueError(f"the last dimension of bits must be even (2 bits per symbol), got {tuple(bits.shape)}")
        signs = 1.0 - 2.0 * bits.to(torch.float32).reshape(*bits.shape[:-1], bits.shape[-1] // 2, 2)
        return torch.complex(signs[..., 0], signs[..., 1]) / math.sqrt(2.0)


class QPSKDemodulator(nn.Module):
    """Hard-decision Gray QPSK: ``b0 = [Re(y) < 0]``, ``b1 = [Im(y) < 0]``; ``(..., n)`` complex -> ``(..., 2n)`` bits.

    A symbol exactly on a decision boundary (e.g. 0 after a zero channel gain) decides 0.
    """

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        if not symbols.is_complex():
            raise TypeError(f"symbols must be a complex tensor, got dtype {symbols.dtype}")
        bits = torch.stack([symbols.real < 0, symbols.imag < 0], dim=-1)
        return bits.reshape(*symbols.shape[:-1], 2 * symbols.shape[-1]).to(torch.uint8)


def _gray_pam_level(bits: Sequence[int]) -> int:
    """Gray PAM level of the bits ``(c_0, .., c_{m-1})``, the recursion of 3GPP TS 38.211 Sec. 5.1:
    ``(1 - 2 c_0) (2^(m-1) - level(c_1, .., c_{m-1}))``, ``level(c) = 1 - 2 c`` for one bit; values
    ``+-1, .., +-(2^m - 1)``.
    """
    if len(bits) == 1:
        return 1 - 2 * bits[0]
    return (1 - 2 * bits[0]) * (2 ** (len(bits) - 1) - _gray_pam_level(bits[1:]))


class QAMModulator(nn.Module):
    """Gray-coded square M-QAM, ``M`` in :data:`QAM_ORDERS`, with unit average energy (``Es = 1``).

    Each group of ``k = log2 M`` bits ``(b_0, .., b_{k-1})`` becomes ``(a(b_0, b_2, ..) + j a(b_1, b_3, ..)) / s``:
    the even bits pick the in-phase level, the odd bits the quadrature one, each with the Gray PAM recursion of
    3GPP TS 38.211 Sec. 5.1 (:func:`_gray_pam_level`: the first bit of a dimension is its sign, the next ones fold
    towards the centre), and ``s = sqrt(2 (M - 1) / 3)`` (``sqrt(2)``, ``sqrt(10)``, ``sqrt(42)``, ``sqrt(170)``)
    makes the average energy over equiprobable points 1. Neighbouring points differ in one bit. ``M = 4`` is
    exactly :class:`QPSKModulator`; the labelling is that of 5G NR and of Sionna's ``qam()`` (point ``n`` of
    :attr:`constellation` carries the bits of ``n``, most significant first).

    Input ``(..., k n)`` 0/1 bits, output ``(..., n)`` complex64 symbols.
    """

    def __init__(self, order: int = 16) -> None:
        super().__init__()
        self.order = _check_order(order)
        self.bits_per_symbol = self.order.bit_length() - 1
        per_dim = self.bits_per_symbol // 2
        labels = [[(j >> (per_dim - 1 - i)) & 1 for i in range(per_dim)] for j in range(2 ** per_dim)]
        #: ``pam_levels[j]``: the PAM level (an odd integer) of the per-dimension label ``j`` (its bits, MSB first).
        self.register_buffer("pam_levels", torch.tensor([_gray_pam_level(b) for b in labels], dtype=torch.float32),
                             persistent=False)
        self.scale = math.sqrt(2.0 * (self.order - 1) / 3.0)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        bits = _check_bits(bits)
        k = self.bits_per_symbol
        if bits.dim() == 0 or bits.shape[-1] % k:
            raise ValueError(f"the last dimension of bits must be a multiple of {k} ({k} bits per {self.order}-QAM "
                             f"symbol), got {tuple(bits.shape)}")
        groups = bits.reshape(*bits.shape[:-1], bits.shape[-1] // k, k).long()
        weights = 2 ** torch.arange(k // 2 - 1, -1, -1, device=bits.device)
        levels = self.pam_levels.to(bits.device)
        in_phase = levels[(groups[..., 0::2] * weights).sum(-1)]
        quadrature = levels[(groups[..., 1::2] * weights).sum(-1)]
        return torch.complex(in_phase, quadrature) / self.scale

    @property
    def constellation(self) -> torch.Tensor:
        """The ``M`` points, point ``n`` labelled with the ``k`` bits of ``n`` (most significant first)."""
        labels = torch.arange(self.order)
        shifts = torch.arange(self.bits_per_symbol - 1, -1, -1)
        return self((labels[:, None] >> shifts) & 1).reshape(-1)

    def extra_repr(self) -> str:
        return f"order={self.order}"


class QAMDemodulator(nn.Module):
    """Demapper of :class:`QAMModulator`: hard decisions (nearest point) or max-log LLRs per bit.

    ``forward(symbols, no=None)``: ``(..., n)`` complex symbols -> ``(..., k n)`` values in the bit order of the
    modulator. ``no`` is the noise variance per complex symbol (``N0``; after zero forcing ``N0 / |H|^2``), a float or
    a tensor broadcastable to ``symbols``; only the soft demapper uses it.

    * ``soft=False``: uint8 bits of the nearest constellation point. A point exactly halfway between two points that
      differ in bit ``i`` decides ``b_i = 0`` (so a zero symbol after a dead subcarrier decides 0, as in
      :class:`QPSKDemodulator`, which this equals bit for bit at ``M = 4``).
    * ``soft=True``: float32 max-log LLRs, sign convention of Sionna and of logits (positive means 1):

          ``LLR_i = ln(P(b_i = 1 | y) / P(b_i = 0 | y))
                  ~ (min_{c in C_i0} |y - c|^2 - min_{c in C_i1} |y - c|^2) / no``,

      ``C_ib`` the points whose bit ``i`` is ``b`` (equiprobable bits; exact log-MAP for QPSK, where it is
      ``-2 sqrt(2) Re(y) / no`` for ``b_0``). Many textbooks use the opposite sign. ``[LLR > 0]`` equals the hard
      decision for every input (both come from the same distance difference); ``no = 0`` gives ``+-inf`` (``0`` on
      a decision boundary), ``no = inf`` gives ``0``.

    The square Gray labelling makes the minimisation separable: with ``t = s Re(y)`` (or ``s Im(y)``) and the integer
    PAM levels ``a``, the nearest level ``a_b`` whose bit is ``b`` gives ``min |y - c|^2 - ...`` as
    ``((t - a_0)^2 - (t - a_1)^2) / s^2 = (a_1 - a_0) (2 t - a_0 - a_1) / s^2``, computed in that factored form,
    whose sign is exact in floating point.
    """

    def __init__(self, order: int = 16, soft: bool = False) -> None:
        super().__init__()
        self.modulator = QAMModulator(order)
        self.order = self.modulator.order
        self.bits_per_symbol = self.modulator.bits_per_symbol
        self.scale = self.modulator.scale
        self.soft = bool(soft)
        per_dim = self.bits_per_symbol // 2
        levels = self.modulator.pam_levels
        labels = torch.arange(len(levels))
        # subsets[i, b]: the sorted levels of one dimension whose bit i (MSB first) is b.
        subsets = [[levels[((labels >> (per_dim - 1 - i)) & 1) == b].sort().values for b in (0, 1)]
                   for i in range(per_dim)]
        self.register_buffer("level_subsets", torch.stack([torch.stack(pair) for pair in subsets]), persistent=False)

    def _metrics(self, t: torch.Tensor) -> torch.Tensor:
        """``(...)`` real coordinates in level units -> ``(..., m)`` ``(t - a_0)^2 - (t - a_1)^2`` per bit."""
        subsets = self.level_subsets.to(t.device)
        t = t.contiguous()
        out = []
        for per_bit in subsets:
            nearest = []
            for levels in per_bit:  # the nearest level among those whose bit is 0, then 1
                pos = torch.searchsorted(levels, t)
                left = levels[(pos - 1).clamp(min=0)]
                right = levels[pos.clamp(max=len(levels) - 1)]
                nearest.append(torch.where((t - left).abs() <= (t - right).abs(), left, right))
            a0, a1 = nearest
            out.append((a1 - a0) * (2.0 * t - (a0 + a1)))
        return torch.stack(out, dim=-1)

    def forward(self, symbols: torch.Tensor, no: Union[None, float, torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(symbols, torch.Tensor) or not symbols.is_complex():
            raise TypeError(f"symbols must be a complex tensor, got "
                            f"{symbols.dtype if isinstance(symbols, torch.Tensor) else type(symbols).__name__}")
        real_dtype = symbols.real.dtype
        coords = torch.stack([symbols.real, symbols.imag], dim=-1) * self.scale  # (..., n, 2) in level units
        metrics = self._metrics(coords)  # (..., n, 2, m): dimension d, bit i of the dimension -> bit 2 i + d
        metrics = metrics.transpose(-1, -2).reshape(*symbols.shape, self.bits_per_symbol)
        if not self.soft:
            return (metrics > 0).reshape(*symbols.shape[:-1], -1).to(torch.uint8)
        if no is None:
            raise ValueError("the soft demapper needs the noise variance: call it with no=N0 (per complex symbol)")
        no = torch.as_tensor(no, dtype=real_dtype, device=symbols.device)
        if bool(torch.isnan(no).any()) or bool((no < 0).any()):
            raise ValueError("no (the noise variance) must be >= 0 and not NaN")
        try:
            no = torch.broadcast_to(no, symbols.shape)
        except RuntimeError:
            raise ValueError(f"no of shape {tuple(no.shape)} does not broadcast to the symbols' shape "
                             f"{tuple(symbols.shape)}") from None
        denominator = (self.scale ** 2) * no.unsqueeze(-1)
        llrs = torch.where(metrics == 0, torch.zeros_like(metrics), metrics / denominator)
        return llrs.reshape(*symbols.shape[:-1], -1).to(torch.float32)

    def extra_repr(self) -> str:
        return f"order={self.order}, soft={self.soft}"


class OFDMModulator(nn.Module):
    """OFDM: unitary IFFT over ``num_subcarriers`` then a cyclic prefix of the last ``cp_length`` samples.

    Input ``(..., N)`` frequency-domain symbols, output ``(..., N + CP)`` time samples; the unitary transform keeps
    the energy per sample equal to the energy per subcarrier symbol.
    """

    def __init__(self, num_subcarriers: int = 256, cp_length: int = 32) -> None:
        super().__init__()
        if num_subcarriers < 1 or not 0 <= cp_length <= num_subcarriers:
            raise ValueError(
                f"need num_subcarriers >= 1 and 0 <= cp_length <= num_subcarriers, got {num_subcarriers}, {cp_length}"
            )
        self.num_subcarriers = num_subcarriers
        self.cp_length = cp_length

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        if not symbols.is_complex() or symbols.dim() == 0 or symbols.shape[-1] != self.num_subcarriers:
            raise ValueError(
                f"expected complex symbols of shape (..., {self.num_subcarriers}), got {symbols.dtype} "
                f"{tuple(symbols.shape)}"
            )
        body = torch.fft.ifft(symbols, dim=-1, norm="ortho")
        return torch.cat([body[..., self.num_subcarriers - self.cp_length:], body], dim=-1)

    def extra_repr(self) -> str:
        return f"num_subcarriers={self.num_subcarriers}, cp_length={self.cp_length}"


class OFDMDemodulator(OFDMModulator):
    """Inverse of :class:`OFDMModulator`: drop the cyclic prefix, unitary FFT; ``(..., N + CP)`` -> ``(..., N)``."""

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        frame = self.num_subcarriers + self.cp_length
        if not samples.is_complex() or samples.dim() == 0 or samples.shape[-1] != frame:
            raise ValueError(f"expected complex samples of shape (..., {frame}), got {samples.dtype} "
                             f"{tuple(samples.shape)}")
        return torch.fft.fft(samples[..., self.cp_length:], dim=-1, norm="ortho")


class ComplexAWGN(nn.Module):
    """Adds circular complex Gaussian noise ``CN(0, N0)``: real and imaginary parts each ``N(0, N0 / 2)``.

    ``n0`` is a float or a tensor broadcastable to ``x`` (e.g. ``(F, 1)`` for one N0 per frame).
    """

    def forward(
        self, x: torch.Tensor, n0: Union[float, torch.Tensor], generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        if not x.is_complex():
            raise TypeError(f"x must be complex, got dtype {x.dtype}")
        real = x.real
        noise = gaussian_noise(real, 1.0, generator, (2, *x.shape))
        std = torch.sqrt(torch.as_tensor(n0, dtype=real.dtype, device=x.device) / 2.0)
        return x + torch.complex(noise[0], noise[1]) * std


class ZeroForcingEqualizer(nn.Module):
    """Zero forcing per subcarrier: ``X_hat[k] = Y[k] / H[k]``; a subcarrier with ``H[k] = 0`` carries nothing and
    is set to 0 (rather than inf/NaN, which the authors avoid with ``H + 1e-7``)."""

    def forward(self, received: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        if received.shape != response.shape:
            raise ValueError(f"received {tuple(received.shape)} and response {tuple(response.shape)} differ in shape")
        dead = response == 0
        return torch.where(dead, torch.zeros_like(received), received / torch.where(dead, 1.0, response))


def _load_frequency_responses(source: Union[str, Path, np.ndarray, torch.Tensor]) -> np.ndarray:
    """Read frequency responses from an array or a ``.npy``/``.npz`` file (``.npz``: key
    ``frequency_responses``, or its only array)."""
    if isinstance(source, torch.Tensor):
        return source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"frequency-response file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "frequency_responses" in archive.files:
                return archive["frequency_responses"]
            if len(archive.files) == 1:
                return archive[archive.files[0]]
            raise ValueError(f"{path} holds {archive.files}: name the array 'frequency_responses'")
    raise ValueError(f"frequency responses must be a .npy or .npz file, got {path.name}")


class MultipathChannel(nn.Module):
    """Frequency-selective block fading, one realisation per OFDM frame, drawn with the generator.

    Built-in model (``frequency_responses=None``): ``num_taps`` independent Rayleigh taps
    ``h_l ~ CN(0, p_l)``, ``l = 0 .. L-1`` (one sample apart), with the exponential power delay profile
    ``p_l = exp(-l / pdp_decay) / sum_m exp(-m / pdp_decay)`` (unit total power, so ``H[k] ~ CN(0, 1)`` on every
    subcarrier). The frame's time samples are linearly convolved with the taps; a cyclic prefix of at least
    ``L - 1`` samples absorbs the inter-symbol interference, making it a per-subcarrier product
    ``Y[k] = H[k] X[k]`` with ``H[k] = sum_l h_l exp(-2j pi k l / N)``. ``num_taps=1`` is flat Rayleigh fading.

    Trace-driven model: ``frequency_responses``, an array (or ``.npy``/``.npz`` file) of shape
    ``(num_realisations, N)`` complex, e.g. exported once from DeepMIMO O1_60 as in Sec. IV-C; each frame draws
    one row uniformly. The response is applied per subcarrier, i.e. as the circular convolution of each OFDM body
    with ``IDFT(H)`` (the cyclic prefix is assumed to cover the delay spread, as in the authors' script). With
    ``normalize=True`` (default) the whole set is scaled to unit mean power ``mean |H|^2 = 1`` so that Eb/N0 is the
    average received one (measured responses include the path loss); the variation across realisations and
    subcarriers is kept.

    ``forward(x, generator)`` takes ``(F, N + CP)`` time samples and returns the received samples and the
    ``(F, N)`` frequency responses (the perfect channel knowledge used by the equaliser).
    """

    def __init__(
        self,
        num_taps: int = 8,
        pdp_decay: float = 3.0,
        num_subcarriers: int = 256,
        frequency_responses: Union[None, str, Path, np.ndarray, torch.Tensor] = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_taps < 1 or not pdp_decay > 0:
            raise ValueError(f"need num_taps >= 1 and pdp_decay > 0, got {num_taps}, {pdp_decay}")
        self.num_subcarriers = num_subcarriers
        self.num_taps = num_taps
        self.pdp_decay = float(pdp_decay)
        self.normalize = normalize
        self.responses: Optional[torch.Tensor] = None
        if frequency_responses is not None:
            self.responses = self._check_responses(_load_frequency_responses(frequency_responses), normalize)
        power = torch.exp(-torch.arange(num_taps, dtype=torch.float64) / self.pdp_decay)
        self.power_delay_profile = (power / power.sum()).to(torch.float32)

    def _check_responses(self, array: np.ndarray, normalize: bool) -> torch.Tensor:
        if not (np.issubdtype(array.dtype, np.number)):
            raise TypeError(f"frequency responses must be numeric (complex), got dtype {array.dtype}")
        if array.ndim != 2 or array.shape[1] != self.num_subcarriers or array.shape[0] < 1:
            raise ValueError(
                f"frequency responses must have shape (num_realisations, {self.num_subcarriers}), got {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError("frequency responses contain NaN or inf")
        responses = torch.from_numpy(np.asarray(array, dtype=np.complex64).copy())
        mean_power = float(responses.abs().pow(2).mean())
        if mean_power == 0.0:
            raise ValueError("frequency responses are all zero")
        return responses / math.sqrt(mean_power) if normalize else responses

    @property
    def trace_driven(self) -> bool:
        return self.responses is not None

    def sample_taps(self, num_frames: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``(num_frames, L)`` complex taps ``h_l ~ CN(0, p_l)`` of the built-in model."""
        like = torch.empty(0)
        noise = gaussian_noise(like, math.sqrt(0.5), generator, (2, num_frames, self.num_taps))
        return torch.complex(noise[0], noise[1]) * self.power_delay_profile.sqrt()

    def forward(
        self, samples: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not samples.is_complex() or samples.dim() != 2:
            raise ValueError(f"expected complex samples of shape (F, N + CP), got {samples.dtype} "
                             f"{tuple(samples.shape)}")
        num_frames, length = samples.shape
        cp_length = length - self.num_subcarriers
        if self.trace_driven:
            device = generator.device if generator is not None else torch.device("cpu")
            rows = torch.randint(len(self.responses), (num_frames,), generator=generator, device=device)
            response = self.responses[rows.cpu()].to(samples.device)
            body = torch.fft.fft(samples[:, cp_length:], dim=-1, norm="ortho") * response
            body = torch.fft.ifft(body, dim=-1, norm="ortho")
            return torch.cat([body[:, self.num_subcarriers - cp_length:], body], dim=-1), response
        if cp_length < self.num_taps - 1:
            raise ValueError(
                f"the cyclic prefix ({cp_length} samples) is shorter than the channel memory (num_taps - 1 = "
                f"{self.num_taps - 1}): inter-symbol interference would break per-subcarrier equalisation"
            )
        taps = self.sample_taps(num_frames, generator).to(samples.device)
        received = taps[:, :1] * samples
        for lag in range(1, self.num_taps):  # linear convolution, one delayed copy per tap
            received[:, lag:] += taps[:, lag:lag + 1] * samples[:, :-lag]
        response = torch.fft.fft(taps, n=self.num_subcarriers, dim=-1)
        return received, response

    def extra_repr(self) -> str:
        if self.trace_driven:
            return f"frequency_responses={tuple(self.responses.shape)}, normalize={self.normalize}"
        return f"num_taps={self.num_taps}, pdp_decay={self.pdp_decay}, num_subcarriers={self.num_subcarriers}"


class RicianFlatChannel(nn.Module):
    """Flat Rician block fading: one gain per OFDM frame, the same on every subcarrier,

        ``h = sqrt(K / (K + 1)) + sqrt(1 / (K + 1)) g``,   ``g ~ CN(0, 1)``,

    a fixed line-of-sight component plus Rayleigh scattering, with Rice factor ``K`` = LOS power / scattered power
    and unit mean power ``E|h|^2 = 1`` for every ``K`` (Eb/N0 is the average received one). ``K = 0`` is Rayleigh
    (``h = g``, drawn exactly as :class:`MultipathChannel` with ``num_taps=1``, so the same generator gives the same
    gains as ``channel="rayleigh_flat"``); ``K = inf`` is no fading (``h = 1``, the AWGN channel; ``g`` is still
    drawn, so the random stream does not depend on ``K``). The LOS phase is 0: with the perfect channel knowledge of
    the zero-forcing receiver it does not change the error rates (:func:`qam_ber_rician`).

    ``forward(x, generator)`` takes ``(F, N + CP)`` time samples and returns ``h x`` and the ``(F, N)`` frequency
    responses (``h`` on every subcarrier), like :class:`MultipathChannel`.
    """

    def __init__(self, k_factor: float, num_subcarriers: int = 256) -> None:
        super().__init__()
        self.k_factor = _check_real(k_factor, "rician_k", 0.0)
        self.num_subcarriers = num_subcarriers
        if math.isinf(self.k_factor):
            self.los_amplitude, self.scatter_amplitude = 1.0, 0.0
        else:
            self.los_amplitude = math.sqrt(self.k_factor / (self.k_factor + 1.0))
            self.scatter_amplitude = math.sqrt(1.0 / (self.k_factor + 1.0))

    def sample_gains(self, num_frames: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``(num_frames, 1)`` complex gains ``h``."""
        noise = gaussian_noise(torch.empty(0), math.sqrt(0.5), generator, (2, num_frames, 1))
        return self.los_amplitude + self.scatter_amplitude * torch.complex(noise[0], noise[1])

    def forward(
        self, samples: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not samples.is_complex() or samples.dim() != 2:
            raise ValueError(f"expected complex samples of shape (F, N + CP), got {samples.dtype} "
                             f"{tuple(samples.shape)}")
        gains = self.sample_gains(samples.shape[0], generator).to(samples.device)
        return gains * samples, gains.expand(-1, self.num_subcarriers).contiguous()

    def extra_repr(self) -> str:
        return f"k_factor={self.k_factor}, num_subcarriers={self.num_subcarriers}"


# ----------------------------------------------------------------------------------------------------------------
# The end-to-end link
# ----------------------------------------------------------------------------------------------------------------


def _ebn0_tensor(ebn0_db: EbN0, name: str = "ebn0_db") -> torch.Tensor:
    """Eb/N0 in dB as a float64 tensor: 0-d for a scalar, 1-d for one value per sample; ``None`` means ``inf``."""
    if ebn0_db is None:
        return torch.tensor(math.inf, dtype=torch.float64)
    if isinstance(ebn0_db, torch.Tensor):
        ebn0_db = ebn0_db.detach().cpu().numpy()
    try:
        values = torch.from_numpy(np.array(ebn0_db, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a number (dB), a 1-D array of numbers or None, got {ebn0_db!r}") from error
    if values.dim() > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array (one value per sample), got shape "
                         f"{tuple(values.shape)}")
    if bool(torch.isnan(values).any()) or bool((values == -math.inf).any()):
        raise ValueError(f"{name} must not contain NaN or -inf, got {values.tolist()}")
    return values


class DigitalLinkChannel(SemanticChannel):
    """Bits -> Gray M-QAM -> OFDM -> channel -> AWGN at Eb/N0 -> OFDM^-1 -> ZF -> hard decisions (Sec. IV-C).

    As a :class:`SemanticChannel` it carries the elements of the transmitted channels directly as bits, as the
    paper does: the map is thresholded (``x > threshold`` is a 1; the one-hot map is already 0/1), the bits of each
    sample's transmitted channels are serialised in ``(C, H, W)`` order, padded with zeros to a multiple of one
    OFDM frame (``k N`` bits, ``k = log2 M``: 512 for QPSK and ``N = 256``) so that no frame mixes two samples, sent,
    unpadded and put back. The received map is 0/1; channels that were not transmitted are zeros.
    :meth:`transmit_llrs` returns the max-log LLRs instead of the decisions (for a channel decoder).

    SNR definition: ``Eb/N0`` in dB with ``N0 = Es / (k Eb/N0)``; see the module docstring for ``Es``
    (``es_reference``). Every channel has unit average power, so with ``es_reference="transmitter"`` the BER is
    :func:`qam_ber_awgn` over ``"awgn"``, :func:`qam_ber_rayleigh` over ``"rayleigh_flat"`` and ``"multipath"``
    (built-in taps), :func:`qam_ber_rician` over ``"rician_flat"`` (for QPSK: ``Q(sqrt(2 Eb/N0))`` and
    ``(1 - sqrt(g / (1 + g))) / 2``).

    Args:
        ebn0_db: a float for the whole batch, one value per sample (a 1-D array whose length must equal the batch
            size), or ``None``/``inf`` (noiseless).
        channel: ``"awgn"`` (no fading), ``"rayleigh_flat"`` (one ``CN(0, 1)`` gain per OFDM frame),
            ``"rician_flat"`` (one Rician gain per frame, :class:`RicianFlatChannel`, needs ``rician_k``) or
            ``"multipath"`` (a :class:`MultipathChannel`: built-in taps, or ``frequency_responses``).
        num_subcarriers: ``N`` (256 in the paper).
        cp_length: cyclic prefix length (32, as in the authors' script); must be ``>= num_taps - 1``.
        num_taps, pdp_decay: the built-in multipath model.
        frequency_responses: array or ``.npy``/``.npz`` file of shape ``(R, N)`` for ``channel="multipath"``.
        es_reference: ``"transmitter"`` or ``"receiver"``.
        threshold: the 1-bit quantiser that turns the map into bits.
        modulation: one of :data:`MODULATIONS`: ``"qpsk"`` (default, the paper's; bit for bit the link before
            M-QAM existed), ``"16qam"``, ``"64qam"``, ``"256qam"`` (Gray square QAM, :class:`QAMModulator`).
        rician_k: the Rice factor ``K >= 0`` (``inf`` allowed) of ``channel="rician_flat"``; linear, not dB.
    """

    def __init__(
        self,
        ebn0_db: EbN0,
        channel: str = "multipath",
        num_subcarriers: int = 256,
        cp_length: int = 32,
        num_taps: int = 8,
        pdp_decay: float = 3.0,
        frequency_responses: Union[None, str, Path, np.ndarray, torch.Tensor] = None,
        es_reference: str = "transmitter",
        threshold: float = 0.5,
        modulation: str = "qpsk",
        rician_k: Optional[float] = None,
    ) -> None:
        super().__init__()
        if channel not in _LINK_CHANNELS:
            raise ValueError(f"channel must be one of {_LINK_CHANNELS}, got {channel!r}")
        if es_reference not in _ES_REFERENCES:
            raise ValueError(f"es_reference must be one of {_ES_REFERENCES}, got {es_reference!r}")
        if not isinstance(modulation, str) or modulation.lower() not in MODULATIONS:
            raise ValueError(f"modulation must be one of {tuple(MODULATIONS)}, got {modulation!r}")
        if frequency_responses is not None and channel != "multipath":
            raise ValueError("frequency_responses are only used with channel='multipath'")
        if rician_k is not None and channel != "rician_flat":
            raise ValueError(f"rician_k is only used with channel='rician_flat', got channel={channel!r}")
        if rician_k is None and channel == "rician_flat":
            raise ValueError("channel='rician_flat' needs rician_k, the Rice factor K >= 0 (0: Rayleigh, inf: AWGN)")
        self.ebn0_db = _ebn0_tensor(ebn0_db)
        self.channel = channel
        self.es_reference = es_reference
        self.threshold = float(threshold)
        self.modulation = modulation.lower()
        self.modulator = QAMModulator(MODULATIONS[self.modulation])
        self.ofdm_modulator = OFDMModulator(num_subcarriers, cp_length)
        self.fading: Union[None, MultipathChannel, RicianFlatChannel] = None
        if channel == "rician_flat":
            self.fading = RicianFlatChannel(rician_k, num_subcarriers)
        elif channel != "awgn":
            taps = 1 if channel == "rayleigh_flat" else num_taps
            self.fading = MultipathChannel(taps, pdp_decay, num_subcarriers, frequency_responses)
            if not self.fading.trace_driven and cp_length < taps - 1:
                raise ValueError(f"cp_length ({cp_length}) must be >= num_taps - 1 ({taps - 1})")
        self.noise = ComplexAWGN()
        self.ofdm_demodulator = OFDMDemodulator(num_subcarriers, cp_length)
        self.equalizer = ZeroForcingEqualizer()
        self.demodulator = QAMDemodulator(self.modulator.order)
        self.soft_demodulator = QAMDemodulator(self.modulator.order, soft=True)

    @property
    def bits_per_symbol(self) -> int:
        """``k = log2 M``: 2 (QPSK), 4, 6 or 8."""
        return self.modulator.bits_per_symbol

    @property
    def bits_per_frame(self) -> int:
        """Bits carried by one OFDM frame: ``k N`` (512 for QPSK and ``N = 256``)."""
        return self.bits_per_symbol * self.ofdm_modulator.num_subcarriers

    def transmit_frames(
        self, bits: torch.Tensor, ebn0_db: torch.Tensor, generator: Optional[torch.Generator] = None,
        soft: bool = False,
    ) -> torch.Tensor:
        """Send ``(F, kN)`` bits, frame ``f`` at ``ebn0_db[f]`` (a 0-d or ``(F,)`` tensor); return ``(F, kN)`` bits,
        or with ``soft=True`` float32 max-log LLRs (:class:`QAMDemodulator`; noise variance ``N0 / |H[k]|^2`` after
        zero forcing, so a dead subcarrier gives LLRs of 0).

        Randomness is drawn in a fixed order (fading, then noise), so the same generator state gives the same bits.
        """
        if bits.dim() != 2 or bits.shape[1] != self.bits_per_frame:
            raise ValueError(f"bits must have shape (F, {self.bits_per_frame}), got {tuple(bits.shape)}")
        if bits.shape[0] == 0:  # nothing to send (e.g. no channel transmitted); the FFT backends reject empty input
            return bits.to(torch.float32 if soft else torch.uint8)
        samples = self.ofdm_modulator(self.modulator(bits))
        if self.fading is not None:
            samples, response = self.fading(samples, generator)
        else:
            response = torch.ones(bits.shape[0], self.ofdm_modulator.num_subcarriers, dtype=samples.dtype,
                                  device=samples.device)
        if self.es_reference == "transmitter":
            es = torch.ones((), dtype=torch.float64)  # unit-energy constellation, kept by the unitary IFFT
        else:  # per-frame energy at the receiver input, over the N data samples (= per subcarrier, by Parseval)
            body = samples[:, self.ofdm_modulator.cp_length:]
            es = body.abs().pow(2).mean(dim=-1).to(torch.float64)
        n0 = ebn0_to_n0(ebn0_db.to(torch.float64), es, self.bits_per_symbol).to(samples.device)
        n0 = n0.reshape(-1, 1) if n0.dim() else n0
        samples = self.noise(samples, n0, generator)
        symbols = self.equalizer(self.ofdm_demodulator(samples), response)
        if not soft:
            return self.demodulator(symbols)
        no = n0 / response.abs().pow(2).to(torch.float64)  # inf where H[k] = 0
        return self.soft_demodulator(symbols, no.to(torch.float32))

    def transmit_llrs(
        self, bits: torch.Tensor, generator: Optional[torch.Generator] = None, ebn0_db: Optional[float] = None
    ) -> torch.Tensor:
        """As :meth:`transmit_bits`, but return the float32 max-log LLRs of the received bits,
        ``ln(P(b = 1 | y) / P(b = 0 | y))`` (positive means 1; :class:`QAMDemodulator`). With the same generator state,
        ``transmit_llrs(bits) > 0`` equals ``transmit_bits(bits)``."""
        bits, ebn0 = self._stream(bits, ebn0_db, "transmit_llrs")
        frames = self._pad_to_frames(bits)
        return self.transmit_frames(frames, ebn0, generator, soft=True).reshape(-1)[: bits.numel()]

    def transmit_bits(
        self, bits: torch.Tensor, generator: Optional[torch.Generator] = None, ebn0_db: Optional[float] = None
    ) -> torch.Tensor:
        """Send a 1-D 0/1 bitstream (e.g. a codec's, see :func:`bytes_to_bits`); return the received bits.

        The stream is zero-padded to whole OFDM frames and unpadded after. ``ebn0_db`` overrides the channel's
        value; it is required when the channel was built with one Eb/N0 per sample.
        """
        bits, ebn0 = self._stream(bits, ebn0_db, "transmit_bits")
        frames = self._pad_to_frames(bits)
        return self.transmit_frames(frames, ebn0, generator).reshape(-1)[: bits.numel()]

    def _stream(self, bits: torch.Tensor, ebn0_db: Optional[float], caller: str) -> tuple[torch.Tensor, torch.Tensor]:
        bits = _check_bits(bits)
        if bits.dim() != 1:
            raise ValueError(f"bits must be a 1-D tensor, got shape {tuple(bits.shape)}")
        ebn0 = self.ebn0_db if ebn0_db is None else _ebn0_tensor(ebn0_db)
        if ebn0.dim() != 0:
            raise ValueError(f"this channel has one Eb/N0 per sample; pass a scalar ebn0_db= to {caller}")
        return bits, ebn0

    def transmit_bytes(
        self, data: bytes, generator: Optional[torch.Generator] = None, ebn0_db: Optional[float] = None
    ) -> bytes:
        """Send a byte string (a codec bitstream) bit by bit; return the received bytes (same length)."""
        return bits_to_bytes(self.transmit_bits(bytes_to_bits(data), generator, ebn0_db))

    def _pad_to_frames(self, bits: torch.Tensor) -> torch.Tensor:
        padding = (-bits.numel()) % self.bits_per_frame
        return torch.cat([bits, bits.new_zeros(padding)]).reshape(-1, self.bits_per_frame)

    def _corrupt(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        batch = x.shape[0]
        ebn0 = self.ebn0_db
        if ebn0.dim() == 1 and len(ebn0) != batch:
            raise ValueError(f"ebn0_db has {len(ebn0)} values but the batch has {batch} samples")
        bits = (x > self.threshold).to(torch.uint8)
        frames, frame_ebn0, counts = [], [], []
        for b in range(batch):  # serialise each sample's transmitted channels into whole frames
            sample_frames = self._pad_to_frames(bits[b][transmitted[b]].reshape(-1))
            frames.append(sample_frames)
            counts.append(len(sample_frames))
            frame_ebn0.append((ebn0[b] if ebn0.dim() else ebn0).expand(len(sample_frames)))
        received = self.transmit_frames(torch.cat(frames), torch.cat(frame_ebn0), generator)
        output = torch.zeros_like(x)
        for b, sample_frames in enumerate(received.split(counts)):
            planes = output[b][transmitted[b]]
            output[b][transmitted[b]] = sample_frames.reshape(-1)[: planes.numel()].reshape(planes.shape).to(x.dtype)
        return output

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "ebn0_db": self.ebn0_db.tolist(),
            "channel": self.channel,
            "num_subcarriers": self.ofdm_modulator.num_subcarriers,
            "cp_length": self.ofdm_modulator.cp_length,
            "es_reference": self.es_reference,
            "threshold": self.threshold,
            "modulation": self.modulation,
        }
        if self.channel == "rician_flat":
            params["rician_k"] = self.fading.k_factor
        if self.channel == "multipath":
            if self.fading.trace_driven:
                params["frequency_responses"] = list(self.fading.responses.shape)
            else:
                params.update(num_taps=self.fading.num_taps, pdp_decay=self.fading.pdp_decay)
        return params
