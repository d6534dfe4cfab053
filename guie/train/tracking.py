"""Experiment tracking: Weights & Biases when asked (offline runs live in the run folder), else nothing."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


class Tracker:
    """No-op tracker, used for ``--wandb off``."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(Tracker):
    def __init__(self, mode: str, run_dir: Path, config: dict[str, Any], project: str):
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
        import wandb  # imported only when asked for: it is slow to import

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        settings = wandb.Settings(
            console="off", silent=True, x_disable_stats=True,
            # only the resolved config is logged; no code, environment or requirements snapshots
            save_code=False, x_save_requirements=False, disable_git=True,
        )
        self.run = wandb.init(project=project, dir=str(run_dir), config=config, name=run_dir.name,
                              id=run_id, resume="allow", mode=mode, settings=settings)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def finish(self) -> None:
        self.run.finish()


def start_tracking(mode: str, run_dir: Path, config: dict[str, Any], project: str = "guie") -> Tracker:
    """A tracker for ``--wandb off|offline|online``."""
    return Tracker() if mode == "off" else WandbTracker(mode, run_dir, config, project)
