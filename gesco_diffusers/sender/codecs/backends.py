"""Image codecs: ``encode(picture) -> bytes`` and ``decode(bytes) -> picture``, by registry name.

GESCO's sender compresses the one-hot map with an off-the-shelf image coder, BPG (paper Sec. III-A and IV-C). BPG is
an HEVC intra coder in a compact container; it is not packaged for Python, so the same engine, x265 HEVC intra
coding, is offered through ``pillow-heif`` (with the container stripped, :mod:`.container`), next to WebP, AVIF and
PNG, and an external ``bpgenc``/``bpgdec`` is driven when those binaries are on ``PATH``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .container import KIND_FILE, rebuild_container, strip_container

__all__ = [
    "CODECS_EXTRA",
    "AVIFCodec",
    "BPGCodec",
    "Codec",
    "HEVCCodec",
    "PNGCodec",
    "WebPCodec",
    "available_codecs",
    "get_codec",
]

CODECS_EXTRA = "pip install gesco-diffusers[codecs]"


# -- the pictures codecs take -------------------------------------------------------------------------------------


def to_numpy(array: Any, name: str) -> np.ndarray:
    """NumPy view of a NumPy array or a torch tensor (no copy, no dtype change)."""
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("torch"):
        return array.detach().cpu().numpy()
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def check_picture(array: Any, allow_color: bool, name: str = "array") -> np.ndarray:
    """An 8-bit picture: ``(H, W)`` grayscale or, if ``allow_color``, ``(H, W, 3)`` RGB."""
    array = to_numpy(array, name)
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


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 0 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 0..100, got {quality!r}")
    return int(quality)


# -- the codecs ---------------------------------------------------------------------------------------------------


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
        self.default_quality = None if self.lossless else check_quality(default_quality)

    def encode(self, picture: np.ndarray, quality: Optional[int] = None) -> bytes:
        """Code ``picture`` (uint8, ``(H, W)``, or ``(H, W, 3)`` for lossy codecs) into a bitstream."""
        picture = check_picture(picture, allow_color=not self.lossless, name="picture")
        if self.lossless:
            if quality is not None:
                raise ValueError(f"codec {self.name!r} is lossless and takes no quality (got {quality!r})")
            return self._encode(picture, None)
        return self._encode(picture, check_quality(self.default_quality if quality is None else quality))

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
    """Shared by the HEIF-family codecs: optional stripping of the ISO-BMFF container (:mod:`.container`)."""

    strip_container: bool = True

    def _encode(self, picture: np.ndarray, quality: Optional[int]) -> bytes:
        file_bytes = self._encode_file(picture, quality)
        return strip_container(file_bytes) if self.strip_container else bytes([KIND_FILE]) + file_bytes

    def _decode(self, bitstream: bytes) -> np.ndarray:
        return self._decode_file(rebuild_container(bitstream))

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
        strip_container: send only the coded data, not the whole AVIF file (:mod:`.container`).
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
        strip_container: send only the ``hvcC`` record and the coded slices, as BPG does (:mod:`.container`).
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
        return int(round(51 * (1 - check_quality(quality) / 100)))

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

