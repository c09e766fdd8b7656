"""The bits per pixel of the codecs on label-map and photo files, as a Markdown table (paper Fig. 7 / Fig. 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..data import load_label_array, open_image
from ..sender.codecs import available_codecs, decode_semantic_map, encode_image, encode_semantic_map, get_codec
from ..sender.codecs.maps import Representation

__all__ = ["codec_bpp_table"]


def _read_label_map(path: Union[str, Path], remap: Optional[Mapping[int, int]]) -> np.ndarray:
    with open_image(path, "label map") as image:
        labels = load_label_array(image, str(path))
    if remap:
        remapped = labels.copy()
        for source, target in remap.items():  # all substitutions read the original ids
            remapped[labels == source] = target
        labels = remapped
    return labels


def _read_photo(path: Union[str, Path]) -> np.ndarray:
    with open_image(path, "photo") as image:
        return np.asarray(image.convert("RGB"))


def codec_bpp_table(
    label_paths: Iterable[Union[str, Path]],
    image_paths: Iterable[Union[str, Path]] = (),
    *,
    num_classes: int,
    map_codecs: Optional[Sequence[str]] = None,
    representations: Sequence[Representation] = ("one_hot", "label"),
    image_codecs: Sequence[str] = ("hevc",),
    qualities: Sequence[int] = (0, 10, 30, 50),
    label_remap: Optional[Mapping[int, int]] = None,
    verify: bool = True,
) -> str:
    """Markdown table of the mean BPP of coding label maps (each lossless codec x representation) and photos
    (each lossy codec x quality), BPP as defined in :mod:`gesco_diffusers.sender.codecs.bpp`.

    Args:
        label_paths: label-map PNGs (ids ``0..num_classes-1`` after ``label_remap``).
        image_paths: photos for the full-image baseline (may be empty).
        num_classes: ``C``.
        map_codecs: lossless codec names; default: every lossless codec available here.
        representations: map representations to measure.
        image_codecs: lossy codec names for the photos.
        qualities: qualities at which photos are coded.
        label_remap: id substitutions applied on loading, e.g. ``{255: 182}`` for COCO-Stuff.
        verify: decode every coded map and raise if it is not bit-exact.
    """
    label_paths, image_paths = list(label_paths), list(image_paths)
    if not label_paths and not image_paths:
        raise ValueError("nothing to measure: label_paths and image_paths are both empty")
    map_codecs = list(available_codecs(lossless=True) if map_codecs is None else map_codecs)
    for name in map_codecs:
        if not get_codec(name).lossless:
            raise ValueError(f"map codec {name!r} is lossy; the table measures lossless map coding")

    maps = [_read_label_map(p, label_remap) for p in label_paths]
    rows = ["| signal | codec | representation / quality | mean BPP | mean bits per one-hot element | n |",
            "|---|---|---|---|---|---|"]
    for name in map_codecs if maps else []:
        codec = get_codec(name)
        for representation in representations:
            if representation == "label" and num_classes > 256:
                continue
            coded = [encode_semantic_map(m, codec, representation, num_classes=num_classes) for m in maps]
            if verify:
                for labels, c in zip(maps, coded):
                    if not np.array_equal(decode_semantic_map(c), labels):
                        raise RuntimeError(f"codec {name!r} ({representation}) did not round-trip a map exactly")
            bpp = np.mean([c.bpp for c in coded])
            per_element = np.mean([c.bits_per_element for c in coded])
            rows.append(f"| map | {name} | {representation} | {bpp:.4f} | {per_element:.5f} | {len(coded)} |")
    photos = [_read_photo(p) for p in image_paths]
    for name in image_codecs if photos else []:
        codec = get_codec(name)
        for q in qualities:
            bpp = np.mean([encode_image(photo, codec, quality=q).bpp for photo in photos])
            rows.append(f"| photo | {name} | quality {q} | {bpp:.4f} | - | {len(photos)} |")
    return "\n".join(rows)
