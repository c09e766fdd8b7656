"""Bits per pixel: the one definition used throughout the package.

For a coded semantic map or photo whose bitstream is ``B`` bytes long::

    BPP = 8 * B / (H * W)

where ``H x W`` is the spatial resolution of the picture the bitstream stands for: the label map (equivalently its
one-hot planes) or the RGB photo. Every byte the receiver needs is counted: headers and container included, side
information the receiver knows anyway excluded (the dataset preset fixes the number of classes ``C``; the codec and
the representation are system parameters). Tiling the ``C`` one-hot planes into one big picture does *not* change
the denominator: it is still the ``H x W`` of the map. For one-hot maps we also report::

    bits per one-hot element = 8 * B / (C * H * W)

i.e. the cost of each of the ``C * H * W`` binary entries the paper calls "originally encoded with 1 bit"
(Sec. IV-C), so a value below 1 is a compression gain over sending the raw one-hot map.
"""

from __future__ import annotations

__all__ = ["RateMixin", "bits_per_pixel"]


def bits_per_pixel(bitstream: bytes, image_hw: tuple[int, int]) -> float:
    """BPP of ``bitstream`` for a picture of spatial size ``image_hw = (H, W)``: ``8 * len(bitstream) / (H * W)``.

    ``(H, W)`` is the resolution of the label map or photo the bitstream stands for, never that of a tiled or
    padded intermediate picture (see the module docstring).
    """
    height, width = image_hw
    if height <= 0 or width <= 0:
        raise ValueError(f"image_hw must be positive, got {image_hw}")
    return 8.0 * len(bitstream) / (height * width)


class RateMixin:
    """``num_bits`` and ``bpp`` of a coded picture with fields ``bitstream`` and ``image_hw``."""

    bitstream: bytes
    image_hw: tuple[int, int]

    @property
    def num_bits(self) -> int:
        """``8 * len(bitstream)``: every byte sent."""
        return 8 * len(self.bitstream)

    @property
    def bpp(self) -> float:
        """Bits per pixel: ``num_bits / (H * W)`` with ``(H, W) = image_hw`` (see :mod:`.bpp`)."""
        return bits_per_pixel(self.bitstream, self.image_hw)
