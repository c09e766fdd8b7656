"""Adaptive FDS: a blind, parameter-free denoiser of received semantic maps that never hurts (issue #9).

The paper's FDS (Eq. 1, :mod:`.fds`) applies the same AvgPool3 -> MaxPool3 to every map: a win on a bad channel, a
loss on a good one (its 3x3 max pool dilates every class and erases thin objects). This module adapts the amount of
smoothing to the received map itself, without being told the channel. Per sample, on the transmitted class channels:

0. **Blind gain**: each class plane is divided by its "1" level, the plane's mean over its interior pixels (those
   whose 5x5 neighbourhood carries one label); it is 1 on AWGN, shot noise and equalised fading, and puts each plane
   back on the 0/1 scale under fading without equalisation. Hard-decision maps are left as they are.
1. **Blind noise level**: analog maps, from differences of adjacent interior pixels (a trimmed, Gaussian-consistent
   mean absolute deviation: the peak noise of Eq. 15); hard-decision maps (every value 0 or 1, e.g. the digital
   link), from the fraction of pixels whose transmitted channels do not hold exactly one 1, solved for the bit-flip
   rate ``p`` and used as the level with the same log-likelihood ratio, ``1 / (2 sigma^2) = log((1 - p) / p)``.
   Per channel ``sigma_c = max(plane MAD_c, sigma_hat, 1e-3)``.
2. **Calibrated evidence**: ``U_c = (y_c - 1/2) / sigma_c^2``, the log-likelihood ratio of class ``c`` against no
   class; absent classes get ``-inf``.
3. **Potts prior, mean field**: ``T = 15`` parallel updates ``Q <- softmax_c(U_c + beta sum_{4 neighbours} Q_c)``,
   ``beta = 2``. Where the evidence margin exceeds ``4 beta`` the decision is the plain argmax whatever the
   neighbours, so on a clean channel (``sigma <= 0.35``) the output is exactly the argmax of the received map.
4. **Re-projection**: a hard one-hot map over the transmitted classes (the kind of map the model is trained on); an
   instance-edge channel is denoised on its own with the labels {no edge, edge} and its own plane MAD as level.

The measurements behind each choice (sweeps of ``benchmarks/fds_sweep.py``, the full CamVid tables of
``gesco map-level``, accuracy of the noise estimates, cost) are in ``benchmarks/README.md``, "Adaptive FDS".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..sender.encoding import check_semantic_map

__all__ = [
    "AdaptiveFastDenoisingSemantic",
    "adaptive_fast_denoise",
    "estimate_channel_sigma",
    "estimate_noise_sigma",
    "potts_mean_field",
]

DEFAULT_BETA = 2.0
DEFAULT_ITERATIONS = 15
#: Lower bound of every noise level: keeps ``1 / sigma^2`` finite on a noiseless channel (evidence margin 1e6).
SIGMA_FLOOR = 1e-3
#: Side of the box average that labels pixels for the noise estimate (robust down to -3 dB on CamVid).
_LABEL_BOX = 5
#: Side of the neighbourhood that must carry one label for a pixel to count as interior.
_INTERIOR = 5
#: Differences beyond this many robust standard deviations are region borders, not noise.
_TRIM = 4.0
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # 1 / Phi^-1(3/4): MAD of a Gaussian -> its standard deviation
#: A plane's gain is measured on at least this many interior pixels (a 5x5 block), else taken as 1.
_MIN_GAIN_PIXELS = 25
#: ... or on at least this many pixels where the plane is the plain argmax (thin and small classes).
_MIN_THIN_PIXELS = 5
#: Smallest gain divided out: a plane faded below it is all noise, and its noise level then says so.
_MIN_GAIN = 0.05
#: Largest bit-flip rate used for the evidence (at 1/2 a hard-decision map carries no information at all).
_MAX_FLIP = 0.45


def _check_num_classes(num_classes: Optional[int]) -> Optional[int]:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    return num_classes


def _split(received: torch.Tensor, transmitted: Optional[torch.Tensor], num_classes: Optional[int]):
    """Validate; return ``(mask (B, C), K = number of class channels, whether an edge channel follows)``."""
    mask = check_semantic_map(received, transmitted)
    channels = received.shape[1]
    num_classes = channels if _check_num_classes(num_classes) is None else num_classes
    if channels not in (num_classes, num_classes + 1):
        raise ValueError(
            f"the map has {channels} channels; with num_classes={num_classes} it must have {num_classes} (classes "
            f"only) or {num_classes + 1} (classes + instance-edge channel last)"
        )
    if received.shape[-1] < 2:
        raise ValueError(f"the noise estimate needs maps at least 2 pixels wide, got shape {tuple(received.shape)}")
    return mask, num_classes, channels == num_classes + 1


def _horizontal_differences(x: torch.Tensor) -> torch.Tensor:
    """``(x[..., j] - x[..., j + 1]) / sqrt(2)``: a unit-gain high-pass, equal to the noise where ``x`` is flat."""
    return (x[..., :-1] - x[..., 1:]) * (1.0 / math.sqrt(2.0))


def _mad_sigma(d: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gaussian-consistent MAD of ``d`` over ``keep`` (all if ``None``) along the last dim; 0 where nothing is kept."""
    if keep is None:
        return d.abs().median(dim=-1).values * _MAD_TO_SIGMA
    sigma = torch.nanmedian(torch.where(keep, d.abs(), torch.nan), dim=-1).values * _MAD_TO_SIGMA
    return sigma.nan_to_num(0.0)


def _box(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the ``size x size`` window, counting only pixels inside the map."""
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=False)


@dataclass
class _PackedClasses:
    """The transmitted class planes of each sample, packed densely in channel order (absent classes cost nothing).

    ``planes[b, t] = y[b, index[b, t]]``; slots ``t >= `` the sample's class count are padding (``valid`` False;
    their ``index`` points at absent channels, all distinct).
    """

    planes: torch.Tensor  # (B, T, H, W) float32
    index: torch.Tensor  # (B, T) int64
    valid: torch.Tensor  # (B, T) bool

    @classmethod
    def pack(cls, classes: torch.Tensor, mask: torch.Tensor) -> "_PackedClasses":
        counts = mask.sum(1)
        slots = max(int(counts.max()), 1)
        # A stable sort of "absent" flags lists the transmitted channels first, in increasing channel order, so
        # argmax ties still go to the lowest channel id.
        index = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :slots]
        valid = torch.arange(slots, device=mask.device) < counts[:, None]
        planes = classes.gather(1, index[:, :, None, None].expand(-1, -1, *classes.shape[-2:]))
        return cls(planes, index, valid)

    def masked(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` on real slots, ``-inf`` on padding (it cannot win an argmax)."""
        return scores.masked_fill(~self.valid[:, :, None, None], -torch.inf)


def estimate_noise_sigma(
    received: torch.Tensor, transmitted: Optional[torch.Tensor] = None, num_classes: Optional[int] = None
) -> torch.Tensor:
    """Blind estimate of the peak noise standard deviation of each received map (step 1 of the module doc).

    Args:
        received: ``(B, C, H, W)`` received map (``W >= 2``).
        transmitted: ``(B, C)`` bool side information (``None``: all channels).
        num_classes: number of class channels; ``C`` may exceed it by one (instance-edge channel, not used here).
            ``None``: every channel is a class channel.

    Returns:
        ``(B,)`` float32 estimates of ``sigma`` of Eq. 15 (after the gain of step 0), 0 for a noiseless map.
        Valid from 100 dB down to 1 dB (CamVid, per map): within 3 % for AWGN and the Poisson + Gaussian mixture,
        within 10 % for shot noise (biased low by 7 % at 1 dB, 1.26 photons), for regions wider than the 5x5
        labelling window (1-pixel structures bias it up by about their share of the pixels); below 1 dB it drifts
        low (-17 % at -3 dB). For a hard-decision (0/1) map: the
        Gaussian level with the log-likelihood ratio of its estimated bit-flip rate ``p``,
        ``sigma = (2 log((1 - p) / p))^(-1/2)``.
    """
    mask, k, _ = _split(received, transmitted, num_classes)
    return _normalise_and_estimate(_PackedClasses.pack(received[:, :k].float(), mask[:, :k]))[1]


def _interior_labels(packed: _PackedClasses) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot of each pixel by the argmax of a 5x5 box average, and whether its whole 5x5 neighbourhood agrees
    (``(B, 1, H, W)`` each). Interior pixels are in a region; so is their right neighbour, and the margin keeps pairs
    that straddle a true border out even where the labelled border is off by a pixel."""
    labels = packed.masked(_box(packed.planes, _LABEL_BOX)).max(1, keepdim=True).indices
    as_float = labels.float()
    interior = (F.max_pool2d(as_float, _INTERIOR, 1, _INTERIOR // 2) == as_float) & (
        F.max_pool2d(-as_float, _INTERIOR, 1, _INTERIOR // 2) == -as_float
    )
    return labels, interior


def _plane_gains(packed: _PackedClasses, labels: torch.Tensor, interior: torch.Tensor) -> torch.Tensor:
    """Step 0: the level of the "1" elements of each packed plane, ``(B, T)``, floored at ``_MIN_GAIN``: the mean of
    the plane over the interior pixels labelled with it when there are ``_MIN_GAIN_PIXELS`` of them; else (thin or
    small classes) over the pixels where it is the plain argmax, when there are ``_MIN_THIN_PIXELS``; else 1."""

    def mean_over(own: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of each slot's plane over the ``where`` pixels labelled with it, and their count (scatter-add)."""
        weight = where.flatten(1).to(packed.planes.dtype)
        value = packed.planes.gather(1, own).flatten(1) * weight
        index = own.flatten(1)
        total = torch.zeros(packed.valid.shape, dtype=value.dtype, device=value.device).scatter_add_(1, index, value)
        count = torch.zeros_like(total).scatter_add_(1, index, weight)
        return total / count.clamp_min(1), count

    region, region_count = mean_over(labels, interior)
    plain = packed.masked(packed.planes).max(1, keepdim=True).indices
    thin, thin_count = mean_over(plain, torch.ones_like(interior))
    # Selecting pixels by a plain argmax favours positive noise, so this mean is biased up (strongly at high
    # noise): it may only lower the default gain of 1.
    gains = torch.where(thin_count >= _MIN_THIN_PIXELS, thin.clamp_max(1.0), torch.ones_like(thin))
    return torch.where(region_count >= _MIN_GAIN_PIXELS, region, gains).clamp_min(_MIN_GAIN)


def _gaussian_peak_sigma(packed: _PackedClasses, labels: torch.Tensor, interior: torch.Tensor) -> torch.Tensor:
    """Step 1a: trimmed mean absolute horizontal difference inside regions, on each pixel's own channel, ``(B,)``."""
    batch = packed.planes.shape[0]
    d = _horizontal_differences(packed.planes.gather(1, labels)).reshape(batch, -1)
    keep = interior[..., :-1].reshape(batch, -1) & packed.valid.any(1, keepdim=True)
    mad = _mad_sigma(d, keep)
    trimmed = keep & (d.abs() <= _TRIM * mad[:, None])
    mean_abs = (d.abs() * trimmed).sum(1) / trimmed.sum(1).clamp_min(1)
    return mean_abs * math.sqrt(math.pi / 2.0)


def _flip_probability(packed: _PackedClasses) -> torch.Tensor:
    """Step 1b: bit-flip rate ``p`` of a hard-decision (0/1) map, ``(B,)`` float64.

    Each pixel carries exactly one 1 among its ``T`` transmitted class channels. With independent flips of
    probability ``p`` the pixel shows a count other than one with probability
    ``f(p) = 1 - (1 - p)^T - (T - 1) p^2 (1 - p)^(T - 2)`` (no flip, or the 1 lost and exactly one 0 raised),
    increasing on ``[0, 1/2]``; ``p`` solves ``f(p) = r``, the observed fraction, by bisection. Thin structures do not
    bias it, and a noiseless map gives exactly ``p = 0``.
    """
    ones = (packed.planes * packed.valid[:, :, None, None]).sum(1)
    r = (ones != 1).double().flatten(1).mean(1)
    t = packed.valid.sum(1).clamp_min(1).double()

    def f(p: torch.Tensor) -> torch.Tensor:
        return 1 - (1 - p) ** t - (t - 1) * p**2 * (1 - p) ** (t - 2).clamp_min(0)

    low, high = torch.zeros_like(r), torch.full_like(r, 0.5)
    for _ in range(50):  # 2^-50: exact to double precision
        middle = (low + high) / 2
        above = f(middle) > r
        high, low = torch.where(above, middle, high), torch.where(above, low, middle)
    return torch.where(r > 0, high, torch.zeros_like(r))


def _normalise_and_estimate(packed: _PackedClasses) -> tuple[_PackedClasses, torch.Tensor, torch.Tensor]:
    """Steps 0-1: ``(the planes divided by their gains, peak level (B,) float32, hard-decision flag (B,) bool)``;
    ``packed`` itself is left as it is."""
    binary = (((packed.planes == 0) | (packed.planes == 1)) | ~packed.valid[:, :, None, None]).flatten(1).all(1)
    labels, interior = _interior_labels(packed)
    # A hard-decision map is already on the 0/1 scale (and a rescaled one would no longer be 0/1).
    gains = torch.where(binary[:, None], 1.0, _plane_gains(packed, labels, interior))
    packed = replace(packed, planes=packed.planes / gains[:, :, None, None])
    # Gaussian level with the same per-channel log-likelihood ratio as a flip rate p: 1 / (2 s^2) = log((1 - p) / p).
    p = _flip_probability(packed).clamp_max(_MAX_FLIP)
    flip_sigma = torch.where(p > 0, (0.5 / torch.log((1 - p) / p.clamp_min(1e-300))).sqrt(), torch.zeros_like(p))
    peak = torch.where(binary, flip_sigma.float(), _gaussian_peak_sigma(packed, labels, interior))
    return packed, peak, binary


def _plane_sigma(planes: torch.Tensor) -> torch.Tensor:
    """Gaussian-consistent MAD of the horizontal differences of each ``(H, W)`` plane: ``(B, C, H, W) -> (B, C)``."""
    return _mad_sigma(_horizontal_differences(planes).flatten(2))


def _class_sigma(packed: _PackedClasses, peak: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """Noise levels of the packed class planes, ``(B, T)``: ``max(plane MAD_c, peak, SIGMA_FLOOR)``; the peak alone
    for a hard-decision map (every bit crossed the same link).

    The peak level is the floor because a sparse class plane is mostly zeros, and zeros are noiseless under shot
    noise: the plane MAD alone would call a Poisson channel clean.
    """
    gaussian = torch.maximum(_plane_sigma(packed.planes), peak[:, None])
    return torch.where(binary[:, None], peak[:, None], gaussian).clamp_min(SIGMA_FLOOR)


def _edge_sigma(edge: torch.Tensor, peak: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """The edge channel's own plane level (step 4 of the module doc), the flip level for a hard-decision map."""
    return torch.where(binary[:, None], peak[:, None], _plane_sigma(edge)).clamp_min(SIGMA_FLOOR)


def estimate_channel_sigma(
    received: torch.Tensor, transmitted: Optional[torch.Tensor] = None, num_classes: Optional[int] = None
) -> torch.Tensor:
    """Noise level of every channel (step 1), ``(B, C)`` float32: ``max(plane MAD_c, peak level, SIGMA_FLOOR)``
    for the transmitted class channels, ``max(plane MAD, SIGMA_FLOOR)`` for an edge channel, ``SIGMA_FLOOR`` for
    absent classes (exact zeros, never used); the flip level (floored) for every channel of a hard-decision map.
    On fading channels the peak level is a blend over the planes.
    """
    mask, k, has_edge = _split(received, transmitted, num_classes)
    y = received.float()
    packed, peak, binary = _normalise_and_estimate(_PackedClasses.pack(y[:, :k], mask[:, :k]))
    sigma = torch.full(mask.shape, SIGMA_FLOOR, device=y.device)
    sigma[:, :k].scatter_(1, packed.index, torch.where(packed.valid, _class_sigma(packed, peak, binary), SIGMA_FLOOR))
    if has_edge:
        sigma[:, k:] = _edge_sigma(y[:, k:], peak, binary)
    return sigma


def _neighbour_sum(q: torch.Tensor, neighbours: int, total: torch.Tensor) -> torch.Tensor:
    """Sum over the 4 (up, down, left, right) or 8 (3x3 ring) neighbours of every pixel, written into ``total``
    (same shape as ``q``); outside the map is 0."""
    if neighbours == 8:
        return torch.sub(F.avg_pool2d(q, 3, stride=1, padding=1, count_include_pad=True) * 9.0, q, out=total)
    total.zero_()  # shifted in-place adds: 3x faster than padding and slicing
    total[..., 1:, :] += q[..., :-1, :]
    total[..., :-1, :] += q[..., 1:, :]
    total[..., 1:] += q[..., :-1]
    total[..., :-1] += q[..., 1:]
    return total


def _check_potts(beta: float, iterations: int, neighbours: int = 4) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours!r}")


def potts_mean_field(
    evidence: torch.Tensor, beta: float = DEFAULT_BETA, iterations: int = DEFAULT_ITERATIONS, neighbours: int = 4
) -> torch.Tensor:
    """Labels of the mean-field posterior of a Potts model (step 3): ``(B, L, H, W)`` evidence -> ``(B, H, W)`` ids.

    ``evidence`` holds per-pixel log-likelihoods of the ``L`` labels (``-inf`` for impossible ones; every pixel
    needs one finite label). Update: ``Q <- softmax(evidence + beta * sum_{neighbours} Q)``, ``iterations`` times
    from ``softmax(evidence)``, then the argmax of ``Q``. The prior term of a label lies in
    ``[0, neighbours * beta]``, so a pixel whose evidence margin (best minus second best) exceeds
    ``neighbours * beta`` keeps its evidence argmax; samples where every pixel does skip the updates (same
    result, no cost).
    """
    _check_potts(beta, iterations, neighbours)
    # ``max(1).indices`` is the argmax (first maximum on ties) at a fifth of the cost of ``argmax(1)`` on NCHW.
    best = evidence.max(1)
    labels = best.indices
    if evidence.shape[1] < 2 or beta == 0 or iterations == 0:
        return labels
    second = evidence.scatter(1, labels[:, None], -torch.inf).amax(1)
    # A pixel with a single finite label has margin +inf: decided.
    undecided = ((best.values - second) <= neighbours * beta).flatten(1).any(1).nonzero().flatten()
    if undecided.numel():
        sub = evidence[undecided]
        q, total = sub.softmax(1), torch.empty_like(sub)
        for _ in range(iterations):
            q = torch.add(sub, _neighbour_sum(q, neighbours, total), alpha=beta).softmax(1)
        labels[undecided] = q.max(1).indices
    return labels


def adaptive_fast_denoise(
    received: torch.Tensor,
    transmitted: Optional[torch.Tensor] = None,
    num_classes: Optional[int] = None,
    beta: float = DEFAULT_BETA,
    iterations: int = DEFAULT_ITERATIONS,
    neighbours: int = 4,
) -> torch.Tensor:
    """Adaptive FDS (module doc): ``(B, C, H, W)`` received map -> hard 0/1 map of the same shape and dtype.

    Args:
        received: the received map (finite floats, ``W >= 2``).
        transmitted: ``(B, C)`` bool side information (``None``: all channels were sent).
        num_classes: number of class channels; one more channel is the instance-edge channel (last). ``None``:
            all channels are classes.
        beta, iterations, neighbours: Potts strength, mean-field updates and neighbourhood (4 or 8); the defaults
            (2, 15, 4) are the measured design.

    Returns:
        Per pixel exactly one transmitted class channel is 1 (none if a sample transmits no class); the edge
        channel is 0/1; channels that were not transmitted are exact zeros.
    """
    mask, k, has_edge = _split(received, transmitted, num_classes)
    _check_potts(beta, iterations, neighbours)
    y = received.float()
    packed, peak, binary = _normalise_and_estimate(_PackedClasses.pack(y[:, :k], mask[:, :k]))
    evidence = (packed.planes - 0.5) / _class_sigma(packed, peak, binary)[:, :, None, None].square()
    # A sample without any transmitted class has nothing to decide: its (padding) slot 0 stands in, and the final
    # mask zeroes it (its index is an absent channel).
    valid = packed.valid.clone()
    valid[:, 0] = True
    slots = potts_mean_field(replace(packed, valid=valid).masked(evidence), beta, iterations, neighbours)
    ids = packed.index.gather(1, slots.flatten(1)).view_as(slots)
    out = torch.zeros_like(received).scatter_(1, ids[:, None], 1.0)
    if has_edge:
        # Two labels per pixel, {no edge: 0, edge: U_e}: the same Potts rule on the edge channel alone.
        edge = (y[:, k:] - 0.5) / _edge_sigma(y[:, k:], peak, binary)[:, :, None, None].square()
        out[:, k] = potts_mean_field(torch.cat([torch.zeros_like(edge), edge], 1), beta, iterations, neighbours)
    return out * mask[:, :, None, None]


class AdaptiveFastDenoisingSemantic(nn.Module):
    """Module form of :func:`adaptive_fast_denoise`: no parameter, no buffer, deterministic.

    Args:
        num_classes: class channels of the maps it will see (``None``: all channels are classes, no edge channel).
            With ``num_classes`` set, maps of ``num_classes`` or ``num_classes + 1`` (edge last) channels are
            accepted.
        beta, iterations, neighbours: Potts strength, number of mean-field updates, 4 or 8 neighbours.
    """

    def __init__(
        self,
        num_classes: Optional[int] = None,
        beta: float = DEFAULT_BETA,
        iterations: int = DEFAULT_ITERATIONS,
        neighbours: int = 4,
    ) -> None:
        super().__init__()
        _check_potts(beta, iterations, neighbours)
        self.num_classes = _check_num_classes(num_classes)
        self.beta = float(beta)
        self.iterations = iterations
        self.neighbours = neighbours

    def forward(self, received: torch.Tensor, transmitted: Optional[torch.Tensor] = None) -> torch.Tensor:
        return adaptive_fast_denoise(
            received, transmitted, self.num_classes, self.beta, self.iterations, self.neighbours
        )

    def estimate_noise(self, received: torch.Tensor, transmitted: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The ``(B,)`` blind peak-noise estimate this module adapts to (see :func:`estimate_noise_sigma`)."""
        return estimate_noise_sigma(received, transmitted, self.num_classes)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, beta={self.beta:g}, iterations={self.iterations}, "
            f"neighbours={self.neighbours}"
        )
