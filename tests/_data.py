"""Small data sets made by the tests themselves (no ../shared)."""

from pathlib import Path

import numpy as np
import PIL.Image


def write_camvid_like(root: Path, n: int = 6, size=(16, 24)) -> Path:
    """A dataset in the CamVid layout: ``{split}/images/*.png`` + ``{split}/labels/*.png`` (ids 0..10, two regions)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            labels = np.zeros(size, np.uint8)
            labels[: size[0] // 2] = rng.integers(0, 11)
            labels[size[0] // 2:] = rng.integers(0, 11)
            PIL.Image.fromarray(labels).save(root / split / "labels" / f"f{i:03d}.png")
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            PIL.Image.fromarray(image).save(root / split / "images" / f"f{i:03d}.png")
    return root
