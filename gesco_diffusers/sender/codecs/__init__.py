"""Source coding of semantic maps (lossless) and of photos (lossy), and the bits per pixel they cost.

* :mod:`.bpp`: the one definition of bits per pixel;
* :mod:`.backends`: the codecs (HEVC intra as BPG's engine, WebP, AVIF, PNG, external BPG) by registry name;
* :mod:`.container`: the stripped HEIF/AVIF stream that makes the HEVC numbers stand for BPG;
* :mod:`.maps`: semantic maps as tiled one-hot planes or label pictures (paper Sec. III-A, Fig. 7, Fig. 8);
* :mod:`.images`: photos, the "full image" baseline of Fig. 7.
"""

from .backends import AVIFCodec, BPGCodec, Codec, HEVCCodec, PNGCodec, WebPCodec, available_codecs, get_codec
from .bpp import bits_per_pixel
from .images import CodedImage, encode_image
from .maps import CodedMap, decode_semantic_map, encode_semantic_map, tile_planes, untile_planes

__all__ = [
    "AVIFCodec",
    "BPGCodec",
    "Codec",
    "CodedImage",
    "CodedMap",
    "HEVCCodec",
    "PNGCodec",
    "WebPCodec",
    "available_codecs",
    "bits_per_pixel",
    "decode_semantic_map",
    "encode_image",
    "encode_semantic_map",
    "get_codec",
    "tile_planes",
    "untile_planes",
]
