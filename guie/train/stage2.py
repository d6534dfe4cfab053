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

from guie.errors import GuieError
from guie.features.forward import decode_workers, forward_images, image_dataset, tower_autocast
from guie.model.backbone import Backbone
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
    workers: int | None  # DataLoader workers; None: the default decode workers


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
    dataset = image_dataset(backbone, paths, view=1)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    for epoch in range(settings.epochs):
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator,
                            num_workers=decode_workers(settings.workers), pin_memory=device.type == "cuda",
                            drop_last=len(dataset) > settings.batch_size)
        loss_sum, seen = 0.0, 0
        for pixels, pos, ok, sizes in tqdm(loader, desc=f"stage 2 epoch {epoch + 1}/{settings.epochs}", unit="batch",
                                    dynamic_ncols=True):
            if not ok.any():
                continue
            x, y = pixels[ok].to(device), labels_t[pos[ok]].to(device)
            with tower_autocast(device):
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


def embed_through_finetuned_tower(backbone: Backbone, projection: Projection, paths: Sequence[str],
                                  device: torch.device, batch_size: int, workers: int | None) -> np.ndarray:
    """Embeddings ``(len(paths), projection.dim)`` float32 of ``paths`` streamed through ``backbone``'s
    fine-tuned tower and ``projection`` (the feature cache predates the fine-tuned blocks), under
    its eval transform; zero rows for unreadable images. ``workers`` None: the default decode workers."""
    out = np.zeros((len(paths), projection.dim), dtype=np.float32)
    for batch in forward_images(backbone, paths, device, batch_size, workers):
        if len(batch.positions):
            with torch.inference_mode():
                out[batch.positions] = projection(batch.features, batch.sizes.to(device)).cpu().numpy()
    return out
