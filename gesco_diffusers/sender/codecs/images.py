"""Lossy coding of photos: the "full image" baseline of Fig. 7, at a quality or within a rate budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from .backends import Codec, available_codecs, check_picture, check_quality, get_codec
from .bpp import RateMixin, bits_per_pixel

__all__ = ["CodedImage", "encode_image"]


@dataclass(frozen=True)
class CodedImage(RateMixin):
    """A lossy-coded RGB photo.

    Attributes:
        bitstream: the bytes sent.
        codec: registry name of the codec.
        quality: the quality used (0..100).
        image_hw: ``(H, W)`` of the photo.
        decoded: what the receiver reconstructs, uint8 ``(H, W, 3)``.
    """

    bitstream: bytes = field(repr=False)
    codec: str
    quality: int
    image_hw: tuple[int, int]
    decoded: np.ndarray = field(repr=False)


def encode_image(
    rgb: Any,
    codec: Union[str, Codec] = "hevc",
    quality: Optional[int] = None,
    target_bpp: Optional[float] = None,
) -> CodedImage:
    """Code an RGB photo with a lossy codec, at a ``quality`` or at the best quality within a ``target_bpp``.

    With ``target_bpp``, the quality is found by bisection over the integers 0..100: the highest quality whose
    BPP does not exceed the target (the rate grows with the quality; the search assumes it does so monotonically,
    as x265/aom/libwebp rate control does in practice). The result's BPP is therefore ``<= target_bpp`` and as close
    as the integer quality grid allows.

    Args:
        rgb: uint8 ``(H, W, 3)`` array or tensor.
        codec: a lossy codec name (``"hevc"``, ``"webp"``, ``"avif"``, ``"bpg-lossy"``) or :class:`Codec`.
        quality: 0..100; ``None`` (and no ``target_bpp``) = the codec's default.
        target_bpp: rate budget in bits per pixel; exclusive with ``quality``.

    Raises:
        ValueError: bad array, lossless codec, both ``quality`` and ``target_bpp``, or a target below the rate of
            quality 0 on this photo.
    """
    codec = get_codec(codec)
    if codec.lossless:
        lossy = available_codecs(lossless=False, include_unavailable=True)
        raise ValueError(f"encode_image needs a lossy codec, {codec.name!r} is lossless; choose one of {lossy}")
    rgb = check_picture(rgb, allow_color=True, name="rgb")
    if rgb.ndim != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {tuple(rgb.shape)}")
    if quality is not None and target_bpp is not None:
        raise ValueError("give either quality or target_bpp, not both")
    image_hw = (rgb.shape[0], rgb.shape[1])

    if target_bpp is None:
        chosen = check_quality(codec.default_quality if quality is None else quality)
        bitstream = codec.encode(rgb, chosen)
    else:
        target_bpp = float(target_bpp)
        if not math.isfinite(target_bpp) or target_bpp <= 0:
            raise ValueError(f"target_bpp must be a positive finite number, got {target_bpp}")
        cache: dict[int, bytes] = {}

        def rate(q: int) -> float:
            if q not in cache:
                cache[q] = codec.encode(rgb, q)
            return bits_per_pixel(cache[q], image_hw)

        if rate(0) > target_bpp:
            raise ValueError(
                f"target_bpp={target_bpp:g} is below the lowest rate {codec.name!r} reaches on this image "
                f"({rate(0):.4f} bpp at quality 0)"
            )
        low, high = 0, 100  # invariant: rate(low) <= target < rate(high), unless quality 100 fits
        if rate(high) <= target_bpp:
            low = high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if rate(mid) <= target_bpp else (low, mid)
        chosen, bitstream = low, cache[low]

    decoded = codec.decode(bitstream)
    if decoded.ndim == 2:  # a gray photo decoded by a format that returns gray pictures
        decoded = np.repeat(decoded[..., None], 3, axis=-1)
    return CodedImage(bitstream=bitstream, codec=codec.name, quality=chosen, image_hw=image_hw, decoded=decoded)
