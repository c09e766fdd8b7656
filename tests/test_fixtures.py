"""The test data shipped in ``tests/fixtures`` and the rule that no test reads a file outside the repository (a fresh
clone, with no data folder beside it, runs the whole suite)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixture_data import CAMVID, COCO_STUFF, FIXTURES, OFFICIAL_KEY_LIST, fixture_path

TESTS = Path(__file__).resolve().parent


def test_fixtures_are_small_and_complete():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 2**20, f"tests/fixtures holds {total} bytes: keep it under 1 MiB"
    for split, count in (("train", 6), ("val", 4)):
        labels = sorted(p.name for p in (CAMVID / split / "labels").glob("*.png"))
        assert len(labels) == count and labels == sorted(p.name for p in (CAMVID / split / "images").glob("*.png"))
        for name in labels:
            label = np.asarray(Image.open(CAMVID / split / "labels" / name))
            with Image.open(CAMVID / split / "images" / name) as photo:
                assert photo.mode == "RGB" and photo.size == (240, 180)
            assert label.shape == (180, 240) and int(label.max()) <= 11
    classes = json.loads((CAMVID / "classes.json").read_text())
    assert classes["ignore_index"] == 11 and [c["id"] for c in classes["classes"]] == list(range(12))
    for folder, count in (("first20", 20), ("spread12", 12)):
        assert len(list(fixture_path("camvid_val_labels", folder).glob("*.png"))) == count
    for split in ("train", "val"):
        names = sorted(p.name for p in (COCO_STUFF / split / "labels").glob("*.png"))
        assert len(names) == 1 and names == sorted(p.name for p in (COCO_STUFF / split / "instances").glob("*.png"))
    keys = [line for line in OFFICIAL_KEY_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(keys) == 868


def test_a_missing_fixture_fails_the_test_instead_of_skipping_it():
    with pytest.raises(pytest.fail.Exception, match="test fixture missing: .*no_such_fixture"):
        fixture_path("no_such_fixture")


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """The string literals of a module, docstrings excluded."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_no_test_reads_the_data_folder_beside_the_repository():
    """``../shared`` (the project's data folder) exists on the development machine only: a path into it, e.g.
    ``REPO.parent / "shared"``, made tests skip or fail in a clone. Tests use ``tests/fixtures`` instead."""
    offenders = []
    for path in sorted(set(TESTS.glob("*.py")) - {Path(__file__).resolve()}):
        for node in _string_constants(ast.parse(path.read_text(), str(path))):
            if node.value == "shared" or "../shared" in node.value or node.value.startswith("/work/"):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert offenders == []
