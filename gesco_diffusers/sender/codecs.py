"""Source coding of semantic maps (lossless) and of photos (lossy), and the bits per pixel they cost.

GESCO's sender one-hot encodes the semantic map and compresses it with an off-the-shelf image coder, BPG, before
transmission (paper Sec. III-A and IV-C, Fig. 7 and Fig. 8). BPG is an HEVC intra coder in a compact container; it
is not packaged for Python, so this module offers the same engine, x265 HEVC intra coding, through ``pillow-heif``,
next to WebP, AVIF and PNG, and it drives an external ``bpgenc``/``bpgdec`` when those binaries are on ``PATH``.

Bits per pixel (the one definition used throughout the package)
----------------------------------------------------------------
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

Map representations (``representation=``)
------------------------------------------
* ``"one_hot"`` (the paper's choice): the ``C`` binary planes, tiled row-major into one grayscale picture of
  ``ceil(C / cols) x cols`` tiles with ``cols = ceil(sqrt(C))`` (unused tiles are zero). Lossless codecs get the
  planes with levels 0/1: lossless HEVC codes prediction residuals, and 0/255 planes cost it about 3.5x more bits on
  CamVid (measured), while the other codecs are indifferent. Lossy codecs get 0/255 so that quantisation noise stays
  far from the decision threshold 128. Any binary planes can be sent this way, an instance-edge channel included.
* ``"label"``: the label-id map as one 8-bit grayscale picture (ids ``0..255``); only with lossless codecs, since
  label ids are not ordinal and a lossy coder would turn one class into another.

Container overhead
------------------
HEIF (HEVC) and AVIF files spend ~260-370 bytes on ISO-BMFF boxes, which at 180x240 is ~0.06 bpp, more than a
whole coded CamVid map. BPG's own header is a few bytes. So that the HEVC numbers stand for BPG, the HEVC and AVIF
codecs transmit a *stripped* stream by default (``strip_container=True``): the codec configuration box (for HEVC the
``hvcC`` record holding VPS/SPS/PPS), any geometry property (the clean-aperture crop of odd sizes) and the coded
picture data, plus a 7-byte header (kind, width, height, property count and flags). The
receiver rebuilds a minimal standard HEIF/AVIF file around them before decoding, so the stream stays decodable by the
stock decoders and nothing is lost. The remaining difference to BPG is the ~40 bytes of ``hvcC`` bookkeeping that
BPG's trimmed parameter sets avoid.
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "Codec",
    "PNGCodec",
    "WebPCodec",
    "AVIFCodec",
    "HEVCCodec",
    "BPGCodec",
    "get_codec",
    "available_codecs",
    "CodedMap",
    "CodedImage",
    "bits_per_pixel",
    "tile_planes",
    "untile_planes",
    "encode_semantic_map",
    "decode_semantic_map",
    "encode_image",
    "codec_bpp_table",
]

CODECS_EXTRA = "pip install gesco-diffusers[codecs]"
Representation = Literal["one_hot", "label"]
_REPRESENTATIONS = ("one_hot", "label")


# ----------------------------------------------------------------------------------------------------------------
# Bits per pixel
# ----------------------------------------------------------------------------------------------------------------


def bits_per_pixel(bitstream: bytes, image_hw: tuple[int, int]) -> float:
    """BPP of ``bitstream`` for a picture of spatial size ``image_hw = (H, W)``: ``8 * len(bitstream) / (H * W)``.

    ``(H, W)`` is the resolution of the label map or photo the bitstream stands for, never that of a tiled or
    padded intermediate picture (see the module docstring).
    """
    height, width = image_hw
    if height <= 0 or width <= 0:
        raise ValueError(f"image_hw must be positive, got {image_hw}")
    return 8.0 * len(bitstream) / (height * width)


# ----------------------------------------------------------------------------------------------------------------
# Array checks
# ----------------------------------------------------------------------------------------------------------------


def _to_numpy(array: Any, name: str) -> np.ndarray:
    """NumPy view of a NumPy array or a torch tensor (no copy, no dtype change)."""
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("torch"):
        return array.detach().cpu().numpy()
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def _check_picture(array: Any, allow_color: bool, name: str = "array") -> np.ndarray:
    """An 8-bit picture: ``(H, W)`` grayscale or, if ``allow_color``, ``(H, W, 3)`` RGB."""
    array = _to_numpy(array, name)
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {array.dtype}; nothing is rescaled or clipped here")
    ok_shape = array.ndim == 2 or (allow_color and array.ndim == 3 and array.shape[-1] == 3)
    if not ok_shape:
        expected = "(H, W) or (H, W, 3)" if allow_color else "(H, W) grayscale"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(array.shape)}")
    if array.shape[0] > 0xFFFF or array.shape[1] > 0xFFFF:
        raise ValueError(f"{name} of shape {tuple(array.shape)} exceeds 65535 pixels on a side")
    return np.ascontiguousarray(array)


def _check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 0 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 0..100, got {quality!r}")
    return int(quality)


# ----------------------------------------------------------------------------------------------------------------
# ISO-BMFF (HEIF / AVIF) container stripping and rebuilding
# ----------------------------------------------------------------------------------------------------------------

# First byte of a HEIF/AVIF codec's bitstream: either the file as written by the library or the stripped stream.
_KIND_FILE, _KIND_STRIPPED = 0, 1
# Codec configuration box -> (item type, major brand) of the image item it configures.
_ITEM_TYPES = {b"hvcC": (b"hvc1", b"heic"), b"av1C": (b"av01", b"avif")}


def _boxes(buf: bytes, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """``(type, box_start, payload_start, box_end)`` of the ISO-BMFF boxes in ``buf[start:end]``."""
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"corrupt ISO-BMFF box {kind!r} at byte {pos}")
        out.append((kind, pos, pos + header, pos + size))
        pos += size
    return out


def _child(boxes: list[tuple[bytes, int, int, int]], kind: bytes) -> Optional[tuple[bytes, int, int, int]]:
    matches = [b for b in boxes if b[0] == kind]
    return matches[0] if len(matches) == 1 else None


def _read_uint(buf: bytes, pos: int, size: int) -> tuple[int, int]:
    return (int.from_bytes(buf[pos : pos + size], "big") if size else 0), pos + size


def _single_item_extent(buf: bytes, iloc: tuple[bytes, int, int, int]) -> Optional[tuple[int, int, int]]:
    """``(item_id, offset, length)`` if the ``iloc`` box holds one item stored in one extent of the file."""
    _, _, pos, _ = iloc
    version = buf[pos]
    pos += 4
    offset_size, length_size = buf[pos] >> 4, buf[pos] & 15
    base_size, index_size = buf[pos + 1] >> 4, (buf[pos + 1] & 15 if version in (1, 2) else 0)
    pos += 2
    id_size = 4 if version == 2 else 2
    count, pos = _read_uint(buf, pos, id_size)
    if count != 1:
        return None
    item_id, pos = _read_uint(buf, pos, id_size)
    if version in (1, 2):
        method, pos = _read_uint(buf, pos, 2)
        if method & 15:  # construction_method 0 = file offset; 1/2 (idat/item) are not the simple case
            return None
    data_ref, pos = _read_uint(buf, pos, 2)
    base, pos = _read_uint(buf, pos, base_size)
    extents, pos = _read_uint(buf, pos, 2)
    if data_ref != 0 or extents != 1:
        return None
    _, pos = _read_uint(buf, pos, index_size)
    offset, pos = _read_uint(buf, pos, offset_size)
    length, pos = _read_uint(buf, pos, length_size)
    if length == 0:  # 0 means "to the end of the file"
        length = len(buf) - base - offset
    return item_id, base + offset, length


def _item_properties(buf: bytes, ipma: tuple[bytes, int, int, int], item_id: int) -> Optional[list[tuple[int, bool]]]:
    """``(1-based ipco index, essential)`` of the properties associated with ``item_id`` in the ``ipma`` box."""
    _, _, pos, _ = ipma
    version, flags = buf[pos], int.from_bytes(buf[pos + 1 : pos + 4], "big")
    pos += 4
    entries, pos = _read_uint(buf, pos, 4)
    width = 2 if flags & 1 else 1
    for _ in range(entries):
        this_id, pos = _read_uint(buf, pos, 2 if version < 1 else 4)
        n, pos = _read_uint(buf, pos, 1)
        associations = []
        for _ in range(n):
            value, pos = _read_uint(buf, pos, width)
            top_bit = 1 << (8 * width - 1)
            associations.append((value & (top_bit - 1), bool(value & top_bit)))
        if this_id == item_id:
            return associations
    return None


# Properties the stripped stream leaves out: the image size (sent as two u16), and two that the rebuilt file does
# not need (pixel bit depth is in the codec configuration; decoding without the nclx colour box was checked to give
# identical pictures, see tests). Everything else (codec configuration, clean aperture for odd sizes, rotations,
# ...) is carried verbatim.
_DROPPED_PROPERTIES = (b"ispe", b"pixi", b"colr")


def _strip_container(file_bytes: bytes) -> bytes:
    """Stripped stream ``[1][u16 W][u16 H][u8 n][u8 essential bits][n property boxes][coded data]``, or
    ``[0][file]`` when the file is not a single-item, single-extent still image (e.g. a grid image), which is then
    sent as is."""
    try:
        top = _boxes(file_bytes, 0, len(file_bytes))
        meta = _child(top, b"meta")
        if meta is None:
            raise ValueError("no meta box")
        inner = _boxes(file_bytes, meta[2] + 4, meta[3])  # meta is a FullBox: skip version + flags
        iloc, iprp = _child(inner, b"iloc"), _child(inner, b"iprp")
        located = _single_item_extent(file_bytes, iloc) if iloc else None
        if located is None or iprp is None:
            raise ValueError("not a single-item image")
        item_id, offset, length = located
        iprp_children = _boxes(file_bytes, iprp[2], iprp[3])
        ipco, ipma = _child(iprp_children, b"ipco"), _child(iprp_children, b"ipma")
        props = _boxes(file_bytes, ipco[2], ipco[3]) if ipco else []
        associations = _item_properties(file_bytes, ipma, item_id) if ipma else None
        if not associations or any(not 1 <= i <= len(props) for i, _ in associations):
            raise ValueError("item has no valid properties")
        associated = [(props[i - 1], essential) for i, essential in associations]
        ispe = [box for box, _ in associated if box[0] == b"ispe"]
        kept = [(box, essential) for box, essential in associated if box[0] not in _DROPPED_PROPERTIES]
        if len(ispe) != 1 or not kept or kept[0][0][0] not in _ITEM_TYPES or len(kept) > 8:
            raise ValueError("unexpected property layout")
        width, height = struct.unpack_from(">II", file_bytes, ispe[0][2] + 4)
        if width > 0xFFFF or height > 0xFFFF:
            raise ValueError("image too large for the stripped header")
    except (ValueError, struct.error, IndexError):
        return bytes([_KIND_FILE]) + file_bytes
    essential_bits = sum(1 << k for k, (_, essential) in enumerate(kept) if essential)
    header = struct.pack(">BHHBB", _KIND_STRIPPED, width, height, len(kept), essential_bits)
    boxes = b"".join(file_bytes[box[1] : box[3]] for box, _ in kept)
    return header + boxes + file_bytes[offset : offset + length]


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def _rebuild_container(stream: bytes) -> bytes:
    """Inverse of :func:`_strip_container`: a minimal HEIF/AVIF file (ftyp, meta, mdat) around the coded data."""
    if not stream:
        raise ValueError("empty bitstream")
    if stream[0] == _KIND_FILE:
        return stream[1:]
    if stream[0] != _KIND_STRIPPED or len(stream) < 15:
        raise ValueError("not a stream written by this codec (unknown header)")
    width, height, count, essential_bits = struct.unpack_from(">HHBB", stream, 1)
    props = []  # the first `count` boxes; the coded data after them is not made of boxes
    pos = 7
    for _ in range(count):
        size = struct.unpack_from(">I", stream, pos)[0] if pos + 8 <= len(stream) else 0
        if size < 8 or pos + size > len(stream):
            break
        props.append((stream[pos + 4 : pos + 8], pos, pos + 8, pos + size))
        pos += size
    if len(props) != count or props[0][0] not in _ITEM_TYPES:
        raise ValueError("not a stream written by this codec (bad property boxes)")
    payload = stream[props[-1][3] :]
    item_type, brand = _ITEM_TYPES[props[0][0]]

    # ipco = [codec configuration, ispe, other carried properties]: descriptive properties before transforms.
    boxes = [stream[p[1] : p[3]] for p in props]
    ispe = _full_box(b"ispe", 0, 0, struct.pack(">II", width, height))
    ipco = _box(b"ipco", boxes[0] + ispe + b"".join(boxes[1:]))
    flags = [bool(essential_bits & 1), False] + [bool(essential_bits >> k & 1) for k in range(1, count)]
    links = bytes((0x80 if essential else 0) | (i + 1) for i, essential in enumerate(flags))
    ipma = _full_box(b"ipma", 0, 0, struct.pack(">IHB", 1, 1, len(links)) + links)

    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0) + b"mif1" + brand + b"miaf")
    infe = _full_box(b"infe", 2, 0, struct.pack(">HH", 1, 0) + item_type + b"\0")
    head = (
        _full_box(b"hdlr", 0, 0, struct.pack(">I", 0) + b"pict" + bytes(12) + b"\0")
        + _full_box(b"pitm", 0, 0, struct.pack(">H", 1))
        + _full_box(b"iinf", 0, 0, struct.pack(">H", 1) + infe)
        + _box(b"iprp", ipco + ipma)
    )

    def iloc(offset: int) -> bytes:  # 4-byte offsets and lengths, no base offset, one item, one extent
        return _full_box(b"iloc", 0, 0, struct.pack(">BBHHHHII", 0x44, 0, 1, 1, 0, 1, offset, len(payload)))

    meta_size = len(_full_box(b"meta", 0, 0, head + iloc(0)))
    meta = _full_box(b"meta", 0, 0, head + iloc(len(ftyp) + meta_size + 8))
    return ftyp + meta + _box(b"mdat", payload)


# ----------------------------------------------------------------------------------------------------------------
# Codecs
# ----------------------------------------------------------------------------------------------------------------


class Codec(ABC):
    """An image codec: ``encode(picture) -> bytes`` and ``decode(bytes) -> picture``.

    Pictures are ``uint8`` arrays, ``(H, W)`` grayscale or ``(H, W, 3)`` RGB. Lossless codecs code 8-bit grayscale
    pictures only (what semantic maps become) and give them back bit-exactly; lossy codecs take a ``quality`` in
    ``0..100`` (higher = better, more bits).

    Attributes:
        name: registry name, e.g. ``"hevc-lossless"``.
        lossless: whether ``decode(encode(x)) == x`` bit-exactly.
        default_quality: quality used by lossy codecs when none is given (``None`` for lossless codecs).
    """

    name: str = "codec"
    lossless: bool = True
    default_quality: Optional[int] = None
    # What a missing requirement raises: ImportError for Python packages, FileNotFoundError for programs.
    requirement_error: type[Exception] = ImportError

    def __init__(self) -> None:
        problem = self.missing_requirement()
        if problem is not None:
            raise self.requirement_error(problem)

    @classmethod
    def missing_requirement(cls) -> Optional[str]:
        """``None`` if the codec can run here, else a message saying what to install."""
        return None

    def _set_mode(self, lossless: bool, names: tuple[str, str], default_quality: int) -> None:
        """For codecs with both modes: ``names = (lossless name, lossy name)``."""
        self.lossless = bool(lossless)
        self.name = names[0] if self.lossless else names[1]
        self.default_quality = None if self.lossless else _check_quality(default_quality)

    def encode(self, picture: np.ndarray, quality: Optional[int] = None) -> bytes:
        """Code ``picture`` (uint8, ``(H, W)``, or ``(H, W, 3)`` for lossy codecs) into a bitstream."""
        picture = _check_picture(picture, allow_color=not self.lossless, name="picture")
        if self.lossless:
            if quality is not None:
                raise ValueError(f"codec {self.name!r} is lossless and takes no quality (got {quality!r})")
            return self._encode(picture, None)
        return self._encode(picture, _check_quality(self.default_quality if quality is None else quality))

    def decode(self, bitstream: bytes) -> np.ndarray:
        """Picture coded in ``bitstream``: ``(H, W)`` for grayscale pictures, ``(H, W, 3)`` for RGB ones."""
        if not isinstance(bitstream, (bytes, bytearray, memoryview)):
            raise TypeError(f"bitstream must be bytes, got {type(bitstream).__name__}")
        if len(bitstream) == 0:
            raise ValueError("bitstream is empty")
        return self._decode(bytes(bitstream))

    @abstractmethod
    def _encode(self, picture: np.ndarray, quality: Optional[int]) -> bytes: ...

    @abstractmethod
    def _decode(self, bitstream: bytes) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, lossless={self.lossless})"


def _pil_save(picture: np.ndarray, fmt: str, **options: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pil_load(bitstream: bytes, formats: tuple[str, ...]) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(bitstream), formats=list(formats)) as image:
        image.load()
        if image.mode == "P":  # palette indices -> the gray levels the palette stands for (see PNGCodec)
            lut = np.array(image.getpalette()[0::3], dtype=np.uint8)
            return lut[np.asarray(image)]
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image).copy()


def _gray_if_equal_channels(picture: np.ndarray) -> np.ndarray:
    """Formats without a grayscale mode (WebP, lossless BPG) return gray pictures as R = G = B."""
    if picture.ndim == 3 and np.array_equal(picture[..., 0], picture[..., 1]) and np.array_equal(
        picture[..., 0], picture[..., 2]
    ):
        return picture[..., 0].copy()
    return picture


class PNGCodec(Codec):
    """Lossless PNG at the smallest bit depth: pictures with at most 16 distinct levels are written as palette
    images of 1, 2 or 4 bits per pixel (a 0/1 plane costs 1 bit before deflate), others as 8-bit grayscale;
    zlib at its highest level (``optimize=True``)."""

    name = "png"
    lossless = True

    def _encode(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        from PIL import Image

        levels = np.unique(picture)
        if len(levels) > 16:
            return _pil_save(picture, "PNG", optimize=True)
        indices = np.searchsorted(levels, picture).astype(np.uint8)
        image = Image.frombytes("P", (picture.shape[1], picture.shape[0]), indices.tobytes())
        image.putpalette(np.repeat(levels, 3).tolist())  # Pillow picks the bit depth from the palette size
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()

    def _decode(self, bitstream: bytes) -> np.ndarray:
        return _pil_load(bitstream, ("PNG",))


class WebPCodec(Codec):
    """WebP through Pillow: VP8L lossless (``lossless=True``) or VP8 lossy at ``quality`` 0..100.

    Args:
        lossless: lossless (map) or lossy (photo) coding.
        method: encoder effort 0..6 (6 = smallest files, slowest).
        default_quality: lossy quality used when ``encode`` gets none.
    """

    MAX_SIDE = 16383  # VP8/VP8L limit

    def __init__(self, lossless: bool = True, method: int = 6, default_quality: int = 75) -> None:
        super().__init__()
        self._set_mode(lossless, ("webp-lossless", "webp"), default_quality)
        self.method = int(method)

    @classmethod
    def missing_requirement(cls) -> Optional[str]:
        from PIL import features

        return None if features.check("webp") else "Pillow was built without WebP support: pip install -U pillow"

    def _encode(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        if max(picture.shape[:2]) > self.MAX_SIDE:
            raise ValueError(f"WebP pictures are at most {self.MAX_SIDE} pixels on a side, got {picture.shape[:2]}")
        if self.lossless:  # for VP8L, "quality" is the compression effort, 100 = smallest file
            return _pil_save(picture, "WEBP", lossless=True, quality=100, method=self.method)
        return _pil_save(picture, "WEBP", quality=quality, method=self.method)

    def _decode(self, bitstream: bytes) -> np.ndarray:
        return _gray_if_equal_channels(_pil_load(bitstream, ("WEBP",)))


class _ContainerCodec(Codec):
    """Shared by the HEIF-family codecs: optional stripping of the ISO-BMFF container (module docstring)."""

    strip_container: bool = True

    def _encode(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        file_bytes = self._encode_file(picture, quality)
        return _strip_container(file_bytes) if self.strip_container else bytes([_KIND_FILE]) + file_bytes

    def _decode(self, bitstream: bytes) -> np.ndarray:
        return self._decode_file(_rebuild_container(bitstream))

    @abstractmethod
    def _encode_file(self, picture: np.ndarray, quality: Optional[int]) -> bytes: ...

    @abstractmethod
    def _decode_file(self, file_bytes: bytes) -> np.ndarray: ...


class AVIFCodec(_ContainerCodec):
    """AV1 intra coding (AVIF) through Pillow's AVIF plugin (libavif + aom).

    Lossless mode is ``quality=100`` on a 4:0:0 (monochrome) full-range picture, which libavif codes with AV1's
    lossless transform; it is bit-exact for 8-bit grayscale pictures (tested).

    Args:
        lossless: lossless (map) or lossy (photo) coding.
        speed: encoder speed 0..10 (0 = slowest, smallest files).
        strip_container: send only the coded data, not the whole AVIF file (module docstring).
        default_quality: lossy quality used when ``encode`` gets none.
    """

    def __init__(
        self, lossless: bool = True, speed: int = 6, strip_container: bool = True, default_quality: int = 50
    ) -> None:
        super().__init__()
        self._set_mode(lossless, ("avif-lossless", "avif"), default_quality)
        self.speed = int(speed)
        self.strip_container = bool(strip_container)

    @classmethod
    def missing_requirement(cls) -> Optional[str]:
        from PIL import features

        if features.check("avif"):
            return None
        return "Pillow was built without AVIF support (Pillow >= 11.3 wheels include it): pip install -U pillow"

    def _encode_file(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        options: dict[str, Any] = {"speed": self.speed, "range": "full"}
        if self.lossless:
            options.update(quality=100, subsampling="4:0:0")
        else:
            options.update(quality=quality, subsampling="4:0:0" if picture.ndim == 2 else "4:2:0")
        return _pil_save(picture, "AVIF", **options)

    def _decode_file(self, file_bytes: bytes) -> np.ndarray:
        return _pil_load(file_bytes, ("AVIF",))


def _import_pillow_heif():
    try:
        import pillow_heif
    except ImportError as error:
        raise ImportError(f"HEVC coding needs pillow-heif: {CODECS_EXTRA}") from error
    return pillow_heif


class HEVCCodec(_ContainerCodec):
    """HEVC intra coding with x265, BPG's engine, through pillow-heif (libheif).

    Lossless mode is x265's lossless coding (``quality=-1`` in pillow-heif) of a monochrome picture: bit-exact for
    8-bit grayscale pictures (tested). RGB pictures are *not* coded losslessly by this path (libheif converts them
    to YCbCr first), which is why lossless codecs only accept grayscale pictures.

    Args:
        lossless: lossless (map) or lossy (photo) coding.
        chroma: chroma subsampling of lossy RGB coding (420, 422 or 444; BPG's default is 420).
        strip_container: send only the ``hvcC`` record and the coded slices, as BPG does (module docstring).
        default_quality: lossy quality used when ``encode`` gets none.
    """

    def __init__(
        self, lossless: bool = True, chroma: int = 420, strip_container: bool = True, default_quality: int = 50
    ) -> None:
        super().__init__()
        if chroma not in (420, 422, 444):
            raise ValueError(f"chroma must be 420, 422 or 444, got {chroma!r}")
        self._set_mode(lossless, ("hevc-lossless", "hevc"), default_quality)
        self.chroma = chroma
        self.strip_container = bool(strip_container)

    @classmethod
    def missing_requirement(cls) -> Optional[str]:
        try:
            pillow_heif = _import_pillow_heif()
        except ImportError as error:
            return str(error)
        if not pillow_heif.libheif_info().get("HEIF"):
            return f"pillow-heif was built without an HEVC encoder: {CODECS_EXTRA}"
        return None

    def _encode_file(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        pillow_heif = _import_pillow_heif()
        mode = "L" if picture.ndim == 2 else "RGB"
        heif = pillow_heif.from_bytes(mode, (picture.shape[1], picture.shape[0]), picture.tobytes())
        buffer = io.BytesIO()
        if self.lossless:
            heif.save(buffer, quality=-1)
        else:
            heif.save(buffer, quality=quality, chroma=self.chroma if mode == "RGB" else 420)
        return buffer.getvalue()

    def _decode_file(self, file_bytes: bytes) -> np.ndarray:
        pillow_heif = _import_pillow_heif()
        heif = pillow_heif.open_heif(io.BytesIO(file_bytes), convert_hdr_to_8bit=True)
        picture = np.asarray(heif)
        if picture.ndim == 3 and picture.shape[-1] == 1:
            picture = picture[..., 0]
        if heif.mode not in ("L", "RGB"):
            raise ValueError(f"unsupported decoded HEIF mode {heif.mode!r}")
        return picture.copy()


class BPGCodec(Codec):
    """BPG through the external ``bpgenc``/``bpgdec`` programs (https://bellard.org/bpg/), if on ``PATH``.

    Lossless mode runs ``bpgenc -lossless`` (8-bit, grayscale pictures stay grayscale); lossy mode maps
    ``quality`` 0..100 to BPG's quantiser ``qp = round(51 * (1 - quality / 100))`` (qp 51 = strongest compression,
    the setting of the paper's Fig. 8) with 4:2:0 chroma and 8-bit samples.

    Args:
        lossless: lossless (map) or lossy (photo) coding.
        level: ``bpgenc -m`` compression effort 1..9.
        default_quality: lossy quality used when ``encode`` gets none.
    """

    BINARIES = ("bpgenc", "bpgdec")
    requirement_error = FileNotFoundError

    def __init__(self, lossless: bool = True, level: int = 9, default_quality: int = 45) -> None:
        super().__init__()
        self._set_mode(lossless, ("bpg", "bpg-lossy"), default_quality)
        if not 1 <= int(level) <= 9:
            raise ValueError(f"level must be in 1..9, got {level!r}")
        self.level = int(level)

    @classmethod
    def missing_requirement(cls) -> Optional[str]:
        missing = [b for b in cls.BINARIES if shutil.which(b) is None]
        if missing:
            return (
                f"BPG coding needs the external program(s) {', '.join(missing)} on PATH "
                "(build libbpg from https://bellard.org/bpg/); use 'hevc-lossless'/'hevc' for the same HEVC engine"
            )
        return None

    @staticmethod
    def qp_for_quality(quality: int) -> int:
        """BPG quantiser (0..51, lower = better) for a ``quality`` in 0..100."""
        return int(round(51 * (1 - _check_quality(quality) / 100)))

    @staticmethod
    def _run(args: list[str]) -> None:
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed (exit {result.returncode}): {result.stderr.strip()}")

    def _encode(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.png", Path(tmp) / "out.bpg"
            source.write_bytes(_pil_save(picture, "PNG"))
            args = [shutil.which("bpgenc") or "bpgenc", "-m", str(self.level), "-o", str(target)]
            args += ["-lossless"] if self.lossless else ["-q", str(self.qp_for_quality(quality)), "-b", "8"]
            self._run(args + [str(source)])
            return target.read_bytes()

    def _decode(self, bitstream: bytes) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.bpg", Path(tmp) / "out.png"
            source.write_bytes(bitstream)
            self._run([shutil.which("bpgdec") or "bpgdec", "-o", str(target), str(source)])
            return _gray_if_equal_channels(_pil_load(target.read_bytes(), ("PNG",)))


_CODEC_FACTORIES: dict[str, Callable[..., Codec]] = {
    "hevc-lossless": partial(HEVCCodec, lossless=True),
    "webp-lossless": partial(WebPCodec, lossless=True),
    "avif-lossless": partial(AVIFCodec, lossless=True),
    "png": PNGCodec,
    "bpg": partial(BPGCodec, lossless=True),
    "hevc": partial(HEVCCodec, lossless=False),
    "webp": partial(WebPCodec, lossless=False),
    "avif": partial(AVIFCodec, lossless=False),
    "bpg-lossy": partial(BPGCodec, lossless=False),
}


def _factory_class(name: str) -> type[Codec]:
    factory = _CODEC_FACTORIES[name]
    return factory.func if isinstance(factory, partial) else factory


def get_codec(name: Union[str, Codec], **options: Any) -> Codec:
    """The codec registered as ``name`` (see :func:`available_codecs`), built with ``options``; a :class:`Codec`
    instance is returned as is.

    Raises:
        ValueError: unknown name.
        ImportError: the codec's Python package is missing (message says what to ``pip install``).
        FileNotFoundError: an external program (``bpgenc``/``bpgdec``) is not on ``PATH``.
    """
    if isinstance(name, Codec):
        if options:
            raise ValueError("options cannot be applied to an already built codec")
        return name
    if name not in _CODEC_FACTORIES:
        raise ValueError(f"Unknown codec {name!r}; registered codecs: {sorted(_CODEC_FACTORIES)}")
    return _CODEC_FACTORIES[name](**options)


def available_codecs(lossless: Optional[bool] = None, include_unavailable: bool = False) -> list[str]:
    """Names of the registered codecs that can run here (all registered ones if ``include_unavailable``),
    optionally only the lossless (``lossless=True``) or the lossy (``False``) ones, in registry order."""
    names = []
    for name, factory in _CODEC_FACTORIES.items():
        is_lossless = factory.keywords.get("lossless", True) if isinstance(factory, partial) else True
        if lossless is not None and is_lossless != lossless:
            continue
        if include_unavailable or _factory_class(name).missing_requirement() is None:
            names.append(name)
    return names


# ----------------------------------------------------------------------------------------------------------------
# Semantic maps
# ----------------------------------------------------------------------------------------------------------------


def _grid(num_planes: int) -> tuple[int, int]:
    """``(rows, cols)`` of the near-square tiling of ``num_planes`` planes: ``cols = ceil(sqrt(C))``."""
    cols = math.ceil(math.sqrt(num_planes))
    return math.ceil(num_planes / cols), cols


def tile_planes(planes: np.ndarray) -> np.ndarray:
    """Tile ``(C, H, W)`` planes row-major into one ``(rows * H, cols * W)`` picture (unused tiles are zero)."""
    num_planes, height, width = planes.shape
    rows, cols = _grid(num_planes)
    padded = np.zeros((rows * cols, height, width), dtype=planes.dtype)
    padded[:num_planes] = planes
    return padded.reshape(rows, cols, height, width).transpose(0, 2, 1, 3).reshape(rows * height, cols * width)


def untile_planes(picture: np.ndarray, num_planes: int) -> np.ndarray:
    """Inverse of :func:`tile_planes`: the ``(C, H, W)`` planes of a tiled picture."""
    rows, cols = _grid(num_planes)
    if picture.ndim != 2 or picture.shape[0] % rows or picture.shape[1] % cols:
        raise ValueError(
            f"decoded picture of shape {tuple(picture.shape)} is not a {rows}x{cols} grid of {num_planes} planes"
        )
    height, width = picture.shape[0] // rows, picture.shape[1] // cols
    tiles = picture.reshape(rows, height, cols, width).transpose(0, 2, 1, 3).reshape(rows * cols, height, width)
    return tiles[:num_planes]


class _RateMixin:
    """``num_bits`` and ``bpp`` of a coded picture with fields ``bitstream`` and ``image_hw``."""

    bitstream: bytes
    image_hw: tuple[int, int]

    @property
    def num_bits(self) -> int:
        """``8 * len(bitstream)``: every byte sent."""
        return 8 * len(self.bitstream)

    @property
    def bpp(self) -> float:
        """Bits per pixel: ``num_bits / (H * W)`` with ``(H, W) = image_hw`` (module docstring)."""
        return bits_per_pixel(self.bitstream, self.image_hw)


@dataclass(frozen=True)
class CodedMap(_RateMixin):
    """A coded semantic map and its cost.

    Attributes:
        bitstream: the bytes sent over the channel.
        codec: registry name of the codec.
        representation: ``"one_hot"`` (tiled binary planes) or ``"label"`` (label-id picture).
        num_classes: ``C``, the number of one-hot planes the map stands for.
        image_hw: ``(H, W)`` of the label map.
        quality: quality of a lossy codec (``None`` for lossless codecs).
        source_kind: ``"labels"`` or ``"one_hot"``, what :func:`encode_semantic_map` was given.
        source_dtype: its dtype, so :func:`decode_semantic_map` can give the input back exactly.
    """

    bitstream: bytes = field(repr=False)
    codec: str
    representation: str
    num_classes: int
    image_hw: tuple[int, int]
    quality: Optional[int] = None
    source_kind: str = "labels"
    source_dtype: str = "int64"

    @property
    def bits_per_element(self) -> float:
        """Bits per one-hot element: ``num_bits / (C * H * W)`` (module docstring)."""
        return self.bpp / self.num_classes


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise ValueError(f"label map must have an integer dtype, got {labels.dtype} (no rounding is done here)")
    if labels.shape[0] < 1 or labels.shape[1] < 1:
        raise ValueError(f"label map is empty: shape {tuple(labels.shape)}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"label ids must lie in 0..{num_classes - 1} (num_classes={num_classes}), found {low}..{high}")
    return labels


def _check_one_hot(one_hot: np.ndarray) -> np.ndarray:
    """Binary ``(C, H, W)`` planes as uint8 0/1."""
    if one_hot.dtype.kind not in "biuf":
        raise ValueError(f"one-hot map must have a bool, integer or float dtype, got {one_hot.dtype}")
    if one_hot.shape[0] < 1 or one_hot.shape[1] < 1 or one_hot.shape[2] < 1:
        raise ValueError(f"one-hot map is empty: shape {tuple(one_hot.shape)}")
    if one_hot.dtype.kind == "f" and not np.isfinite(one_hot).all():
        raise ValueError("one-hot map contains NaN or inf")
    if not np.isin(one_hot, (0, 1)).all():
        raise ValueError("one-hot map must be binary (values 0 and 1 only); soft or noisy maps cannot be coded here")
    return one_hot.astype(np.uint8)


def _one_hot_planes(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """uint8 ``(C, H, W)`` 0/1 planes of a ``(H, W)`` label map."""
    return (labels[None] == np.arange(num_classes)[:, None, None]).astype(np.uint8)


def _labels_from_planes(planes: np.ndarray, exact: bool) -> np.ndarray:
    """Label ids from decoded planes: the active plane (lossless) or the brightest plane (lossy, ties -> lowest id)."""
    if exact:
        active = planes.sum(axis=0, dtype=np.int64)
        if not (active == 1).all():
            raise ValueError(
                f"{int((active != 1).sum())} pixels have 0 or several active planes: the planes are not a class "
                "one-hot map (e.g. they carry an instance-edge channel), so they have no label-id form"
            )
    return planes.argmax(axis=0)


def encode_semantic_map(
    semantic_map: Any,
    codec: Union[str, Codec] = "hevc-lossless",
    representation: Representation = "one_hot",
    num_classes: Optional[int] = None,
    quality: Optional[int] = None,
) -> CodedMap:
    """Code a semantic map for transmission (paper Sec. III-A: one-hot encoding, then an image coder).

    Args:
        semantic_map: a label map ``(H, W)`` of integer ids, or binary one-hot planes ``(C, H, W)`` (bool, integer
            or float 0/1; any binary planes, e.g. with an instance-edge channel, for ``representation="one_hot"``);
            numpy array or torch tensor.
        codec: a registry name (:func:`available_codecs`) or a :class:`Codec`.
        representation: ``"one_hot"`` (tiled planes, the paper's choice) or ``"label"`` (8-bit id picture; needs
            class-exclusive planes, ``C <= 256`` and a lossless codec).
        num_classes: ``C``; required for a label map, must equal ``semantic_map.shape[0]`` for one-hot planes.
        quality: quality of a lossy codec (one-hot representation only); ``None`` = the codec's default.

    Returns:
        A :class:`CodedMap`; its ``bpp`` is ``8 * len(bitstream) / (H * W)`` and ``bits_per_element`` is
        ``8 * len(bitstream) / (C * H * W)`` (module docstring).
    """
    if representation not in _REPRESENTATIONS:
        raise ValueError(f"representation must be one of {_REPRESENTATIONS}, got {representation!r}")
    codec = get_codec(codec)
    array = _to_numpy(semantic_map, "semantic_map")
    if array.ndim == 2:
        if num_classes is None:
            raise ValueError("num_classes is required to code a label map (it fixes the number of one-hot planes)")
        source_kind = "labels"
        labels = _check_labels(array, int(num_classes))
        planes = None
    elif array.ndim == 3:
        if num_classes is not None and int(num_classes) != array.shape[0]:
            raise ValueError(f"num_classes={num_classes} but the one-hot map has {array.shape[0]} planes")
        num_classes = array.shape[0]
        source_kind = "one_hot"
        planes = _check_one_hot(array)
        labels = _labels_from_planes(planes, exact=True) if representation == "label" else None
    else:
        raise ValueError(
            f"semantic_map must be a (H, W) label map or (C, H, W) one-hot planes, got shape {tuple(array.shape)} "
            "(code batches map by map)"
        )
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    image_hw = tuple(int(s) for s in array.shape[-2:])

    if codec.lossless and quality is not None:
        raise ValueError(f"codec {codec.name!r} is lossless and takes no quality (got {quality!r})")
    if representation == "label":
        if not codec.lossless:
            raise ValueError(
                f"representation='label' needs a lossless codec, got {codec.name!r}: label ids are not ordinal, so "
                "a lossy coder would turn classes into other classes; use representation='one_hot'"
            )
        if num_classes > 256:
            raise ValueError(f"representation='label' holds at most 256 classes in 8 bits, got {num_classes}")
        picture = labels.astype(np.uint8)
    else:
        if planes is None:
            planes = _one_hot_planes(labels, num_classes)
        level = 1 if codec.lossless else 255  # why 0/1 vs 0/255: module docstring
        picture = tile_planes(planes * np.uint8(level))
    bitstream = codec.encode(picture, quality)
    return CodedMap(
        bitstream=bitstream,
        codec=codec.name,
        representation=representation,
        num_classes=num_classes,
        image_hw=image_hw,
        quality=None if codec.lossless else _check_quality(codec.default_quality if quality is None else quality),
        source_kind=source_kind,
        source_dtype=str(array.dtype),
    )


def decode_semantic_map(
    coded: Union[CodedMap, bytes],
    *,
    codec: Union[str, Codec, None] = None,
    representation: Optional[Representation] = None,
    num_classes: Optional[int] = None,
    output: Optional[Literal["labels", "one_hot"]] = None,
    dtype: Any = None,
) -> np.ndarray:
    """Decode a semantic map coded by :func:`encode_semantic_map`.

    Args:
        coded: a :class:`CodedMap`, or the raw bitstream as a receiver sees it, in which case ``codec``,
            ``representation`` and ``num_classes`` (system parameters, not sent) must be given.
        output: ``"labels"`` (``(H, W)`` ids) or ``"one_hot"`` (``(C, H, W)`` 0/1 planes). Default: what was
            encoded (for a :class:`CodedMap`), else the representation's natural form.
        dtype: dtype of the result. Default: the encoded array's dtype (for a :class:`CodedMap`), else int64
            labels / float32 planes.

    Returns:
        The map. For lossless codecs it equals the encoded map exactly. For lossy one-hot coding, planes are
        thresholded at half the coded level and labels are the brightest plane per pixel.
    """
    if isinstance(coded, CodedMap):
        if codec is not None or representation is not None or num_classes is not None:
            raise ValueError("codec, representation and num_classes come from the CodedMap; do not pass them")
        codec, representation, num_classes = coded.codec, coded.representation, coded.num_classes
        output = coded.source_kind if output is None else output
        dtype = coded.source_dtype if dtype is None else dtype
        bitstream = coded.bitstream
    else:
        if codec is None or representation is None or num_classes is None:
            raise ValueError("decoding a raw bitstream needs codec, representation and num_classes")
        bitstream = coded
        if output is None:
            output = "labels" if representation == "label" else "one_hot"
    if representation not in _REPRESENTATIONS:
        raise ValueError(f"representation must be one of {_REPRESENTATIONS}, got {representation!r}")
    if output not in ("labels", "one_hot"):
        raise ValueError(f"output must be 'labels' or 'one_hot', got {output!r}")
    codec = get_codec(codec)
    num_classes = int(num_classes)
    picture = codec.decode(bitstream)
    if picture.ndim == 3 and not codec.lossless:
        # A format without a grayscale mode (lossy WebP) returns the gray picture as RGB with small chroma errors;
        # the mean of the channels is the coded gray level.
        picture = np.round(picture.mean(axis=-1)).astype(np.uint8)
    if picture.ndim != 2:
        raise ValueError(f"decoded a colour picture of shape {picture.shape}; semantic maps are coded as grayscale")

    if representation == "label":
        labels = picture.astype(np.int64)
        _check_labels(labels, num_classes)
        planes = None
    else:
        tiles = untile_planes(picture, num_planes=num_classes)
        if codec.lossless:
            if not np.isin(tiles, (0, 1)).all():
                raise ValueError("decoded one-hot planes are not 0/1: the bitstream was not coded losslessly as planes")
            planes = tiles
        else:
            planes = (tiles >= 128).astype(np.uint8)
        labels = _labels_from_planes(tiles, exact=codec.lossless) if output == "labels" else None

    if output == "labels":
        return labels.astype(np.int64 if dtype is None else dtype)
    if planes is None:
        planes = _one_hot_planes(labels, num_classes)
    return planes.astype(np.float32 if dtype is None else dtype)


# ----------------------------------------------------------------------------------------------------------------
# Photos (the "full image" baseline of Fig. 7)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodedImage(_RateMixin):
    """A lossy-coded RGB photo.

    Attributes:
        bitstream: the bytes sent.
        codec: registry name of the codec.
        quality: the quality used (0..100).
        image_hw: ``(H, W)`` of the photo.
        decoded: what the receiver reconstructs, uint8 ``(H, W, 3)``.
    """

    bitstream: bytes = field(repr=False)
    codec: str
    quality: int
    image_hw: tuple[int, int]
    decoded: np.ndarray = field(repr=False)


def encode_image(
    rgb: Any,
    codec: Union[str, Codec] = "hevc",
    quality: Optional[int] = None,
    target_bpp: Optional[float] = None,
) -> CodedImage:
    """Code an RGB photo with a lossy codec, at a ``quality`` or at the best quality within a ``target_bpp``.

    With ``target_bpp``, the quality is found by bisection over the integers 0..100: the highest quality whose
    BPP does not exceed the target (the rate grows with the quality; the search assumes it does so monotonically,
    as x265/aom/libwebp rate control does in practice). The result's BPP is therefore ``<= target_bpp`` and as close
    as the integer quality grid allows.

    Args:
        rgb: uint8 ``(H, W, 3)`` array or tensor.
        codec: a lossy codec name (``"hevc"``, ``"webp"``, ``"avif"``, ``"bpg-lossy"``) or :class:`Codec`.
        quality: 0..100; ``None`` (and no ``target_bpp``) = the codec's default.
        target_bpp: rate budget in bits per pixel; exclusive with ``quality``.

    Raises:
        ValueError: bad array, lossless codec, both ``quality`` and ``target_bpp``, or a target below the rate of
            quality 0 on this photo.
    """
    codec = get_codec(codec)
    if codec.lossless:
        lossy = available_codecs(lossless=False, include_unavailable=True)
        raise ValueError(f"encode_image needs a lossy codec, {codec.name!r} is lossless; choose one of {lossy}")
    rgb = _check_picture(rgb, allow_color=True, name="rgb")
    if rgb.ndim != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {tuple(rgb.shape)}")
    if quality is not None and target_bpp is not None:
        raise ValueError("give either quality or target_bpp, not both")
    image_hw = (rgb.shape[0], rgb.shape[1])

    if target_bpp is None:
        chosen = _check_quality(codec.default_quality if quality is None else quality)
        bitstream = codec.encode(rgb, chosen)
    else:
        target_bpp = float(target_bpp)
        if not math.isfinite(target_bpp) or target_bpp <= 0:
            raise ValueError(f"target_bpp must be a positive finite number, got {target_bpp}")
        cache: dict[int, bytes] = {}

        def rate(q: int) -> float:
            if q not in cache:
                cache[q] = codec.encode(rgb, q)
            return bits_per_pixel(cache[q], image_hw)

        if rate(0) > target_bpp:
            raise ValueError(
                f"target_bpp={target_bpp:g} is below the lowest rate {codec.name!r} reaches on this image "
                f"({rate(0):.4f} bpp at quality 0)"
            )
        low, high = 0, 100  # invariant: rate(low) <= target < rate(high), unless quality 100 fits
        if rate(high) <= target_bpp:
            low = high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if rate(mid) <= target_bpp else (low, mid)
        chosen, bitstream = low, cache[low]

    decoded = codec.decode(bitstream)
    if decoded.ndim == 2:  # a gray photo decoded by a format that returns gray pictures
        decoded = np.repeat(decoded[..., None], 3, axis=-1)
    return CodedImage(bitstream=bitstream, codec=codec.name, quality=chosen, image_hw=image_hw, decoded=decoded)


# ----------------------------------------------------------------------------------------------------------------
# BPP table (map-level experiment, Fig. 7)
# ----------------------------------------------------------------------------------------------------------------


def _open_picture(path: Union[str, Path], what: str, mode: Optional[str] = None) -> np.ndarray:
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with Image.open(path) as image:
        return np.asarray(image if mode is None else image.convert(mode))


def _load_label_map(path: Union[str, Path], remap: Optional[Mapping[int, int]]) -> np.ndarray:
    labels = _open_picture(path, "label map")
    if labels.ndim != 2:
        raise ValueError(f"label map {path} must be a single-channel picture, got shape {labels.shape}")
    labels = labels.astype(np.int64)
    if remap:
        remapped = labels.copy()
        for source, target in remap.items():  # all substitutions read the original ids
            remapped[labels == source] = target
        labels = remapped
    return labels


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
    (each lossy codec x quality), BPP as defined in the module docstring.

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

    maps = [_load_label_map(p, label_remap) for p in label_paths]
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
    photos = [_open_picture(p, "photo", mode="RGB") for p in image_paths]
    for name in image_codecs if photos else []:
        codec = get_codec(name)
        for q in qualities:
            bpp = np.mean([encode_image(photo, codec, quality=q).bpp for photo in photos])
            rows.append(f"| photo | {name} | quality {q} | {bpp:.4f} | - | {len(photos)} |")
    return "\n".join(rows)
