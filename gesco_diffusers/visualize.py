"""Colourised label maps and side-by-side panels for people to look at."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> PIL.Image.Image:
    """``(H, W)`` class ids -> RGB image with the dataset palette (ids beyond the palette are drawn white)."""
    table = np.full((max(int(labels.max()) + 1, len(palette)), 3), 255, dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return PIL.Image.fromarray(table[np.asarray(labels, dtype=np.int64)])


def labels_from_colors(
    rgb: np.ndarray, palette: Sequence[Sequence[int]], what: str = "colour map", max_listed: int = 5,
    palette_name: str = "the palette",
) -> np.ndarray:
    """The inverse of :func:`colorize`: an ``(H, W, 3)`` uint8 map coloured with ``palette`` -> ``(H, W)`` int64
    class ids. A colour shared by several ids (Cityscapes draws ids 0-3 black) maps to the first of them. A colour
    that is not in the palette is a ``ValueError`` naming the first ``max_listed`` unknown colours (most frequent
    first) and how many pixels carry them."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{what}: expected an (H, W, 3) RGB array, got shape {tuple(rgb.shape)}")
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    table = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    unique, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    first_id = {}
    for i, key in enumerate(table.tolist()):
        first_id.setdefault(key, i)
    ids = np.array([first_id.get(key, -1) for key in unique.tolist()], dtype=np.int64)
    unknown = np.flatnonzero(ids < 0)
    if unknown.size:
        order = unknown[np.argsort(-counts[unknown], kind="stable")][:max_listed]
        listed = ", ".join(f"({k >> 16}, {(k >> 8) & 255}, {k & 255}) ({counts[j]} pixels)"
                           for j, k in zip(order, unique[order].tolist()))
        more = f" and {unknown.size - len(order)} more" if unknown.size > len(order) else ""
        raise ValueError(f"{what}: {unknown.size} colour(s) not in {palette_name}: {listed}{more}")
    return ids[inverse].reshape(rgb.shape[:2])


def make_panel(
    tiles: Sequence[tuple[str, PIL.Image.Image]], size: Optional[tuple[int, int]] = None, caption_height: int = 14
) -> PIL.Image.Image:
    """Tiles side by side, each resized to ``size`` = (width, height) (nearest, so maps keep hard borders), with a
    caption above each."""
    width, height = size or tiles[0][1].size
    panel = PIL.Image.new("RGB", (width * len(tiles), height + caption_height), "white")
    draw = PIL.ImageDraw.Draw(panel)
    for i, (caption, tile) in enumerate(tiles):
        panel.paste(tile.convert("RGB").resize((width, height), PIL.Image.NEAREST), (i * width, caption_height))
        draw.text((i * width + 2, 1), caption, fill="black")
    return panel
