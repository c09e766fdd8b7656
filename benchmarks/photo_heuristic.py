#!/usr/bin/env python
"""The figures behind ``chain.PHOTO_RAMP_SHARE``: how label maps and photos read as ids change between neighbours.

    python benchmarks/photo_heuristic.py --data-dir path/to/camvid [--coco path/to/coco_stuff_samples]

Prints the largest share of +-1 steps among the id changes of the label maps (at their size and nearest-resized to
64x80) and the smallest over photos read as ids (grey levels quantised to 12 and 4 ids), against the threshold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesco_diffusers.chain import PHOTO_RAMP_SHARE, ramp_share  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="a dataset root with {split}/labels and {split}/images")
    p.add_argument("--coco", default=None, help="optional extra label maps: a root with {split}/labels")
    p.add_argument("--photos", type=int, default=300, help="photos to read as ids")
    args = p.parse_args(argv)
    maps = sorted(Path(args.data_dir).glob("*/labels/*.png"))
    maps += sorted(Path(args.coco).glob("*/labels/*.png")) if args.coco else []
    label_shares = []
    for path in maps:
        with Image.open(path) as image:
            label_shares.append(ramp_share(np.asarray(image).astype(np.int64)))
            label_shares.append(ramp_share(np.asarray(image.resize((80, 64), Image.NEAREST)).astype(np.int64)))
    photo_shares = []
    for path in sorted(Path(args.data_dir).glob("*/images/*.png"))[: args.photos]:
        grey = np.asarray(Image.open(path).convert("L")).astype(np.int64)
        photo_shares += [ramp_share(grey * levels // 256) for levels in (12, 4)]
    result = {"label_maps": len(maps), "label_max": max(label_shares), "photos": len(photo_shares) // 2,
              "photo_min": min(photo_shares), "threshold": PHOTO_RAMP_SHARE}
    print(f"label maps ({result['label_maps']}, two sizes): largest +-1 share {result['label_max']:.3f}")
    print(f"photos read as ids ({result['photos']}, 12 and 4 levels): smallest +-1 share {result['photo_min']:.3f}")
    print(f"threshold: {PHOTO_RAMP_SHARE}")
    return result


if __name__ == "__main__":
    main()
