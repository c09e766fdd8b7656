"""The fast-denoising semantic (FDS) block of the receiver (paper Eq. 1).

    y = Pad(MaxPool(AvgPool(y_hat)))

The average pooling removes isolated noise spikes; the max pooling then keeps the large regions of 1s of each
class channel (the maps are 0/1); the Pad puts back the channels of the classes that were not transmitted, as exact
zeros. As in the authors' code (reference doc 1.4, step 6): ``AvgPool2d(k, stride=1, padding=k // 2)`` with the
default ``count_include_pad=True`` (border pixels are averaged with zero padding), then
``MaxPool2d(k, stride=1, padding=k // 2)`` (-inf padding), applied to every transmitted channel, the instance-edge
channel included; no clipping or renormalisation afterwards, and the pooling is applied even to a clean map.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..sender.encoding import check_semantic_map, pad_absent_channels

__all__ = ["FastDenoisingSemantic", "fast_denoise"]


def _check_kernel(size: int, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd int (so the map keeps its size), got {size!r}")
    return size


def fast_denoise(
    received: torch.Tensor,
    transmitted: Optional[torch.Tensor] = None,
    avg_kernel_size: int = 3,
    max_kernel_size: int = 3,
) -> torch.Tensor:
    """Functional FDS (Eq. 1) on a ``(B, C, H, W)`` received map; ``transmitted`` is the ``(B, C)`` bool side
    information (``None``: all channels). Returns a map of the same shape with absent channels exactly zero."""
    _check_kernel(avg_kernel_size, "avg_kernel_size")
    _check_kernel(max_kernel_size, "max_kernel_size")
    mask = check_semantic_map(received, transmitted)
    # Pooling acts on each channel independently, so pooling all channels and then zeroing the absent ones gives
    # exactly the official "keep the preserved channels, pool, pad" result, without gather/scatter.
    smoothed = F.avg_pool2d(received, avg_kernel_size, stride=1, padding=avg_kernel_size // 2, count_include_pad=True)
    dilated = F.max_pool2d(smoothed, max_kernel_size, stride=1, padding=max_kernel_size // 2)
    return pad_absent_channels(dilated, mask)


class FastDenoisingSemantic(nn.Module):
    """Module form of :func:`fast_denoise`. Parameter-free: nothing to train, nothing to store (Table IX).

    Args:
        avg_kernel_size: odd side of the average-pooling window (3 in the paper).
        max_kernel_size: odd side of the max-pooling window (3 in the paper).
    """

    def __init__(self, avg_kernel_size: int = 3, max_kernel_size: int = 3) -> None:
        super().__init__()
        self.avg_kernel_size = _check_kernel(avg_kernel_size, "avg_kernel_size")
        self.max_kernel_size = _check_kernel(max_kernel_size, "max_kernel_size")

    def forward(self, received: torch.Tensor, transmitted: Optional[torch.Tensor] = None) -> torch.Tensor:
        return fast_denoise(received, transmitted, self.avg_kernel_size, self.max_kernel_size)

    def extra_repr(self) -> str:
        return f"avg_kernel_size={self.avg_kernel_size}, max_kernel_size={self.max_kernel_size}"
