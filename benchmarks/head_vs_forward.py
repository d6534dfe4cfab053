"""Benchmark 1: an epoch of head training on cached features vs one that forwards the frozen backbone every step.

The seed solution ran the frozen CLIP in every step of every epoch; guie runs it once and
trains on the cache. Same images, same head, same batches. Prints the per-epoch speed-up.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from common import interleaved, machine, parser, ratio, setup
from torch.utils.data import DataLoader

from guie.data import load_source
from guie.data.images import ImageDataset, default_workers
from guie.features.extract import ensure_features
from guie.model.backbone import BackboneSpec, eval_transform, load_backbone
from guie.model.heads import ArcFaceHead
from guie.model.projection import Projection
from guie.train.loop import gather


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    root = setup(args)
    records = load_source(f"imagefolder:{root}").records
    paths = [r.path for r in records]
    labels = torch.tensor([int(r.label) for r in records])
    backbone = load_backbone(BackboneSpec(args.backbone))
    feats = ensure_features(paths, backbone.spec, 0, root.parent / "cache", lambda: backbone, log=lambda _: None)
    batch = 64

    def new_head():
        torch.manual_seed(0)
        projection, head = Projection(backbone.feature_dim, 64), ArcFaceHead(64, 10)
        return projection, head, torch.optim.AdamW([*projection.parameters(), *head.parameters()], 1e-3)

    def step(projection, head, opt, x, y):
        loss = F.cross_entropy(head(projection(x), y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def cached_epoch():
        projection, head, opt = new_head()
        order = np.random.default_rng(0).permutation(len(paths))
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            step(projection, head, opt, torch.from_numpy(gather(feats.views, idx, np.zeros(len(idx), int))), labels[idx])

    loader = DataLoader(ImageDataset(paths, eval_transform(backbone.preprocess_cfg), backbone.image_size),
                        batch_size=batch, shuffle=True, num_workers=default_workers())

    def forward_epoch():
        projection, head, opt = new_head()
        for pixels, pos, _, _ in loader:
            with torch.inference_mode():
                x = backbone.visual(pixels)
            step(projection, head, opt, x.clone(), labels[pos])

    best = interleaved({"cached": cached_epoch, "forward": forward_epoch}, args.repeat)
    t_cached, t_forward = best["cached"], best["forward"]
    print(f"machine: {machine()}; backbone {args.backbone}; {len(paths)} images")
    print(f"epoch on cached features: {t_cached * 1000:.1f} ms; epoch forwarding the backbone: {t_forward * 1000:.1f} ms")
    ratio("cached_head_epoch_speedup", t_forward / t_cached)


if __name__ == "__main__":
    main()
