"""Second stage beyond the frozen backbone: unfreeze the last N transformer blocks and fine-tune them
at a scaled-down learning rate for a few epochs, the projection frozen, streaming images
(1st and 2nd place GUIE 2022). Only the unfrozen blocks and the margin head change.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from guie.data.images import ImageDataset
from guie.errors import GuieError
from guie.model.backbone import Backbone, augment_transform, eval_transform
from guie.model.heads import MarginHead
from guie.model.projection import Projection


@dataclass
class Stage2Settings:
    blocks: int
    lr: float  # the head's learning rate; the blocks get lr * lr_scale
    lr_scale: float
    epochs: int
    batch_size: int
    weight_decay: float
    seed: int
    workers: int


def resblocks(visual: nn.Module) -> nn.ModuleList:
    """The transformer blocks of an open_clip ViT image tower."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        raise GuieError(f"--stage2-blocks needs an open_clip ViT backbone; {type(visual).__name__} has no "
                        "transformer blocks; drop --stage2-blocks")
    return blocks


def unfreeze_last_blocks(visual: nn.Module, n: int) -> dict[str, nn.Parameter]:
    """Make the last ``n`` blocks trainable; return their parameters keyed as in visual.state_dict()."""
    blocks = resblocks(visual)
    if not 1 <= n <= len(blocks):
        raise GuieError(f"--stage2-blocks {n} is out of range: the backbone has {len(blocks)} blocks")
    first = len(blocks) - n
    params = {}
    for i in range(first, len(blocks)):
        for name, p in blocks[i].named_parameters():
            p.requires_grad_(True)
            params[f"transformer.resblocks.{i}.{name}"] = p
    return params


def fine_tune(backbone: Backbone, projection: Projection, head: MarginHead, paths: Sequence[str],
              labels: np.ndarray, settings: Stage2Settings, device: torch.device,
              log: Callable[[str], None] = print) -> dict[str, torch.Tensor]:
    """Run stage 2 in place on ``backbone.visual`` and ``head``; return the changed block weights."""
    visual = backbone.visual
    trainable = unfreeze_last_blocks(visual, settings.blocks)
    projection.requires_grad_(False).eval()
    visual.train()
    head.train()
    optimizer = torch.optim.AdamW([
        {"params": list(trainable.values()), "lr": settings.lr * settings.lr_scale},
        {"params": list(head.parameters()), "lr": settings.lr},
    ], weight_decay=settings.weight_decay)
    dataset = ImageDataset(paths, augment_transform(backbone.preprocess_cfg), backbone.image_size, view=1)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    for epoch in range(settings.epochs):
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator,
                            num_workers=settings.workers, pin_memory=use_amp, drop_last=len(dataset) > settings.batch_size)
        loss_sum, seen = 0.0, 0
        for pixels, pos, ok, sizes in tqdm(loader, desc=f"stage 2 epoch {epoch + 1}/{settings.epochs}", unit="batch",
                                    dynamic_ncols=True):
            if not ok.any():
                continue
            x, y = pixels[ok].to(device), labels_t[pos[ok]].to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                features = visual(x)
            logits = head(projection(features.float(), sizes[ok].to(device)), y)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
        log(f"stage 2 epoch {epoch + 1}/{settings.epochs}  loss {loss_sum / max(seen, 1):.4f}  "
            f"({settings.blocks} blocks at lr x{settings.lr_scale})")
    visual.eval().requires_grad_(False)
    head.eval()
    return {k: v.detach().cpu().clone() for k, v in trainable.items()}


def embed_images(visual: nn.Module, projection: Projection, preprocess_cfg: dict, image_size: tuple[int, int],
                 paths: Sequence[str], device: torch.device, batch_size: int, workers: int) -> np.ndarray:
    """Embeddings through the (fine-tuned) tower, bypassing the feature cache that no longer matches it."""
    dataset = ImageDataset(paths, eval_transform(preprocess_cfg), image_size)
    out = np.zeros((len(paths), projection.dim), dtype=np.float32)
    with torch.inference_mode():
        for pixels, pos, _, sizes in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            out[pos.numpy()] = projection(visual(pixels.to(device)).float(), sizes.to(device)).cpu().numpy()
    return out
