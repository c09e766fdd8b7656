"""The chain's map readers: label maps read as they are, photos passed as maps and tiny maps named in a warning."""

from __future__ import annotations

import warnings

import numpy as np
import PIL.Image
import pytest

from fixture_data import CAMVID, COCO_STUFF
from gesco_diffusers.chain import looks_like_a_photo, ramp_share, read_label_map, resize_labels
from gesco_diffusers.presets import get_dataset_preset

PRESET = get_dataset_preset("camvid")
LABELS = sorted(CAMVID.glob("*/labels/*.png"))
PHOTOS = sorted(CAMVID.glob("*/images/*.png"))


def _grey_levels(path, levels: int) -> np.ndarray:
    """A photo read as ids: its grey values quantised to ``levels`` ids (what a photo with few colours looks like)."""
    grey = np.asarray(PIL.Image.open(path).convert("L")).astype(np.int64)
    return grey * levels // 256


def test_label_maps_read_without_a_warning_at_any_size():
    assert len(LABELS) == 10
    for path in LABELS + sorted(COCO_STUFF.glob("*/labels/*.png")):
        labels = np.asarray(PIL.Image.open(path)).astype(np.int64)
        small = np.asarray(PIL.Image.open(path).resize((80, 64), PIL.Image.NEAREST)).astype(np.int64)
        assert not looks_like_a_photo(labels) and not looks_like_a_photo(small), (path, ramp_share(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_label_map(LABELS[0], PRESET)


@pytest.mark.parametrize("levels", [12, 6, 4])
def test_photos_read_as_ids_are_named_in_a_warning(tmp_path, levels):
    for path in PHOTOS:
        assert looks_like_a_photo(_grey_levels(path, levels)), (path, ramp_share(_grey_levels(path, levels)))
    fake = tmp_path / "photo_as_map.png"
    PIL.Image.fromarray(_grey_levels(PHOTOS[0], levels).astype(np.uint8), mode="L").save(fake)
    with pytest.warns(UserWarning, match=r"photo_as_map.png looks like a photo, not a label map: \d+%"):
        read_label_map(fake, PRESET)


def test_tiny_maps_upscaled_by_more_than_4x_are_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"the 1x1 label map is upscaled 80x to the generation size 64x80"):
        assert resize_labels(np.array([[3]]), (64, 80)).tolist() == np.full((64, 80), 3).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resize_labels(np.zeros((16, 20), dtype=np.int64), (64, 80))  # 4x: quiet
    with pytest.raises(ValueError, match="non-empty"):
        resize_labels(np.zeros((0, 5), dtype=np.int64), (64, 80))


def test_the_cli_prints_warnings_in_one_line():
    from gesco_diffusers.cli import _one_line_warnings

    with _one_line_warnings("transmit"):
        line = warnings.formatwarning("the 1x1 label map is upscaled", UserWarning, "chain.py", 120)
    assert line == "gesco transmit: warning: the 1x1 label map is upscaled\n"
    assert warnings.formatwarning("x", UserWarning, "chain.py", 1) != line  # restored afterwards
