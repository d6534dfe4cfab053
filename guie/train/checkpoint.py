"""The training checkpoint: one dict (projection, head, optimizer, scheduler, epoch, metrics), written in one place."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from guie.artifacts import RUN_CHECKPOINT
from guie.errors import GuieError
from guie.fileio import torch_save


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write checkpoint.pt atomically: a kill mid-write leaves the previous checkpoint intact."""
    torch_save(state, run_dir / RUN_CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of a run folder, or None when training had not finished an epoch."""
    path = run_dir / RUN_CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise GuieError(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}); delete it to "
                        "restart training from the cached features, or use --overwrite") from None
