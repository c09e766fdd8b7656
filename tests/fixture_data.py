"""The test data shipped in ``tests/fixtures`` (see its README): no test reads a file outside the repository.

A missing fixture fails the test that asks for it (at collection for module-level paths); it is never skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_path(*parts: str) -> Path:
    """``tests/fixtures/<parts>``, which must exist."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test fixture missing: {path} (tests/fixtures ships with the repository)", pytrace=False)
    return path


#: The dataset root of the fixtures (``camvid/``, ``coco_stuff_samples/``), as the map-level experiment lays it out.
DATA_ROOT = fixture_path()
#: 6 train + 4 val CamVid pairs in the dataset's ``{split}/{images,labels}`` layout, with ``classes.json``.
CAMVID = fixture_path("camvid")
COCO_STUFF = fixture_path("coco_stuff_samples")
OFFICIAL_KEY_LIST = fixture_path("reference", "official_gesco_state_dict_keys_cityscapes.txt")
