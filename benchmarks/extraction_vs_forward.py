"""Benchmark 3: the feature-extraction pipeline (decode, resize, forward, DataLoader workers, cache writes)
vs the pure forward on pre-decoded tensors. Prints pure/pipeline throughput (1.0 = decoding is free).
"""
from __future__ import annotations

import shutil

from common import interleaved, machine, parser, ratio, setup
from pure_forward import predecode, pure_forward

from guie.data import load_source
from guie.features.extract import ensure_features
from guie.model.backbone import BackboneSpec, load_backbone


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    root = setup(args)
    paths = [r.path for r in load_source(f"imagefolder:{root}").records]
    backbone = load_backbone(BackboneSpec(args.backbone))
    pixels = predecode(backbone, paths)
    cache = root.parent / "cache-extract"

    def pipeline():
        shutil.rmtree(cache, ignore_errors=True)
        ensure_features(paths, backbone.spec, 0, cache, lambda: backbone, log=lambda _: None)

    best = interleaved({"forward": lambda: pure_forward(backbone, pixels), "pipeline": pipeline}, args.repeat)
    t_forward, t_pipeline = best["forward"], best["pipeline"]
    print(f"machine: {machine()}; backbone {args.backbone}; {len(paths)} images")
    print(f"pure forward: {len(paths) / t_forward:.0f} img/s; extraction pipeline: {len(paths) / t_pipeline:.0f} img/s")
    ratio("extraction_pipeline_vs_pure_forward", t_forward / t_pipeline)


if __name__ == "__main__":
    main()
