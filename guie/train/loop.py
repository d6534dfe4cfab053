"""The head training loop over cached features: plain, top to bottom, deterministic per (seed, epoch)."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from guie.artifacts import RUN_METRICS
from guie.distributed import DistContext
from guie.features.cache import FeatureTable
from guie.fileio import write_text
from guie.model.heads import MarginHead, margin_at_epoch
from guie.model.projection import Projection
from guie.train.checkpoint import save_checkpoint
from guie.train.tracking import Tracker


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup: float
    seed: int
    ema: float | None = None
    margin_schedule: tuple[float, float, float] | None = None
    domain_loss: float = 0.0


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class TrainOutcome:
    """Per-epoch metrics, and with --ema the raw (non-averaged) final weights."""

    history: list[dict[str, Any]]
    raw_weights: dict[str, dict[str, torch.Tensor]] | None = None


class HeadModel(torch.nn.Module):
    """Projection + margin head as one module, so DistributedDataParallel can wrap them together."""

    def __init__(self, projection: Projection, head: MarginHead, domain_head: torch.nn.Module | None = None):
        super().__init__()
        self.projection, self.head, self.domain_head = projection, head, domain_head

    def forward(self, features: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        embeddings = self.projection(features, sizes)
        domain_logits = self.domain_head(embeddings) if self.domain_head is not None else None
        return embeddings, self.head(embeddings, labels), domain_logits


def gather(views: list[FeatureTable], index: np.ndarray, view_choice: np.ndarray) -> np.ndarray:
    """Feature rows of ``index``, each from the view chosen for it."""
    out = np.empty((len(index), views[0].dim), dtype=np.float32)
    for v in np.unique(view_choice):
        sel = view_choice == v
        out[sel] = views[v].get(index[sel])
    return out


def train_head(views: list[FeatureTable], train_index: np.ndarray, labels: np.ndarray,
               projection: Projection, head: MarginHead, settings: LoopSettings, run_dir: Path,
               device: torch.device, tracker: Tracker, resume_state: dict[str, Any] | None = None,
               extra_state: dict[str, Any] | None = None, log: Callable[[str], None] = print,
               dist: DistContext | None = None, domain_head: torch.nn.Module | None = None,
               domain_labels: np.ndarray | None = None, sizes: np.ndarray | None = None) -> TrainOutcome:
    """Train projection + head with AdamW and a cosine schedule; checkpoint and log every epoch.

    Each epoch's shuffle, view choice and dropout draw from seeds derived from (seed, epoch),
    so a run resumed from its checkpoint ends with the same weights as an uninterrupted one.
    Under torchrun every rank walks the same global batches and takes every world-th row of
    each; DistributedDataParallel averages the gradients, so the update is the single-process
    one up to float rounding (BatchNorm statistics stay per rank). Rank 0 writes the files.
    With ``domain_head``, an auxiliary domain classifier on the embedding adds
    ``settings.domain_loss`` times its cross-entropy (the seed's unified multi-domain mode).
    ``sizes`` (per record, original height and width) feed a projection with size features;
    every view of an image shares its original size.
    """
    dist = dist or DistContext()
    projection.to(device)
    head.to(device)
    if domain_head is not None:
        domain_head.to(device)
    model: torch.nn.Module = HeadModel(projection, head, domain_head)
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    base = model.module if dist.enabled else model
    # The seed's weight averaging: an EMA copy (BatchNorm buffers included) used for eval and export.
    ema = (torch.optim.swa_utils.AveragedModel(
        base, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema), use_buffers=True)
        if settings.ema else None)
    params = list(base.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_index) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total, max(1, int(settings.warmup * total))))
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    domains_t = torch.as_tensor(domain_labels if domain_labels is not None else np.zeros(len(labels)),
                                dtype=torch.long)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume_state is not None:
        projection.load_state_dict(resume_state["projection"])
        head.load_state_dict(resume_state["head"])
        if domain_head is not None:
            domain_head.load_state_dict(resume_state["domain_head"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if ema is not None:
            ema.load_state_dict(resume_state["ema"])
        history = list(resume_state["metrics"])
        start_epoch = int(resume_state["epoch"])
        log(f"resuming after epoch {start_epoch} of {settings.epochs}")

    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        projection.train()
        head.train()
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(train_index)
        view_choice = rng.integers(0, len(views), size=len(order))
        torch.manual_seed(settings.seed * 100_003 + epoch)
        head.margin = margin_at_epoch(settings.margin_schedule, head.margin, epoch)
        loss_sum, correct, seen, domain_correct = 0.0, 0, 0, 0
        min_rows = dist.world * (2 if projection.use_batchnorm else 1)  # BatchNorm needs 2 rows per rank
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            if len(idx) < min_rows:
                continue  # the same decision on every rank, so no rank waits on a missing gradient
            chosen = view_choice[start:start + len(idx)]
            idx, chosen = idx[dist.rank::dist.world], chosen[dist.rank::dist.world]
            x = torch.from_numpy(gather(views, idx, chosen)).to(device)
            y = labels_t[idx].to(device)
            s = torch.from_numpy(sizes[idx]).to(device) if sizes is not None else None
            embeddings, logits, domain_logits = model(x, y, s)
            loss = F.cross_entropy(logits, y)
            if domain_logits is not None:
                d = domains_t[idx].to(device)
                loss = loss + settings.domain_loss * F.cross_entropy(domain_logits, d)
                domain_correct += int((domain_logits.argmax(1) == d).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(base)
            loss_sum += loss.item() * len(idx)
            with torch.no_grad():
                correct += int((head.cosine(embeddings).argmax(1) == y).sum())
            seen += len(idx)
        loss_sum, correct, seen, domain_correct = dist.sum(
            [loss_sum, float(correct), float(seen), float(domain_correct)])
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
               "lr": scheduler.get_last_lr()[0], "margin": head.margin, "seconds": round(seconds, 4),
               "samples_per_s": round(seen / max(seconds, 1e-9), 1),
               **({"domain_acc": domain_correct / max(seen, 1)} if domain_head is not None else {})}
        history.append(row)
        if not dist.is_main:
            continue
        log(f"epoch {row['epoch']}/{settings.epochs}  loss {row['loss']:.4f}  acc {row['train_acc']:.3f}  "
            f"lr {row['lr']:.2e}  {row['samples_per_s']:.0f} samples/s")
        save_checkpoint(run_dir, {
            "projection": projection.state_dict(), "head": head.state_dict(),
            **({"domain_head": domain_head.state_dict()} if domain_head is not None else {}),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1, "metrics": history, **({"ema": ema.state_dict()} if ema is not None else {}),
            **(extra_state or {}),
        })
        write_text(run_dir / RUN_METRICS, "".join(json.dumps(r) + "\n" for r in history))
        tracker.log(row, step=epoch + 1)
    dist.barrier()
    if ema is not None:
        # Training ends with the averaged weights in place: eval and model.pt use them.
        raw = {"projection": {k: v.clone() for k, v in projection.state_dict().items()},
               "head": {k: v.clone() for k, v in head.state_dict().items()}}
        projection.load_state_dict(ema.module.projection.state_dict())
        head.load_state_dict(ema.module.head.state_dict())
    else:
        raw = None
    projection.eval()
    head.eval()
    return TrainOutcome(history, raw)
