"""Receiver side of GESCO: the fast-denoising semantic block (Eq. 1)."""

from .fds import FastDenoisingSemantic, fast_denoise

__all__ = ["FastDenoisingSemantic", "fast_denoise"]
