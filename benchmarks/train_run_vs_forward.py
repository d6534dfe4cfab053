"""Benchmark 2: a whole guie-train run (records, extraction, head training, holdout eval, files)
vs one pure backbone forward over the same images as pre-decoded tensors. Prints run/forward time.
"""
from __future__ import annotations

import shutil

from common import interleaved, machine, parser, ratio, setup
from pure_forward import predecode, pure_forward

from guie.config import TrainConfig
from guie.data import load_source
from guie.model.backbone import BackboneSpec, load_backbone
from guie.train.run import run_training


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    root = setup(args)
    paths = [r.path for r in load_source(f"imagefolder:{root}").records]
    backbone = load_backbone(BackboneSpec(args.backbone))
    pixels = predecode(backbone, paths)
    work = root.parent

    def whole_run():
        shutil.rmtree(work / "cache-run", ignore_errors=True)
        cfg = TrainConfig(data=[f"imagefolder:{root}"], out=str(work / "run"), backbone=args.backbone,
                          pretrained="none", epochs=args.epochs, eval="holdout", cache_dir=str(work / "cache-run"))
        run_training(cfg.validate(), overwrite=(work / "run").exists(), log=lambda _: None,
                     backbone_loader=lambda spec, device: backbone)

    best = interleaved({"forward": lambda: pure_forward(backbone, pixels), "run": whole_run}, args.repeat)
    t_forward, t_run = best["forward"], best["run"]
    print(f"machine: {machine()}; backbone {args.backbone}; {len(paths)} images; {args.epochs} epochs")
    print(f"pure forward: {t_forward:.2f} s; whole guie-train run: {t_run:.2f} s")
    ratio("train_run_vs_pure_forward", t_run / t_forward)


if __name__ == "__main__":
    main()
