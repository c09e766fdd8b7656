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
