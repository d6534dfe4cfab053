"""Cache bookkeeping under many shards: extracting the same images with --shard-size 64 vs the default 4096.

Both sides run guie's whole extraction (decode, resize, forward, cache writes) into a fresh
cache; they differ only in how many shards the cache gets (20k images: 313 shards vs 5).
Bookkeeping that grows with the cache rather than the shard would show here as a ratio well
above 1. Prints small-shard/default time (target <= 1.3).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from common import interleaved, machine, parser, ratio, setup

from guie.data import load_source
from guie.features.extract import ensure_features
from guie.model.backbone import BackboneSpec, load_backbone


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=64, help="the small shard size")
    p.add_argument("--default", type=int, default=4096, help="the default shard size")
    p.set_defaults(images=20_000, repeat=2)
    args = p.parse_args()
    digits = [r.path for r in load_source(f"imagefolder:{setup(args)}").records]
    root = Path(digits[0]).parent.parent.parent / "images"
    for i in range(args.images):  # the 1,797 digits under distinct names (hard links): distinct cache keys
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        os.link(digits[i % len(digits)], folder / f"{i:06d}.png")
    paths = [r.path for r in load_source(f"imagefolder:{root}").records]
    backbone = load_backbone(BackboneSpec(args.backbone))

    def extract(shard_size: int):
        def go():
            cache = root.parent / f"cache-{shard_size}"
            shutil.rmtree(cache, ignore_errors=True)
            ensure_features(paths, backbone.spec, 0, cache, lambda: backbone, shard_size=shard_size,
                            log=lambda _: None)
        return go

    best = interleaved({"small": extract(args.small), "default": extract(args.default)}, args.repeat)
    print(f"machine: {machine()}; backbone {args.backbone}; {len(paths)} images")
    print(f"shard size {args.small}: {best['small']:.1f} s ({-(-len(paths) // args.small)} shards); "
          f"shard size {args.default}: {best['default']:.1f} s ({-(-len(paths) // args.default)} shards)")
    shutil.rmtree(root.parent, ignore_errors=True)
    ratio(f"shard{args.small}_vs_shard{args.default}_extraction", best["small"] / best["default"])


if __name__ == "__main__":
    main()
