"""guie-train with ``--eval TASKS``: a training run, then guie-eval on its model, into the same run folder.

Training does not import evaluation; this layer hands :func:`evaluate_tasks` to
:func:`guie.train.run.run_training` as its ``task_eval`` hook. Every way of training (the
guie-train command, ``python -m guie.train`` under torchrun, the sweep, the demo) goes through
:func:`train_and_evaluate`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from guie.config import TrainConfig
from guie.model.backbone import Backbone, BackboneSpec, load_backbone
from guie.train.run import RunResult, run_training


def evaluate_tasks(model: Path, cfg: TrainConfig, device: str,
                   log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """guie-eval on the finished ``model`` for the --eval task specs of ``cfg``, reading the run's feature
    cache (--cache-dir) for the images training already embedded; logs the mean mP@5.

    Returns the evaluation report (guie.eval.evaluate's keys; eval.json's "tasks") and the tracker
    summary ``{"eval/<task>/mP@5": value}``. A run tracked by W&B (``--wandb offline|online``) also gets
    the retrieval gallery in its folder (RUN/gallery/, guie.eval.gallery) and each task's picture of
    it in the summary as ``eval/<task>/gallery`` (a wandb.Image). Raises GuieError as guie-eval does for
    a bad task.
    """
    from guie.eval.evaluate import EvalSettings, evaluate

    retrievals: list | None = [] if cfg.wandb != "off" else None
    report = evaluate([model], cfg.eval_tasks, EvalSettings(seed=cfg.seed, batch_size=cfg.extract_batch_size,
                                                            workers=cfg.workers, device=device,
                                                            cache_dir=cfg.cache_dir), log=log,
                      retrievals=retrievals)
    mean = report["mean"][0]
    log(f"mP@5 {mean['mP@5']:.4f} mean over {mean['tasks']} eval tasks ("
        + ", ".join(f"{r['task']} {r['mP@5']:.4f}" for r in report["results"]) + ")")
    summary: dict[str, Any] = {f"eval/{r['task']}/mP@5": r["mP@5"] for r in report["results"]}
    if retrievals is not None:
        import wandb  # imported only for a tracked run: it is slow to import

        from guie.eval.gallery import DEFAULT_ROWS, attach_gallery

        index = attach_gallery(report, retrievals, model.parent, DEFAULT_ROWS, cfg.seed)
        log(f"gallery: {index} (also in the W&B run, eval/<task>/gallery)")
        for task in report["gallery"]["tasks"]:
            summary[f"eval/{task['task']}/gallery"] = wandb.Image(
                str(index.parent / task["png"]), caption=f"{task['task']}: the first rows of the gallery")
    return report, summary


def train_and_evaluate(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                       log: Callable[[str], None] = print,
                       backbone_loader: Callable[[BackboneSpec, torch.device], Backbone] = load_backbone
                       ) -> RunResult:
    """:func:`guie.train.run.run_training` with the --eval task specs evaluated on the finished model
    (eval.json's "tasks", ``eval/<task>/mP@5`` in the tracker summary); arguments as there."""
    return run_training(cfg, resume=resume, overwrite=overwrite, log=log, backbone_loader=backbone_loader,
                        task_eval=evaluate_tasks)
