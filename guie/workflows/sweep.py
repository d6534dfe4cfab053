"""Class-count sweeps: one feature cache, one run folder per --classes value, one comparison report.

The seed solution's class-count study (1,000 to 8,000 classes in 64-D) took a GPU-day per
point; with the backbone frozen and its features cached, each point costs a head training.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from guie.artifacts import RUN_CONFIG, RUN_MODEL, SWEEP_CONFIG, SWEEP_REPORT_DIR, SWEEP_RUN_PREFIX
from guie.config import TrainConfig
from guie.errors import GuieError
from guie.fileio import write_json
from guie.train.run_folder import sweep_started
from guie.workflows.train_eval import train_and_evaluate


def run_sweep(cfg: TrainConfig, counts: list[int], resume: bool = False, overwrite: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``OUT/classes-N`` for each N, then evaluate them side by side into ``OUT/report``.

    The comparison uses the --eval task specs when given, else the training sources
    themselves as tasks (query/index drawn by guie-eval's seeded rule): every run is then
    scored on the same images, including classes the smaller runs never trained on.
    With --resume, finished runs are kept, a killed one continues, missing ones start.
    """
    out = Path(cfg.out)
    sweep_file = out / SWEEP_CONFIG
    if sweep_file.exists() and not (resume or overwrite) and sweep_started(out):
        raise GuieError(f"sweep folder {str(out)!r} already exists; pass --resume to continue it, "
                        "--overwrite to replace its runs, or another --out")
    if out.exists() and not out.is_dir():
        raise GuieError(f"sweep folder {str(out)!r} is a file; pass another --out")
    # Each run reads and checks the data before it creates its folder; a sweep none of whose runs
    # started training is rerun from the start by the next command.
    write_json(sweep_file, {**cfg.to_dict(), "sweep_classes": counts})
    runs = []
    for n in counts:
        sub = replace(cfg, classes=n, out=str(out / f"{SWEEP_RUN_PREFIX}{n}"))
        run_dir = Path(sub.out)
        log(f"== sweep: --classes {n} -> {run_dir}")
        if resume and (run_dir / RUN_MODEL).is_file():
            log("finished earlier; kept")
        else:
            train_and_evaluate(sub, resume=resume and (run_dir / RUN_CONFIG).is_file(), overwrite=overwrite, log=log)
        runs.append(run_dir)

    from guie.eval.evaluate import EvalSettings, evaluate
    from guie.eval.report import format_table, write_report

    tasks = cfg.eval_tasks or cfg.data
    log(f"== sweep report on {', '.join(tasks)}")
    report = evaluate(runs, tasks, EvalSettings(seed=cfg.seed, batch_size=cfg.extract_batch_size,
                                                 workers=cfg.workers, cache_dir=cfg.cache_dir), log=log)
    paths = write_report(report, out / SWEEP_REPORT_DIR)
    log(format_table(report))
    log(f"sweep report: {paths['md']} (chart {paths['png']})")
    return report
