"""Analog channel models: AWGN (Eq. 15 and the official table), Poisson, Poisson + Gaussian, Rayleigh fading."""

import math

import pytest
import torch

from gesco_diffusers.channel import (
    OFFICIAL_PSNR_TO_SIGMA,
    AWGNChannel,
    DigitalLinkChannel,
    PoissonChannel,
    PoissonGaussianChannel,
    RayleighFadingChannel,
    SemanticChannel,
    build_channel,
    empirical_psnr,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_batch(batch=2, channels=5, size=8, seed=0):
    labels = torch.randint(0, channels - 1, (batch, size, size), generator=seeded(seed))  # last class absent
    return torch.nn.functional.one_hot(labels, channels).permute(0, 3, 1, 2).float()


ALL_CHANNELS = [
    lambda: AWGNChannel(10.0),
    lambda: AWGNChannel(10, psnr_convention="official_table"),
    lambda: PoissonChannel(10.0),
    lambda: PoissonGaussianChannel(10.0, poisson_fraction=0.3),
    lambda: RayleighFadingChannel(10.0),
    lambda: RayleighFadingChannel(10.0, block_size=16, equalize=False),
    lambda: DigitalLinkChannel(2.0, channel="multipath"),
]


@pytest.mark.parametrize("psnr_db", [1.0, 10.0, 30.0])
def test_awgn_empirical_psnr_within_0p1_db(psnr_db):
    clean = torch.zeros(1, 1, 1000, 1000)
    received = AWGNChannel(psnr_db)(clean, generator=seeded())
    assert abs(empirical_psnr(clean, received) - psnr_db) < 0.1
    assert AWGNChannel(psnr_db).sigma == pytest.approx(10 ** (-psnr_db / 20))


def test_awgn_peak_power_scales_sigma():
    channel = AWGNChannel(20.0, peak_power=4.0)
    assert channel.sigma == pytest.approx(2.0 * 0.1)
    clean = torch.zeros(1, 1, 500, 500)
    assert abs(empirical_psnr(clean, channel(clean, generator=seeded()), peak_power=4.0) - 20.0) < 0.1


def test_awgn_official_table_is_copied_literally():
    assert OFFICIAL_PSNR_TO_SIGMA == {100: 0.0, 30: 0.05, 25: 0.08, 20: 0.13, 15: 0.22, 10: 0.36, 5: 0.6, 1: 0.9}
    channel = AWGNChannel(10, psnr_convention="official_table")
    assert channel.sigma == 0.36
    noise = channel(torch.zeros(1, 1, 500, 500), generator=seeded())
    assert noise.std().item() == pytest.approx(0.36, rel=0.01)
    assert torch.equal(AWGNChannel(100, psnr_convention="official_table")(torch.ones(1, 2, 3, 3)),
                       torch.ones(1, 2, 3, 3))


def test_awgn_official_table_rejects_unknown_psnr():
    with pytest.raises(ValueError, match=r"not in the official table.*\[1, 5, 10, 15, 20, 25, 30, 100\]"):
        AWGNChannel(12.0, psnr_convention="official_table")
    with pytest.raises(ValueError, match="psnr_convention"):
        AWGNChannel(10.0, psnr_convention="table")


@pytest.mark.parametrize("psnr_db", [None, math.inf])
def test_noiseless_settings(psnr_db):
    x = one_hot_batch()
    for channel in (AWGNChannel(psnr_db), PoissonChannel(psnr_db), PoissonGaussianChannel(psnr_db)):
        assert torch.equal(channel(x), x)
    # Rayleigh without noise: equalisation restores x (up to float rounding).
    assert torch.allclose(RayleighFadingChannel(psnr_db)(x, generator=seeded()), x, atol=1e-5)


def test_poisson_peak_variance_matches_psnr():
    for psnr_db in (5.0, 10.0, 20.0):
        channel = PoissonChannel(psnr_db)
        assert channel.peak_photons == pytest.approx(10 ** (psnr_db / 10))
        peak = torch.ones(1, 1, 1000, 1000)
        received = channel(peak, generator=seeded())
        assert abs(empirical_psnr(peak, received) - psnr_db) < 0.1
        assert received.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased
    zeros = torch.zeros(1, 1, 10, 10)
    assert torch.equal(PoissonChannel(1.0)(zeros, generator=seeded()), zeros)  # no photons, no shot noise


def test_poisson_counts_are_quantised_by_the_peak_photon_count():
    channel = PoissonChannel(10.0)  # 10 photons at the peak: outputs are multiples of 1/10
    received = channel(torch.ones(1, 1, 50, 50), generator=seeded())
    assert torch.allclose(received * 10, (received * 10).round(), atol=1e-4)


def test_poisson_rejects_negative_maps():
    x = torch.ones(1, 2, 4, 4)
    x[0, 0, 0, 0] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        PoissonChannel(10.0)(x)
    transmitted = torch.tensor([[False, True]])  # the negative element is not transmitted: fine
    assert PoissonChannel(10.0)(x, transmitted, seeded())[0, 0].abs().sum() == 0


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_mixture_total_peak_psnr_matches_request(fraction):
    channel = PoissonGaussianChannel(10.0, poisson_fraction=fraction)
    peak = torch.ones(1, 1, 1000, 1000)
    assert abs(empirical_psnr(peak, channel(peak, generator=seeded())) - 10.0) < 0.1
    total = 10 ** (-10.0 / 10)
    assert channel.gaussian.sigma ** 2 == pytest.approx((1 - fraction) * total)
    if fraction > 0:
        assert 1.0 / channel.poisson.peak_photons == pytest.approx(fraction * total)


def test_mixture_parts_are_both_present():
    zeros = torch.zeros(1, 1, 300, 300)  # no shot noise at 0: what remains is the Gaussian part alone
    received = PoissonGaussianChannel(10.0, poisson_fraction=0.25)(zeros, generator=seeded())
    assert received.var().item() == pytest.approx(0.75 * 0.1, rel=0.03)


def test_rayleigh_equalised_noise_is_awgn_divided_by_gain():
    channel = RayleighFadingChannel(10.0, block_size="plane", equalize=True)
    x = torch.zeros(400, 1, 50, 50)
    received = channel(x, generator=seeded())
    gains = channel.sample_gains((400, 1, 50, 50), seeded())[:, :, :1, :1]  # the same draws, in the same order
    normalised = received * gains.abs()  # n = |h| * (y - x) ~ N(0, sigma^2)
    assert normalised.var().item() == pytest.approx(channel.sigma ** 2, rel=0.02)


def test_rayleigh_without_equalisation_scales_by_gain_magnitude():
    channel = RayleighFadingChannel(None, block_size="plane", equalize=False)
    x = torch.ones(2000, 2, 4, 4)
    received = channel(x, generator=seeded())
    per_plane = received[:, :, 0, 0]
    assert torch.allclose(received, per_plane[:, :, None, None].expand_as(received), atol=1e-6)  # one gain/plane
    assert (per_plane >= 0).all()  # |h| >= 0
    assert (per_plane ** 2).mean().item() == pytest.approx(1.0, rel=0.05)  # E|h|^2 = 1
    # Rayleigh amplitude: P(|h| < r) = 1 - exp(-r^2).
    assert (per_plane < 0.5).float().mean().item() == pytest.approx(1 - math.exp(-0.25), abs=0.02)


@pytest.mark.parametrize("block_size, distinct", [("map", 1), ("plane", 3), (4, 3 * 4)])
def test_rayleigh_block_sizes(block_size, distinct):
    channel = RayleighFadingChannel(None, block_size=block_size, equalize=False)
    received = channel(torch.ones(1, 3, 4, 4), generator=seeded())
    assert len(torch.unique(received)) == distinct


def test_rayleigh_average_psnr_and_awgn_limit():
    # Averaged over blocks, the unequalised output has noise of variance sigma^2 around |h| x.
    channel = RayleighFadingChannel(15.0, block_size=1, equalize=False)
    x = torch.zeros(1, 1, 800, 800)
    assert abs(empirical_psnr(x, channel(x, generator=seeded())) - 15.0) < 0.1
    with pytest.raises(ValueError, match="block_size"):
        RayleighFadingChannel(10.0, block_size=0)


@pytest.mark.parametrize("make", ALL_CHANNELS)
def test_absent_channels_are_exact_zeros(make):
    x = one_hot_batch()
    transmitted = torch.tensor([[True, False, True, True, False], [False, True, True, True, False]])
    received = make()(x, transmitted, seeded())
    assert received.shape == x.shape
    assert torch.equal(received[~transmitted], torch.zeros_like(received[~transmitted]))
    assert (received[transmitted] != x[transmitted]).any()  # the transmitted part does get corrupted


@pytest.mark.parametrize("make", ALL_CHANNELS)
def test_same_seed_same_output(make):
    x = one_hot_batch()
    channel = make()
    first, second = channel(x, generator=seeded(3)), channel(x, generator=seeded(3))
    assert torch.equal(first, second)
    assert not torch.equal(first, channel(x, generator=seeded(4)))


@pytest.mark.parametrize("make", ALL_CHANNELS)
def test_bad_maps_rejected(make):
    channel = make()
    x = one_hot_batch()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        channel(x)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        channel(torch.zeros(5, 8, 8))
    with pytest.raises(ValueError, match=r"transmitted must have shape"):
        channel(one_hot_batch(), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        channel(torch.zeros(1, 2, 3, 3, dtype=torch.long))


def test_inf_and_bad_psnr_values():
    x = one_hot_batch()
    x[1, 2, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        AWGNChannel(10.0)(x)
    with pytest.raises(ValueError, match="psnr_db"):
        AWGNChannel(float("nan"))
    with pytest.raises(TypeError, match="psnr_db"):
        AWGNChannel("10")


def test_factory_and_descriptions():
    assert isinstance(build_channel("awgn", psnr_db=10), AWGNChannel)
    assert isinstance(build_channel("poisson", psnr_db=10), PoissonChannel)
    assert isinstance(build_channel("mixture", psnr_db=10, poisson_fraction=0.2), PoissonGaussianChannel)
    assert isinstance(build_channel("rayleigh", psnr_db=10, equalize=False), RayleighFadingChannel)
    assert isinstance(build_channel("digital", ebn0_db=5), DigitalLinkChannel)
    assert all(isinstance(build_channel(n, **k), SemanticChannel) for n, k in [("awgn", {"psnr_db": 1})])
    with pytest.raises(ValueError, match=r"unknown channel 'bsc'.*'awgn', 'digital', 'mixture', 'poisson', "
                                         r"'rayleigh'"):
        build_channel("bsc", psnr_db=10)
    description = AWGNChannel(10.0).describe()
    assert description == {"type": "AWGNChannel", "psnr_db": 10.0, "peak_power": 1.0, "psnr_convention": "paper",
                           "sigma": pytest.approx(10 ** -0.5)}
    assert "psnr_db=10.0" in repr(AWGNChannel(10.0))
    assert "equalize=False" in repr(RayleighFadingChannel(3.0, equalize=False))


# ----------------------------------------------------------------------------------------------------------------
# The noise level as a call argument (Sionna's convention): one module sweeps every PSNR


def test_psnr_at_call_time_matches_the_constructor_form_and_broadcasts_per_example():
    from gesco_diffusers.channel import AWGNChannel, PoissonChannel, RayleighFadingChannel

    x = torch.zeros(3, 4, 64, 64)
    channel = AWGNChannel(None)  # the constructor's level is not used when psnr_db is given
    swept = channel(x, generator=torch.Generator().manual_seed(0), psnr_db=[20.0, 10.0, 1.0])
    for i, psnr in enumerate((20.0, 10.0, 1.0)):
        assert float(swept[i].std()) == pytest.approx(10 ** (-psnr / 20), rel=0.02)
    fixed = AWGNChannel(10.0)(x, generator=torch.Generator().manual_seed(0))
    at_call = channel(x, generator=torch.Generator().manual_seed(0), psnr_db=10.0)
    torch.testing.assert_close(at_call, fixed, rtol=1e-6, atol=1e-7)
    table = AWGNChannel(None, psnr_convention="official_table")
    assert float(table(x, generator=torch.Generator().manual_seed(0), psnr_db=torch.tensor([10.0] * 3)).std()) \
        == pytest.approx(0.36, rel=0.02)  # the authors' table, not Eq. 15's 0.316
    with pytest.raises(ValueError, match="not in the official table"):
        table(x, psnr_db=12.0)
    with pytest.raises(ValueError, match=r"one value per example \(3\)"):
        channel(x, psnr_db=[10.0, 20.0])
    with pytest.raises(ValueError, match="finite number of dB"):
        channel(x, psnr_db=[10.0, float("nan"), 1.0])
    faded = RayleighFadingChannel(None)(torch.ones(2, 4, 32, 32), generator=torch.Generator().manual_seed(1),
                                        psnr_db=[30.0, 1.0])
    assert float((faded[1] - 1).std()) > 5 * float((faded[0] - 1).std())
    with pytest.raises(TypeError, match="PoissonChannel takes its noise level in the constructor only"):
        PoissonChannel(10.0)(torch.ones(1, 2, 4, 4), psnr_db=5.0)
