"""Gray M-QAM (hard and max-log soft demapping), flat Rician fading and the closed-form BER of the digital link.

The BER tests send whole link frames (OFDM, channel, noise, ZF, decisions) and compare the measured BER with the
closed forms of ``gesco_diffusers.channel.digital``: within 5 % and within 4 standard errors, the standard error
estimated from 20 independent batches (bits in one symbol or one fading block err together, so the binomial
standard deviation of independent bits is only a lower bound; it is checked to make the 5 % meaningful).
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from gesco_diffusers.channel import (
    MODULATIONS,
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
    ebn0_to_n0,
    qam_ber_awgn,
    qam_ber_rayleigh,
    qam_ber_rician,
    qpsk_ber_awgn,
    qpsk_ber_rayleigh,
)

ORDERS = (4, 16, 64, 256)
NAMES = {order: name for name, order in MODULATIONS.items()}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_bits(shape, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 2, tuple(shape) if isinstance(shape, (tuple, list)) else (shape,), generator=seeded(seed),
                         dtype=torch.uint8)


def label_bits(order: int) -> torch.Tensor:
    """``(M, k)``: the bits of each label ``n``, most significant first."""
    k = order.bit_length() - 1
    return (torch.arange(order)[:, None] >> torch.arange(k - 1, -1, -1)) & 1


def exact_ber_from_constellation(order: int, ebn0_db: float) -> float:
    """BER of nearest-point detection over AWGN, from the modulator's own points and labels, by brute force.

    Nearest-point regions of a square grid are rectangles: ``P(j | i) = P_I(j | i) P_Q(j | i)``, each a difference
    of Gaussian tails at the midpoints between levels; ``BER = (1 / (M k)) sum_i sum_j P(j | i) hamming(i, j)``.
    Independent of the closed form (which this checks) and of the demodulator.
    """
    points = QAMModulator(order).constellation.to(torch.complex128)
    step = points.real.abs().min()  # half the grid step: the float32 points snapped to odd integers, Es = 1 exactly
    points = torch.complex(torch.round(points.real / step), torch.round(points.imag / step))
    points = points / points.abs().pow(2).mean().sqrt()
    k = order.bit_length() - 1
    sigma = math.sqrt(ebn0_to_n0(ebn0_db, 1.0, k) / 2.0)  # per real dimension
    levels = torch.unique(points.real)
    assert len(levels) == math.isqrt(order)  # a square grid
    edges = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), (levels[1:] + levels[:-1]) / 2,
                       torch.tensor([math.inf], dtype=torch.float64)])

    def tail(x):  # P(N(0, sigma^2) > x)
        return 0.5 * torch.special.erfc(x / (sigma * math.sqrt(2.0)))

    def mass(lo, hi):  # P(lo < N(0, sigma^2) < hi), from the small tails only (no cancellation of numbers near 1)
        return torch.where(lo >= 0, tail(lo) - tail(hi),
                           torch.where(hi <= 0, tail(-hi) - tail(-lo), 1.0 - tail(-lo) - tail(hi)))

    # transition[a, b] = P(level b decided | level a sent), one dimension
    transition = mass(edges[None, :-1] - levels[:, None], edges[None, 1:] - levels[:, None])
    index_i = torch.argmin((points.real[:, None] - levels[None]).abs(), dim=1)
    index_q = torch.argmin((points.imag[:, None] - levels[None]).abs(), dim=1)
    joint = transition[index_i][:, index_i] * transition[index_q][:, index_q]  # (M sent, M decided)
    labels = label_bits(order)
    hamming = (labels[:, None, :] != labels[None, :, :]).sum(-1).double()
    return float((joint * hamming).sum() / (order * k))


# ----------------------------------------------------------------------------------------------------------------
# Constellations and demapping
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_constellation_is_gray_square_and_unit_energy(order):
    mod = QAMModulator(order)
    points = mod.constellation.to(torch.complex128)
    assert points.shape == (order,)
    assert points.abs().pow(2).mean().item() == pytest.approx(1.0, abs=1e-6)
    # A square grid of sqrt(M) x sqrt(M) equally spaced levels, symmetric about 0.
    side = math.isqrt(order)
    levels = torch.unique(torch.round(points.real * 1e5)) / 1e5
    assert len(levels) == side and torch.allclose(levels, -levels.flip(0), atol=1e-5)
    assert torch.allclose(levels.diff(), levels.diff()[0].expand(side - 1), atol=1e-5)
    # Gray: the nearest neighbours (horizontal and vertical, distance = grid step) differ in exactly one bit.
    step = levels.diff()[0].item()
    distance = (points[:, None] - points[None, :]).abs()
    neighbours = (distance - step).abs() < 1e-5
    labels = label_bits(order)
    hamming = (labels[:, None, :] != labels[None, :, :]).sum(-1)
    assert neighbours.sum().item() == 4 * side * (side - 1)  # every grid edge, both ways
    assert torch.all(hamming[neighbours] == 1)
    # The even bits set the real part, the odd bits the imaginary part (product labelling).
    for part, bits in ((points.real, labels[:, 0::2]), (points.imag, labels[:, 1::2])):
        for value in torch.unique(part.round(decimals=5)):
            rows = bits[(part.round(decimals=5) == value)]
            assert torch.all(rows == rows[0])


def test_16qam_is_the_3gpp_mapping():
    # TS 38.211 Sec. 5.1.3: d = [(1 - 2 b0)(2 - (1 - 2 b2)) + j (1 - 2 b1)(2 - (1 - 2 b3))] / sqrt(10)
    b = label_bits(16).double()
    expected = torch.complex((1 - 2 * b[:, 0]) * (2 - (1 - 2 * b[:, 2])),
                             (1 - 2 * b[:, 1]) * (2 - (1 - 2 * b[:, 3]))) / math.sqrt(10)
    assert torch.allclose(QAMModulator(16).constellation.to(torch.complex128), expected, atol=1e-6)


def test_4qam_is_todays_qpsk_bit_for_bit():
    bits = random_bits((30, 400))
    assert torch.equal(QAMModulator(4)(bits), QPSKModulator()(bits))
    noisy = ComplexAWGN()(QPSKModulator()(bits), 0.7, seeded())
    edge = torch.tensor([0, -0.0, 1e-40, -1e-40, -1e-45, 1e-30, 3.0, -2.0], dtype=torch.float32)
    edge = torch.complex(edge, edge.flip(0))
    for symbols in (noisy, edge):
        assert torch.equal(QAMDemodulator(4)(symbols), QPSKDemodulator()(symbols))


@pytest.mark.parametrize("order", ORDERS)
def test_hard_decisions_are_the_nearest_point(order):
    mod, k = QAMModulator(order), QAMModulator(order).bits_per_symbol
    bits = random_bits((8, 300 * k), seed=order)
    assert torch.equal(QAMDemodulator(order)(mod(bits)), bits)  # noiseless round trip
    received = ComplexAWGN()(mod(bits), 0.05, seeded(order))
    nearest = torch.argmin((received[..., None] - mod.constellation).abs(), dim=-1)
    expected = label_bits(order)[nearest].reshape(8, -1).to(torch.uint8)
    assert torch.equal(QAMDemodulator(order)(received), expected)
    # Points far outside the grid are clipped to the outer points.
    far = torch.tensor([50 + 50j, -50 - 50j], dtype=torch.complex64)
    diagonal = mod.constellation.real + mod.constellation.imag
    corners = mod.constellation[torch.stack([torch.argmax(diagonal), torch.argmin(diagonal)])]
    assert torch.equal(QAMDemodulator(order)(far), QAMDemodulator(order)(corners))


@pytest.mark.parametrize("order", ORDERS)
def test_max_log_llrs_brute_force_and_hard_decisions(order):
    mod = QAMModulator(order)
    k = mod.bits_per_symbol
    bits = random_bits((4, 500 * k), seed=order + 1)
    received = ComplexAWGN()(mod(bits), 0.2, seeded(order))
    no = torch.rand(4, 500, generator=seeded(3)) * 0.5 + 0.01  # one noise variance per symbol
    llrs = QAMDemodulator(order, soft=True)(received, no)
    assert llrs.dtype == torch.float32 and llrs.shape == bits.shape
    # Brute force over all M points, in float64: (min over bit-0 points - min over bit-1 points) / no.
    distance = (received.to(torch.complex128)[..., None] - mod.constellation.to(torch.complex128)).abs().pow(2)
    labels = label_bits(order).bool()  # (M, k)
    inf = torch.tensor(math.inf, dtype=torch.float64)
    d0 = torch.where(~labels, distance[..., None], inf).amin(-2)  # (4, 500, k)
    d1 = torch.where(labels, distance[..., None], inf).amin(-2)
    expected = ((d0 - d1) / no.double()[..., None]).reshape(4, -1)
    assert torch.allclose(llrs.double(), expected, rtol=1e-4, atol=1e-3)
    # Positive LLR means 1 (Sionna's sign): the decisions from the LLRs are the hard decisions, also on boundaries.
    assert torch.equal((llrs > 0).to(torch.uint8), QAMDemodulator(order)(received))
    grid = torch.arange(-20, 21, dtype=torch.float32) / mod.scale  # every midpoint and level, and 0
    boundary = torch.complex(grid[:, None].expand(41, 41), grid[None, :].expand(41, 41)).reshape(-1)
    assert torch.equal((QAMDemodulator(order, soft=True)(boundary, 0.1) > 0).to(torch.uint8),
                       QAMDemodulator(order)(boundary))


def test_qpsk_llr_is_the_exact_log_ratio_and_noise_extremes():
    y = torch.tensor([0.3 - 1.2j, -0.05 + 0.0j], dtype=torch.complex64)
    llrs = QAMDemodulator(4, soft=True)(y, 0.5)
    # ln P(1|y)/P(0|y) for b0 with points +-1/sqrt(2) on the real axis: -2 sqrt(2) Re(y) / no.
    expected = torch.tensor([-2 * math.sqrt(2) * 0.3 / 0.5, 2 * math.sqrt(2) * 1.2 / 0.5,
                             2 * math.sqrt(2) * 0.05 / 0.5, 0.0])
    assert torch.allclose(llrs, expected, atol=1e-5)
    off_boundary = torch.tensor([0.3 - 1.2j, -0.05 + 0.7j], dtype=torch.complex64)
    assert QAMDemodulator(16, soft=True)(off_boundary, 0.0).abs().min() == math.inf  # noiseless: certain decisions
    zero_llrs = QAMDemodulator(16, soft=True)(torch.zeros(3, dtype=torch.complex64), 0.0).reshape(3, 4)
    assert torch.equal(zero_llrs[:, :2], torch.zeros(3, 2))  # the sign bits b0, b1 on their boundary: 0 even noiseless
    assert torch.all(zero_llrs[:, 2:] == -math.inf)  # certainly an inner point (b2 = b3 = 0)
    assert torch.all(QAMDemodulator(16, soft=True)(y, math.inf) == 0)  # a dead subcarrier says nothing


def test_qam_blocks_reject_bad_input():
    for order in (8, 32, 2, 1024, True, "16", 16.0):
        with pytest.raises(ValueError, match="order must be one of"):
            QAMModulator(order)
    with pytest.raises(ValueError, match="multiple of 4"):
        QAMModulator(16)(torch.ones(6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="only 0 and 1"):
        QAMModulator(16)(torch.tensor([0, 2, 0, 1], dtype=torch.uint8))
    y = torch.ones(4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="noise variance"):
        QAMDemodulator(16, soft=True)(y)
    for no in (-1.0, float("nan"), torch.tensor([0.1, -0.1, 0.1, 0.1])):
        with pytest.raises(ValueError, match="no \\(the noise variance\\)"):
            QAMDemodulator(16, soft=True)(y, no)
    with pytest.raises(ValueError, match=r"no of shape \(3,\) does not broadcast to the symbols' shape \(4,\)"):
        QAMDemodulator(16, soft=True)(y, torch.ones(3))
    with pytest.raises(TypeError, match="complex"):
        QAMDemodulator(16)(torch.ones(4))


# ----------------------------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_awgn_closed_form_is_exact(order):
    for ebn0_db in (-2.0, 0.0, 5.0, 10.0, 15.0, 20.0):
        brute = exact_ber_from_constellation(order, ebn0_db)
        assert qam_ber_awgn(order, ebn0_db) == pytest.approx(brute, rel=1e-9, abs=1e-300)
    assert qam_ber_awgn(order, math.inf) == 0.0


def test_closed_forms_reduce_to_the_known_ones():
    for ebn0_db in (0.0, 4.0, 8.0):
        assert qam_ber_awgn(4, ebn0_db) == pytest.approx(qpsk_ber_awgn(ebn0_db), rel=1e-12)
        assert qam_ber_rayleigh(4, ebn0_db) == pytest.approx(qpsk_ber_rayleigh(ebn0_db), rel=1e-12)
        d = math.sqrt(2 * 10 ** (ebn0_db / 10) / 5)  # 16-QAM, textbook form
        assert qam_ber_awgn(16, ebn0_db) == pytest.approx(
            3 / 8 * math.erfc(d) + 1 / 4 * math.erfc(3 * d) - 1 / 8 * math.erfc(5 * d), rel=1e-12)
    for order in ORDERS:
        for ebn0_db in (0.0, 10.0, 25.0):
            rayleigh = qam_ber_rayleigh(order, ebn0_db)
            assert qam_ber_rician(order, ebn0_db, 0.0) == pytest.approx(rayleigh, rel=1e-10)
            assert qam_ber_rician(order, ebn0_db, math.inf) == qam_ber_awgn(order, ebn0_db)
            assert qam_ber_rician(order, ebn0_db, 1e6) == pytest.approx(qam_ber_awgn(order, ebn0_db), rel=1e-3)
            ladder = [qam_ber_rician(order, ebn0_db, k) for k in (0.0, 1.0, 4.0, 10.0, 100.0)]
            assert all(a > b for a, b in zip(ladder, ladder[1:]))  # a stronger line of sight helps
        assert qam_ber_awgn(order, -200.0) == pytest.approx(0.5)  # no signal: a coin flip


def test_rician_closed_form_by_monte_carlo_over_the_fading():
    # Average the textbook 16-QAM AWGN BER over 2e6 Rician gains: a check of the Craig/MGF integral independent of
    # the link and of the closed form's code (standard error of the mean: 0.3 %).
    rng = np.random.default_rng(0)
    k_factor, ebn0_db = 3.0, 14.0
    g = (rng.standard_normal(2_000_000) + 1j * rng.standard_normal(2_000_000)) / math.sqrt(2)
    power = np.abs(math.sqrt(k_factor / (k_factor + 1)) + math.sqrt(1 / (k_factor + 1)) * g) ** 2
    d = torch.from_numpy(np.sqrt(2 * 10 ** (ebn0_db / 10) * power / 5))
    erfc = torch.special.erfc
    conditional = 3 / 8 * erfc(d) + 1 / 4 * erfc(3 * d) - 1 / 8 * erfc(5 * d)
    assert conditional.mean().item() == pytest.approx(qam_ber_rician(16, ebn0_db, k_factor), rel=0.015)


def test_closed_forms_reject_bad_values():
    with pytest.raises(ValueError, match="order must be one of"):
        qam_ber_awgn(8, 3.0)
    with pytest.raises(ValueError, match="ebn0_db"):
        qam_ber_rayleigh(16, float("nan"))
    for bad in (-0.5, float("nan"), -math.inf):
        with pytest.raises(ValueError, match="k_factor"):
            qam_ber_rician(16, 3.0, bad)


# ----------------------------------------------------------------------------------------------------------------
# Rician fading and the link
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k_factor", [0.0, 2.0, 10.0])
def test_rician_gains_have_unit_power_and_the_right_k(k_factor):
    gains = RicianFlatChannel(k_factor).sample_gains(400_000, seeded()).reshape(-1).to(torch.complex128)
    assert gains.abs().pow(2).mean().item() == pytest.approx(1.0, rel=0.01)
    los = gains.mean()
    assert los.real.item() == pytest.approx(math.sqrt(k_factor / (k_factor + 1)), abs=0.005)
    assert (gains - los).abs().pow(2).mean().item() == pytest.approx(1 / (k_factor + 1), rel=0.01)
    assert (RicianFlatChannel(math.inf).sample_gains(5, seeded()) == 1).all()


def test_rician_k0_is_the_rayleigh_link_and_rician_block_is_flat():
    bits = random_bits(64 * 4 * 50)
    for modulation in MODULATIONS:
        rayleigh = DigitalLinkChannel(8.0, channel="rayleigh_flat", num_subcarriers=64, cp_length=8,
                                      modulation=modulation)
        rician = DigitalLinkChannel(8.0, channel="rician_flat", rician_k=0.0, num_subcarriers=64, cp_length=8,
                                    modulation=modulation)
        assert torch.equal(rayleigh.transmit_bits(bits, seeded(4)), rician.transmit_bits(bits, seeded(4)))
    samples = OFDMModulator(64, 8)(QAMModulator(16)(random_bits((10, 256))))
    received, response = RicianFlatChannel(5.0, 64)(samples, seeded())
    assert response.shape == (10, 64) and torch.all(response == response[:, :1])
    equalised = ZeroForcingEqualizer()(OFDMDemodulator(64, 8)(received), response)
    assert torch.allclose(equalised, OFDMDemodulator(64, 8)(samples), atol=1e-5)


def test_qpsk_link_is_the_chain_of_the_qpsk_blocks():
    # The default link is still QPSKModulator -> OFDM -> multipath -> AWGN -> OFDM^-1 -> ZF -> QPSKDemodulator.
    bits = random_bits((40, 512), seed=9)
    ebn0 = torch.tensor(3.0, dtype=torch.float64)
    generator = seeded(11)
    samples = OFDMModulator()(QPSKModulator()(bits))
    samples, response = MultipathChannel()(samples, generator)
    samples = ComplexAWGN()(samples, ebn0_to_n0(ebn0), generator)
    expected = QPSKDemodulator()(ZeroForcingEqualizer()(OFDMDemodulator()(samples), response))
    assert torch.equal(DigitalLinkChannel(3.0).transmit_frames(bits, ebn0, seeded(11)), expected)


@pytest.mark.parametrize("modulation", list(MODULATIONS))
@pytest.mark.parametrize("channel", ["awgn", "rayleigh_flat", "rician_flat", "multipath"])
def test_noiseless_link_is_exact_for_every_modulation(modulation, channel):
    extra = {"rician_k": 2.0} if channel == "rician_flat" else {}
    link = DigitalLinkChannel(None, channel=channel, modulation=modulation, **extra)
    k = MODULATIONS[modulation].bit_length() - 1
    assert link.bits_per_symbol == k and link.bits_per_frame == k * 256
    bits = random_bits(k * 256 * 3 + 5)  # not a whole number of frames
    assert torch.equal(link.transmit_bits(bits, seeded()), bits)
    llrs = link.transmit_llrs(bits, seeded())
    assert torch.equal((llrs > 0).to(torch.uint8), bits)
    assert link.describe()["modulation"] == modulation


@pytest.mark.parametrize("modulation", ["qpsk", "64qam"])
def test_link_llrs_agree_with_its_decisions(modulation):
    link = DigitalLinkChannel(6.0, channel="multipath", modulation=modulation)
    bits = random_bits(link.bits_per_frame * 20 + 7)
    decided = link.transmit_bits(bits, seeded(5))
    llrs = link.transmit_llrs(bits, seeded(5))
    assert llrs.dtype == torch.float32 and llrs.shape == bits.shape
    assert torch.equal((llrs > 0).to(torch.uint8), decided)
    assert (decided != bits).any()  # 6 dB over multipath: there are errors to agree on


def test_link_llrs_are_calibrated_posteriors():
    # QPSK max-log LLRs are the exact log posterior ratios, with the noise variance N0 / |H[k]|^2 after ZF. Among the
    # bits given LLR ~ L, a fraction sigmoid(L) must be 1: a wrong N0 convention (e.g. a factor 2) fails this.
    link = DigitalLinkChannel(2.0, channel="multipath", modulation="qpsk")
    bits = random_bits(1_000_000, seed=4)
    llrs = link.transmit_llrs(bits, seeded(6)).double()
    edges = torch.linspace(-6, 6, 25)
    checked = 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (llrs >= lo) & (llrs < hi)
        if inside.sum() < 5000:
            continue
        checked += 1
        assert bits[inside].double().mean().item() == pytest.approx(torch.sigmoid(llrs[inside]).mean().item(),
                                                                    abs=0.015)
    assert checked >= 20
    wrong = torch.sigmoid(2 * llrs)  # what a receiver with half the noise variance would believe
    assert (wrong[llrs.abs() > 1] - bits[llrs.abs() > 1].double()).abs().mean() < \
           (torch.sigmoid(llrs[llrs.abs() > 1]) - bits[llrs.abs() > 1].double()).abs().mean()


def test_map_over_a_16qam_link():
    labels = torch.randint(0, 4, (2, 32, 32), generator=seeded())
    x = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    transmitted = x.flatten(2).amax(-1) > 0
    assert torch.equal(DigitalLinkChannel(None, modulation="16qam")(x, transmitted, seeded()), x)
    noisy = DigitalLinkChannel(4.0, channel="awgn", modulation="16qam")(x, transmitted, seeded())
    error_rate = (noisy != x)[transmitted].double().mean().item()
    assert error_rate == pytest.approx(qam_ber_awgn(16, 4.0), rel=0.15)  # 8192 bits, ~380 errors


def test_link_rejects_bad_modulation_and_k():
    for bad in ("8qam", "QAM16", 16, None):
        with pytest.raises(ValueError, match="modulation must be one of"):
            DigitalLinkChannel(3.0, modulation=bad)
    for bad in (-1.0, float("nan"), -math.inf, "4", True):
        with pytest.raises(ValueError, match="rician_k"):
            DigitalLinkChannel(3.0, channel="rician_flat", rician_k=bad)
    with pytest.raises(ValueError, match="needs rician_k"):
        DigitalLinkChannel(3.0, channel="rician_flat")
    with pytest.raises(ValueError, match="rician_k is only used with channel='rician_flat'"):
        DigitalLinkChannel(3.0, channel="multipath", rician_k=3.0)
    assert DigitalLinkChannel(3.0, modulation="16QAM").modulation == "16qam"
    info = DigitalLinkChannel(3.0, channel="rician_flat", rician_k=math.inf).describe()
    assert info["rician_k"] == math.inf and info["channel"] == "rician_flat"


# ----------------------------------------------------------------------------------------------------------------
# Simulated BER against the closed forms
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class BerMeasurement:
    bits: int
    errors: int
    ber: float
    theory: float
    batch_se: float

    @property
    def relative_error(self) -> float:
        return (self.ber - self.theory) / self.theory

    @property
    def binomial_relative_sd(self) -> float:
        return math.sqrt((1.0 - self.theory) / (self.bits * self.theory))

    @property
    def z(self) -> float:
        return (self.ber - self.theory) / self.batch_se

    def check(self) -> None:
        summary = (f"BER {self.ber:.4e} vs theory {self.theory:.4e} ({self.relative_error:+.2%}) on {self.bits} bits, "
                   f"{self.errors} errors, z = {self.z:+.2f} (batch SE {self.batch_se / self.theory:.2%}, binomial "
                   f"{self.binomial_relative_sd:.2%})")
        assert 5e-4 <= self.theory <= 2e-2, "choose Eb/N0 for a BER of 1e-3..1e-2: " + summary
        assert self.bits >= 100_000 and self.binomial_relative_sd <= 0.0125, "too few errors for 5 %: " + summary
        assert self.batch_se <= 0.0175 * self.theory, "too few independent errors for 5 %: " + summary
        assert abs(self.relative_error) <= 0.05, summary
        assert abs(self.z) <= 4.0, summary


def measure_ber(link: DigitalLinkChannel, theory: float, target_errors: int = 10_000, batches: int = 20,
                seed: int = 0) -> BerMeasurement:
    """Send about ``target_errors / theory`` bits (>= 1e5) in ``batches`` independent batches; count the errors."""
    total = max(100_000, math.ceil(target_errors / theory))
    per_batch = math.ceil(total / batches / link.bits_per_frame) * link.bits_per_frame
    errors = []
    for batch in range(batches):
        bits = random_bits(per_batch, seed=10_000 * seed + 2 * batch + 1)
        errors.append(int((link.transmit_bits(bits, seeded(10_000 * seed + 2 * batch)) != bits).sum()))
    rates = torch.tensor(errors, dtype=torch.float64) / per_batch
    return BerMeasurement(bits=per_batch * batches, errors=sum(errors), ber=sum(errors) / (per_batch * batches),
                          theory=theory, batch_se=rates.std().item() / math.sqrt(batches))


#: Eb/N0 (dB) per modulation for AWGN BERs of about 1e-2, 3e-3 and 1e-3.
AWGN_POINTS = {4: (4.5, 6.0, 7.0), 16: (8.0, 9.5, 10.5), 64: (12.0, 13.5, 15.0), 256: (16.5, 18.0, 19.5)}
#: (K, Eb/N0 dB) per modulation for flat Rician BERs of about 3e-3; K = 0 is Rayleigh.
RICIAN_POINTS = {4: ((0.0, 19.0), (4.0, 11.5), (10.0, 8.0)), 16: ((0.0, 22.0), (4.0, 14.5), (10.0, 11.5)),
                 64: ((0.0, 25.5), (4.0, 18.5), (10.0, 15.5)), 256: ((0.0, 29.5), (4.0, 22.5), (10.0, 20.0))}


@pytest.mark.parametrize("order,ebn0_db", [(order, e) for order, points in AWGN_POINTS.items() for e in points])
def test_ber_over_awgn_matches_the_closed_form(order, ebn0_db):
    link = DigitalLinkChannel(ebn0_db, channel="awgn", modulation=NAMES[order])
    measure_ber(link, qam_ber_awgn(order, ebn0_db), seed=order).check()


@pytest.mark.parametrize("order,k_factor,ebn0_db",
                         [(order, k, e) for order, points in RICIAN_POINTS.items() for k, e in points])
def test_ber_over_flat_rician_matches_the_closed_form(order, k_factor, ebn0_db):
    # One subcarrier per frame: an independent fade per symbol, so 1e4 errors come from many fades.
    link = DigitalLinkChannel(ebn0_db, channel="rician_flat", rician_k=k_factor, modulation=NAMES[order],
                              num_subcarriers=1, cp_length=0)
    measure_ber(link, qam_ber_rician(order, ebn0_db, k_factor), seed=order + 1).check()


@pytest.mark.parametrize("order,ebn0_db", [(16, 22.0), (256, 29.5)])
def test_ber_over_ofdm_multipath_with_zf_matches_rayleigh(order, ebn0_db):
    # The paper's OFDM (N = 256, 8 taps): the 256 subcarriers of a frame fade together in about 8 degrees of freedom,
    # so the errors come in bursts and 4e4 of them are needed for a 1.3 % standard error.
    link = DigitalLinkChannel(ebn0_db, channel="multipath", modulation=NAMES[order])
    measure_ber(link, qam_ber_rayleigh(order, ebn0_db), target_errors=40_000, seed=order + 2).check()


def test_ber_rician_without_fading_matches_awgn():
    link = DigitalLinkChannel(9.5, channel="rician_flat", rician_k=math.inf, modulation="16qam")
    measure_ber(link, qam_ber_awgn(16, 9.5), seed=3).check()


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def test_gesco_transmit_digital_with_qam_and_rician(tmp_path, capsys):
    import json

    from gesco_diffusers.cli import main

    common = ["transmit", "--channel", "digital", "--steps", "2", "--size", "32", "40", "--json"]
    assert main([*common, "--modulation", "16qam", "--ebn0", "12", "--output", str(tmp_path / "a")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "16QAM" in report["channel"] and "multipath" in report["channel"]
    assert report["extra"]["channel"]["modulation"] == "16qam"
    assert main([*common, "--modulation", "64qam", "--rician-k", "4", "--ebn0", "15",
                 "--output", str(tmp_path / "b")]) == 0
    info = json.loads(capsys.readouterr().out)["extra"]["channel"]
    assert info["modulation"] == "64qam" and info["channel"] == "rician_flat" and info["rician_k"] == 4.0
    assert main([*common, "--output", str(tmp_path / "c")]) == 0  # default: the paper's QPSK over multipath
    assert json.loads(capsys.readouterr().out)["extra"]["channel"]["modulation"] == "qpsk"
    # Bad values: one line, before the model loads.
    for extra, message in ((["--rician-k", "-1"], "--rician-k must be >= 0"),
                           (["--rician-k", "nan"], "--rician-k must be >= 0"),
                           (["--channel", "awgn", "--modulation", "16qam"],
                            "--modulation applies to --channel digital")):
        assert main([*common, *extra, "--output", str(tmp_path / "d")]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main([*common, "--modulation", "8qam", "--output", str(tmp_path / "d")]) == 2  # argparse choices
    assert "8qam" in capsys.readouterr().err
