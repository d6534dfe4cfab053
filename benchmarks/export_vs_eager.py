"""Benchmark 4: the exported TorchScript submission vs the eager embedder it was made from, batch 32.

Both take the same uint8 batch and do the same work (in-graph resize, normalise, tower, projection).
Prints exported/eager throughput.
"""
from __future__ import annotations

import shutil

import torch
from common import interleaved, machine, parser, ratio, setup

from guie.config import TrainConfig
from guie.export import export_run
from guie.export.build import build_submission_module
from guie.train.run import run_training


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="input images are SIZE x SIZE uint8")
    p.add_argument("--image-size", type=int, default=None, help="run the tower at this size (guie-train --image-size)")
    args = p.parse_args()
    root = setup(args)
    work = root.parent
    run_training(TrainConfig(data=[f"imagefolder:{root}"], out=str(work / "run"), backbone=args.backbone,
                             pretrained="none", image_size=args.image_size, epochs=1, classes=10).validate(),
                 log=lambda _: None)
    export_run(work / "run", work / "export", measure_speed=False, log=lambda _: None)
    exported = torch.jit.load(str(work / "export" / "saved_model.pt"))
    eager, _, _ = build_submission_module(work / "run")
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)

    def run(model):
        def go():
            with torch.inference_mode():
                for _ in range(5):
                    model(x)
        return go

    run(exported)()  # TorchScript profiles its first calls
    run(eager)()
    best = interleaved({"exported": run(exported), "eager": run(eager)}, args.repeat)
    t_exported, t_eager = best["exported"], best["eager"]
    n = 5 * args.batch
    print(f"machine: {machine()}; backbone {args.backbone}"
          + (f" at {args.image_size} px" if args.image_size else "") + f"; batch {args.batch} of {args.size}x{args.size} uint8")
    print(f"exported: {n / t_exported:.0f} img/s; eager: {n / t_eager:.0f} img/s")
    shutil.rmtree(work, ignore_errors=True)
    ratio("exported_vs_eager", t_eager / t_exported)


if __name__ == "__main__":
    main()
