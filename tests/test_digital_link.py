"""The digital link of Sec. IV-C: QPSK, OFDM, multipath, AWGN at Eb/N0, zero forcing, and the end-to-end channel."""

import math

import numpy as np
import pytest
import torch

from gesco_diffusers.channel import (
    ComplexAWGN,
    DigitalLinkChannel,
    MultipathChannel,
    OFDMDemodulator,
    OFDMModulator,
    QPSKDemodulator,
    QPSKModulator,
    ZeroForcingEqualizer,
    bits_to_bytes,
    bytes_to_bits,
    ebn0_to_n0,
    qpsk_ber_awgn,
    qpsk_ber_rayleigh,
)

EBN0S = (0.0, 2.0, 4.0, 6.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_bits(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=seeded(seed), dtype=torch.uint8)


def measured_ber(link: DigitalLinkChannel, num_bits: int, seed: int = 0) -> float:
    bits = random_bits(num_bits, seed + 100)
    return (link.transmit_bits(bits, seeded(seed)) != bits).double().mean().item()


def test_qpsk_gray_mapping():
    symbols = QPSKModulator()(torch.tensor([0, 0, 0, 1, 1, 0, 1, 1], dtype=torch.uint8))
    expected = torch.tensor([1 + 1j, 1 - 1j, -1 + 1j, -1 - 1j], dtype=torch.complex64) / math.sqrt(2)
    assert torch.allclose(symbols, expected)
    bits = random_bits(1000).reshape(10, 100)
    assert torch.equal(QPSKDemodulator()(QPSKModulator()(bits)), bits)
    assert QPSKModulator()(bits).abs().pow(2).mean().item() == pytest.approx(1.0)  # Es = 1


def test_qpsk_rejects_bad_bits():
    with pytest.raises(ValueError, match="even"):
        QPSKModulator()(torch.ones(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="only 0 and 1"):
        QPSKModulator()(torch.tensor([0, 2], dtype=torch.uint8))
    with pytest.raises(TypeError, match="integer or bool"):
        QPSKModulator()(torch.tensor([0.0, 1.0]))


def test_ofdm_without_noise_is_exact_and_unitary():
    symbols = QPSKModulator()(random_bits(2 * 256 * 20).reshape(20, 512))
    modulator, demodulator = OFDMModulator(256, 32), OFDMDemodulator(256, 32)
    samples = modulator(symbols)
    assert samples.shape == (20, 288)
    assert torch.allclose(samples[:, :32], samples[:, -32:])  # the cyclic prefix is the tail of the body
    assert samples[:, 32:].abs().pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)  # energy per sample kept
    assert torch.allclose(demodulator(samples), symbols, atol=1e-6)
    assert torch.equal(QPSKDemodulator()(demodulator(samples)), random_bits(2 * 256 * 20).reshape(20, 512))
    with pytest.raises(ValueError, match=r"\(\.\.\., 256\)"):
        modulator(symbols[:, :100])


@pytest.mark.parametrize("num_taps", [1, 8, 33])  # 33 taps: CP = 32 = L - 1 exactly
def test_multipath_with_cyclic_prefix_is_a_per_subcarrier_product(num_taps):
    symbols = QPSKModulator()(random_bits(512 * 16).reshape(16, 512))
    channel = MultipathChannel(num_taps=num_taps, pdp_decay=4.0)
    received, response = channel(OFDMModulator(256, 32)(symbols), seeded())
    # Noiseless: OFDM demodulation then ZF gives the symbols back exactly, thanks to CP >= L - 1.
    equalised = ZeroForcingEqualizer()(OFDMDemodulator(256, 32)(received), response)
    assert torch.allclose(equalised, symbols, atol=1e-4)
    assert channel.power_delay_profile.sum().item() == pytest.approx(1.0)


def test_multipath_rejects_a_short_cyclic_prefix():
    samples = OFDMModulator(256, 4)(torch.ones(2, 256, dtype=torch.complex64))
    with pytest.raises(ValueError, match="cyclic prefix"):
        MultipathChannel(num_taps=8)(samples, seeded())
    with pytest.raises(ValueError, match="cp_length"):
        DigitalLinkChannel(5.0, channel="multipath", num_taps=40, cp_length=32)


def test_multipath_responses_are_unit_power_rayleigh():
    channel = MultipathChannel(num_taps=8)
    _, response = channel(torch.zeros(4000, 288, dtype=torch.complex64), seeded())
    power = response.abs().pow(2)
    assert power.mean().item() == pytest.approx(1.0, rel=0.02)
    assert (power > 1.0).double().mean().item() == pytest.approx(math.exp(-1.0), abs=0.01)  # |H|^2 ~ Exp(1)


def test_complex_awgn_has_variance_n0_and_ebn0_definition():
    n0 = ebn0_to_n0(3.0)
    assert n0 == pytest.approx(1.0 / (2 * 10 ** 0.3))
    noise = ComplexAWGN()(torch.zeros(1_000_000, dtype=torch.complex64), n0, seeded())
    assert noise.abs().pow(2).mean().item() == pytest.approx(n0, rel=0.01)
    assert noise.real.var().item() == pytest.approx(n0 / 2, rel=0.01)


@pytest.mark.parametrize("ebn0_db", EBN0S)
def test_ber_over_awgn_matches_theory(ebn0_db):
    ber = measured_ber(DigitalLinkChannel(ebn0_db, channel="awgn"), 2_000_000)
    assert ber == pytest.approx(qpsk_ber_awgn(ebn0_db), rel=0.10)


@pytest.mark.parametrize("ebn0_db", EBN0S)
def test_ber_over_flat_rayleigh_with_zf_matches_theory(ebn0_db):
    # One gain per OFDM frame: 4M bits = 7813 independent fades (relative std of the estimate < 2%).
    ber = measured_ber(DigitalLinkChannel(ebn0_db, channel="rayleigh_flat"), 4_000_000)
    assert ber == pytest.approx(qpsk_ber_rayleigh(ebn0_db), rel=0.10)


@pytest.mark.parametrize("ebn0_db", EBN0S)
def test_ber_over_ofdm_multipath_with_zf_matches_rayleigh_theory(ebn0_db):
    ber = measured_ber(DigitalLinkChannel(ebn0_db, channel="multipath", num_taps=8), 2_000_000)
    assert ber == pytest.approx(qpsk_ber_rayleigh(ebn0_db), rel=0.10)


def test_receiver_referenced_es_removes_flat_fading_power():
    # Es measured per frame after a flat channel normalises |h|^2 away: the BER follows the AWGN curve.
    link = DigitalLinkChannel(4.0, channel="rayleigh_flat", es_reference="receiver")
    assert measured_ber(link, 2_000_000) == pytest.approx(qpsk_ber_awgn(4.0), rel=0.10)


def test_trace_driven_responses_from_files(tmp_path):
    rng = np.random.default_rng(0)
    responses = (rng.standard_normal((50, 256)) + 1j * rng.standard_normal((50, 256))) * 1e-3  # path loss
    np.save(tmp_path / "h.npy", responses)
    np.savez(tmp_path / "h.npz", frequency_responses=responses, other=np.zeros(3))
    for path in (tmp_path / "h.npy", tmp_path / "h.npz", str(tmp_path / "h.npy")):
        link = DigitalLinkChannel(None, channel="multipath", frequency_responses=path)
        assert link.fading.trace_driven
        assert link.fading.responses.abs().pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)  # normalised
        bits = random_bits(512 * 30)
        assert torch.equal(link.transmit_bits(bits, seeded()), bits)  # noiseless + ZF: exact
    # The per-frame responses come from the file (up to the normalisation) and are drawn with the generator.
    samples = OFDMModulator()(torch.ones(5, 256, dtype=torch.complex64))
    _, response = MultipathChannel(frequency_responses=responses, normalize=False)(samples, seeded())
    rows = torch.from_numpy(responses.astype(np.complex64))
    assert all(any(torch.allclose(r, row) for row in rows) for r in response)


def test_trace_driven_input_validation(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(num_realisations, 256\)"):
        MultipathChannel(frequency_responses=np.ones((4, 128), dtype=np.complex64))
    with pytest.raises(ValueError, match="NaN"):
        MultipathChannel(frequency_responses=np.full((2, 256), np.nan, dtype=np.complex64))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        MultipathChannel(frequency_responses=tmp_path / "missing.npy")
    np.savez(tmp_path / "two.npz", a=np.ones((2, 256)), b=np.ones((2, 256)))
    with pytest.raises(ValueError, match="frequency_responses"):
        MultipathChannel(frequency_responses=tmp_path / "two.npz")
    with pytest.raises(ValueError, match="only used with channel='multipath'"):
        DigitalLinkChannel(3.0, channel="awgn", frequency_responses=np.ones((2, 256)))


def test_bytes_bits_roundtrip_and_codec_stream():
    data = bytes(range(256)) * 3 + b"\x01"
    bits = bytes_to_bits(data)
    assert bits.dtype == torch.uint8 and bits.numel() == 8 * len(data)
    assert bits[:16].tolist() == [0] * 8 + [0] * 7 + [1]  # MSB first: 0x00, 0x01
    assert bits_to_bytes(bits) == data
    link = DigitalLinkChannel(float("inf"), channel="multipath")
    assert link.transmit_bytes(data, seeded()) == data  # 6152 bits: padded to 13 frames, unpadded after
    noisy = link.transmit_bytes(data, seeded(), ebn0_db=0.0)
    assert len(noisy) == len(data) and noisy != data
    with pytest.raises(ValueError, match="multiple of 8"):
        bits_to_bytes(bits[:-1])


def test_semantic_map_as_bits():
    labels = torch.randint(0, 4, (3, 16, 16), generator=seeded())
    x = torch.nn.functional.one_hot(labels, 6).permute(0, 3, 1, 2).float()  # classes 4, 5 absent
    transmitted = x.flatten(2).amax(-1) > 0
    clean = DigitalLinkChannel(None)(x, transmitted, seeded())
    assert torch.equal(clean, x)
    noisy = DigitalLinkChannel(0.0)(x, transmitted, seeded())
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(noisy[:, 4:], torch.zeros_like(noisy[:, 4:]))
    error_rate = (noisy != x)[transmitted].double().mean().item()
    assert 0.05 < error_rate < 0.3  # about the Rayleigh BER at 0 dB (0.146), on a few thousand bits


def test_nothing_transmitted():
    link = DigitalLinkChannel(0.0)
    assert link.transmit_bits(torch.zeros(0, dtype=torch.uint8)).numel() == 0
    x = torch.ones(2, 3, 4, 4)
    assert torch.equal(link(x, torch.zeros(2, 3, dtype=torch.bool)), torch.zeros_like(x))
    assert link.transmit_bytes(b"") == b""


def test_per_sample_ebn0():
    x = torch.ones(3, 1, 64, 64)
    received = DigitalLinkChannel([float("inf"), 0.0, float("inf")], channel="awgn")(x, generator=seeded())
    assert torch.equal(received[0], x[0]) and torch.equal(received[2], x[2])
    assert (received[1] != x[1]).double().mean().item() == pytest.approx(qpsk_ber_awgn(0.0), rel=0.25)


def test_ebn0_validation():
    link = DigitalLinkChannel(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="ebn0_db has 2 values but the batch has 3 samples"):
        link(torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match="scalar ebn0_db"):
        link.transmit_bits(random_bits(16))
    with pytest.raises(ValueError, match="NaN"):
        DigitalLinkChannel(float("nan"))
    with pytest.raises(ValueError, match="1-D"):
        DigitalLinkChannel(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="channel must be one of"):
        DigitalLinkChannel(3.0, channel="deepmimo")


def test_digital_blocks_are_seeded():
    bits = random_bits(512 * 8)
    for channel in ("awgn", "rayleigh_flat", "multipath"):
        link = DigitalLinkChannel(1.0, channel=channel)
        first = link.transmit_bits(bits, seeded(7))
        assert torch.equal(first, link.transmit_bits(bits, seeded(7)))
        assert not torch.equal(first, link.transmit_bits(bits, seeded(8)))
