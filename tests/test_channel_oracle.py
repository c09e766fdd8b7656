"""Channel oracle: the digital link's blocks against NVIDIA Sionna's (``pip install -e ".[oracle]"``, sionna-no-rt).

Sionna 2.x is written in PyTorch; its ``phy`` package is the reference for the conventions compared here on the same
bits: QAM constellations and labels (3GPP TS 38.211), Eb/N0 -> N0 (``ebnodb2no``) and the AWGN variance per complex
dimension, max-log demapping (LLR = ln P(1)/P(0)), BER of the whole chain over AWGN and flat Rayleigh fading with
zero forcing, and OFDM with a cyclic prefix over a multipath channel (modulation, time-domain channel, demodulation,
frequency response, ZF and its post-equalisation noise variance). Skipped when Sionna is not installed.
"""

import math

import numpy as np
import pytest
import torch

sionna = pytest.importorskip(
    "sionna.phy", reason="the channel oracle needs the optional extra: pip install -e '.[oracle]' (sionna-no-rt)"
)
from sionna.phy import config as sionna_config  # noqa: E402
from sionna.phy.channel import (  # noqa: E402
    AWGN,
    ApplyFlatFadingChannel,
    ApplyTimeChannel,
    GenerateFlatFadingChannel,
    cir_to_ofdm_channel,
    subcarrier_frequencies,
)
from sionna.phy.mapping import Demapper, Mapper, qam  # noqa: E402
from sionna.phy.mimo import zf_equalizer  # noqa: E402
from sionna.phy.ofdm import OFDMDemodulator as SionnaOFDMDemodulator  # noqa: E402
from sionna.phy.ofdm import OFDMModulator as SionnaOFDMModulator  # noqa: E402
from sionna.phy.utils import ebnodb2no  # noqa: E402

from gesco_diffusers.channel import (  # noqa: E402
    MODULATIONS,
    ComplexAWGN,
    DigitalLinkChannel,
    MultipathChannel,
    OFDMDemodulator,
    OFDMModulator,
    QAMDemodulator,
    QAMModulator,
    ZeroForcingEqualizer,
    ebn0_to_n0,
    qam_ber_awgn,
    qam_ber_rayleigh,
)

CPU = "cpu"
ORDERS = (4, 16, 64, 256)
NAMES = {order: name for name, order in MODULATIONS.items()}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_bits(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=seeded(seed), dtype=torch.uint8)


@pytest.fixture
def sionna_seed():
    """Seed Sionna's own CPU generator (not torch's global one: setting ``config.seed`` would reseed that too)."""

    def seed(value: int) -> None:
        sionna_config.torch_rng(CPU).manual_seed(value)

    return seed


def k_of(order: int) -> int:
    return order.bit_length() - 1


@pytest.mark.parametrize("order", ORDERS)
def test_constellation_and_mapping_are_sionnas(order):
    k = k_of(order)
    ours = QAMModulator(order)
    theirs = torch.from_numpy(qam(k)).to(torch.complex64)  # point n carries the bits of n, MSB first
    assert torch.allclose(ours.constellation, theirs, atol=1e-6)
    bits = random_bits(k * 2000, seed=order).reshape(4, -1)
    mapped = Mapper("qam", k, device=CPU)(bits.to(torch.float32))
    assert torch.allclose(ours(bits), mapped, atol=1e-6)


@pytest.mark.parametrize("order", ORDERS)
def test_noise_variance_convention_is_sionnas(order, sionna_seed):
    k = k_of(order)
    for ebn0_db in (-3.0, 0.0, 7.5, 20.0):
        assert ebn0_to_n0(ebn0_db, 1.0, k) == pytest.approx(ebnodb2no(ebn0_db, k, 1.0, device=CPU).item(), rel=1e-6)
    n0 = ebn0_to_n0(5.0, 1.0, k)
    zeros = torch.zeros(1_000_000, dtype=torch.complex64)
    sionna_seed(order)
    theirs = AWGN(device=CPU)(zeros, n0)
    ours = ComplexAWGN()(zeros, n0, seeded(order))
    for noise in (theirs, ours):  # CN(0, N0): N0 per complex symbol, N0 / 2 per real dimension
        assert noise.abs().pow(2).mean().item() == pytest.approx(n0, rel=0.01)
        assert noise.real.var().item() == pytest.approx(n0 / 2, rel=0.01)
        assert noise.imag.var().item() == pytest.approx(n0 / 2, rel=0.01)


@pytest.mark.parametrize("order", ORDERS)
def test_demapping_is_sionnas_on_the_same_symbols(order):
    k = k_of(order)
    bits = random_bits(k * 9000, seed=order + 1).reshape(3, -1)
    received = ComplexAWGN()(QAMModulator(order)(bits), ebn0_to_n0(6.0, 1.0, k), seeded(order))
    no = torch.rand(3, 3000, generator=seeded(7)) * 0.2 + 0.005  # one noise variance per symbol (as after ZF)
    ours = QAMDemodulator(order, soft=True)(received, no)
    theirs = Demapper("maxlog", "qam", k, device=CPU)(received, no)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())  # float32 rounding
    hard = Demapper("maxlog", "qam", k, hard_out=True, device=CPU)(received, no)
    assert torch.equal(QAMDemodulator(order)(received), hard.to(torch.uint8))


def sionna_chain_errors(bits: torch.Tensor, order: int, ebn0_db: float, fading: bool, chunk: int = 1 << 16) -> int:
    """Bit errors of Sionna's chain on ``bits``: Mapper -> [flat Rayleigh h ~ CN(0, 1) per symbol] -> AWGN at
    ``ebnodb2no`` -> [ZF, ``zf_equalizer``, with its post-equalisation noise variance] -> max-log hard decisions."""
    k = k_of(order)
    mapper, demapper = Mapper("qam", k, device=CPU), Demapper("maxlog", "qam", k, hard_out=True, device=CPU)
    no = ebnodb2no(ebn0_db, k, 1.0, device=CPU)
    errors = 0
    for part in bits.reshape(-1, k).split(chunk):  # chunks of symbols: the demapper holds (n, M) distances
        x = mapper(part.reshape(-1).to(torch.float32)).reshape(-1, 1)  # [n, 1 tx antenna]
        if fading:
            h = GenerateFlatFadingChannel(1, 1, device=CPU)(x.shape[0])  # [n, 1 rx, 1 tx]
            y = ApplyFlatFadingChannel(device=CPU)(x, h, no)
            s = no * torch.eye(1, dtype=torch.complex64).expand(x.shape[0], 1, 1)
            x_hat, no_eff = zf_equalizer(y, h, s)
        else:
            x_hat, no_eff = AWGN(device=CPU)(x, no), no.expand(x.shape)
        decided = demapper(x_hat.reshape(-1), no_eff.reshape(-1))
        errors += int((decided.to(torch.uint8) != part.reshape(-1)).sum())
    return errors


@pytest.mark.parametrize("order,fading,ebn0_db", [
    (4, False, 6.0), (16, False, 9.5), (64, False, 13.5), (256, False, 18.0),
    (4, True, 19.0), (16, True, 22.0), (64, True, 25.5), (256, True, 29.5),
])
def test_ber_of_our_link_and_sionnas_chain_on_the_same_bits(order, fading, ebn0_db, sionna_seed):
    theory = (qam_ber_rayleigh if fading else qam_ber_awgn)(order, ebn0_db)
    assert 1e-3 <= theory <= 1e-2
    k = k_of(order)
    num_bits = math.ceil(4000 / theory / k) * k  # about 4000 errors each: binomial SD 1.6 %
    bits = random_bits(num_bits, seed=order + 10 * fading)
    # Ours: the link with one subcarrier per frame, so that flat fading is one fade per symbol as in Sionna's chain.
    link = DigitalLinkChannel(ebn0_db, channel="rician_flat" if fading else "awgn", modulation=NAMES[order],
                              rician_k=0.0 if fading else None, num_subcarriers=1, cp_length=0)
    ours = int((link.transmit_bits(bits, seeded(order)) != bits).sum())
    sionna_seed(order)
    theirs = sionna_chain_errors(bits, order, ebn0_db, fading)
    # Bits of one symbol (and one fade) err together: allow 2x the binomial variance for each estimate.
    sd = math.sqrt(2 * num_bits * theory * (1 - theory))
    assert abs(theirs - num_bits * theory) < 4 * sd, f"Sionna {theirs / num_bits:.4e} vs closed form {theory:.4e}"
    assert abs(ours - theirs) < 4 * math.sqrt(2) * sd, f"ours {ours / num_bits:.4e} vs Sionna {theirs / num_bits:.4e}"


@pytest.mark.parametrize("order", [4, 64])
def test_ofdm_multipath_and_zf_are_sionnas_on_the_same_bits(order):
    num_subcarriers, cp_length, num_taps, frames = 64, 8, 6, 40
    k = k_of(order)
    bits = random_bits(frames * num_subcarriers * k, seed=order).reshape(frames, -1)
    symbols = QAMModulator(order)(bits)  # (F, N), subcarrier k at index k (DC first)
    centred = torch.fft.fftshift(symbols, dim=-1)  # Sionna's resource grid: subcarriers -N/2 .. N/2 - 1

    # OFDM modulation: Sionna's normalised IDFT and cyclic prefix give our time samples.
    ours_time = OFDMModulator(num_subcarriers, cp_length)(symbols)
    theirs_time = SionnaOFDMModulator(cp_length, device=CPU)(centred[:, None, :])  # [F, 1 OFDM symbol] -> [F, N+CP]
    assert torch.allclose(ours_time, theirs_time, atol=1e-6)

    # The multipath channel: our taps (drawn as MultipathChannel.forward draws them) through Sionna's time channel.
    channel = MultipathChannel(num_taps=num_taps, pdp_decay=2.0, num_subcarriers=num_subcarriers)
    taps = channel.sample_taps(frames, seeded(3))
    received, response = channel(ours_time, seeded(3))
    length = num_subcarriers + cp_length
    h_time = taps[:, None, None, None, None, None, :].expand(frames, 1, 1, 1, 1, length + num_taps - 1, num_taps)
    theirs_received = ApplyTimeChannel(length, num_taps, device=CPU)(ours_time[:, None, None, :], h_time)
    assert torch.allclose(received, theirs_received[:, 0, 0, :length], atol=1e-5)  # the tail is the next frame's ISI

    # Frequency response: Sionna's CIR -> OFDM channel with delays l / (N df).
    spacing = 15e3
    frequencies = subcarrier_frequencies(num_subcarriers, spacing, device=CPU)
    tau = (torch.arange(num_taps, dtype=torch.float32) / (num_subcarriers * spacing)).expand(frames, 1, 1, num_taps)
    a = taps[:, None, None, None, None, :, None]  # [F, rx, rx ant, tx, tx ant, paths, time steps]
    theirs_response = cir_to_ofdm_channel(frequencies, a, tau)[:, 0, 0, 0, 0, 0, :]
    assert torch.allclose(torch.fft.fftshift(response, dim=-1), theirs_response, atol=1e-4)

    # Noise, OFDM demodulation and ZF on the same noisy samples; then the post-ZF noise variance and the LLRs.
    n0 = ebn0_to_n0(8.0, 1.0, k)
    noisy = ComplexAWGN()(received, n0, seeded(4))
    ours_grid = OFDMDemodulator(num_subcarriers, cp_length)(noisy)
    sionna_demodulator = SionnaOFDMDemodulator(num_subcarriers, 0, cp_length, device=CPU)  # l_min = 0: causal taps
    theirs_grid = sionna_demodulator(noisy[:, None, :]).reshape(frames, -1)
    assert torch.allclose(torch.fft.fftshift(ours_grid, dim=-1), theirs_grid, atol=1e-5)
    ours_hat = ZeroForcingEqualizer()(ours_grid, response)
    s = torch.full((frames, num_subcarriers, 1, 1), n0, dtype=torch.complex64)
    theirs_hat, theirs_no = zf_equalizer(theirs_grid[..., None], theirs_response[..., None, None], s)
    assert torch.allclose(torch.fft.fftshift(ours_hat, dim=-1), theirs_hat[..., 0], rtol=1e-4, atol=1e-4)
    ours_no = n0 / response.abs().pow(2)  # what DigitalLinkChannel gives its soft demapper
    assert torch.allclose(torch.fft.fftshift(ours_no, dim=-1), theirs_no[..., 0], rtol=1e-3)
    ours_llrs = QAMDemodulator(order, soft=True)(ours_hat, ours_no)
    theirs_llrs = Demapper("maxlog", "qam", k, device=CPU)(torch.fft.ifftshift(theirs_hat[..., 0], dim=-1),
                                                            torch.fft.ifftshift(theirs_no[..., 0], dim=-1))
    assert torch.allclose(ours_llrs, theirs_llrs, rtol=1e-3, atol=1e-2)
    assert torch.equal((ours_llrs > 0).to(torch.uint8), (theirs_llrs > 0).to(torch.uint8))


def test_link_llrs_are_sionnas_demapper_on_the_link_symbols():
    # The whole link with soft output equals Sionna's max-log demapper given our equalised symbols and N0 / |H|^2.
    link = DigitalLinkChannel(5.0, channel="multipath", modulation="16qam", num_subcarriers=64, cp_length=8)
    bits = random_bits(link.bits_per_frame * 30, seed=2)
    llrs = link.transmit_llrs(bits, seeded(9))
    # Replay the link's draws to get its equalised symbols.
    frames = bits.reshape(30, -1)
    generator = seeded(9)
    samples, response = link.fading(link.ofdm_modulator(link.modulator(frames)), generator)
    n0 = ebn0_to_n0(torch.tensor(5.0, dtype=torch.float64), torch.ones((), dtype=torch.float64), 4)
    samples = link.noise(samples, n0, generator)
    equalised = link.equalizer(link.ofdm_demodulator(samples), response)
    no = (n0 / response.abs().pow(2).to(torch.float64)).to(torch.float32)
    theirs = Demapper("maxlog", "qam", 4, device=CPU)(equalised, no).reshape(-1)
    assert torch.allclose(llrs, theirs, rtol=1e-3, atol=1e-3)
    assert np.isfinite(llrs.numpy()).all()
