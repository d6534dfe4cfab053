"""guie demo: the whole chain on the embedded data, train -> eval -> export -> package -> smoke."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from guie.artifacts import EXPORT_DIR, KERNEL_DIR, RUN_CONFIG
from guie.config import TrainConfig
from guie.errors import GuieError

DEMO_DATASET = "guie-demo/guie-tiny-digits"
DEMO_KERNEL = "guie-demo/guie-tiny-digits-inference"


def run_demo(out_dir: Path, epochs: int = 15, wandb: str = "off", log: Callable[[str], None] = print) -> None:
    """Run every stage on demo:digits into ``out_dir`` (run/, report/, export/, build/), replacing an
    earlier demo there. Raises GuieError when ``out_dir`` holds something that is not a demo."""
    out_dir = Path(out_dir)
    marker = out_dir / ".guie-demo"
    if out_dir.exists() and any(out_dir.iterdir()) and not marker.exists():
        raise GuieError(f"{str(out_dir)!r} exists and does not hold an earlier guie demo; pass another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by guie demo; rerunning the demo replaces this folder's contents\n")
    run_dir, report_dir, export_dir, build_dir = (out_dir / n for n in ("run", "report", EXPORT_DIR, "build"))

    from guie.workflows.train_eval import train_and_evaluate

    log("== 1/5 train: guie-tiny (random init) on demo:digits, 10 classes, holdout eval")
    cfg = TrainConfig(data=["demo:digits"], out=str(run_dir), backbone="guie-tiny", pretrained="none",
                      epochs=epochs, batch_size=128, lr=1e-2, scale=16.0, margin=0.2, eval="holdout",
                      wandb=wandb).validate()
    train_and_evaluate(cfg, overwrite=(run_dir / RUN_CONFIG).is_file(), log=log)

    from guie.eval.evaluate import EvalSettings, evaluate
    from guie.eval.report import format_table, write_report

    log("== 2/5 eval: mP@5 on demo:digits and demo:digits-noisy")
    report = evaluate([run_dir], ["demo:digits", "demo:digits-noisy"], EvalSettings(), log=log)
    paths = write_report(report, report_dir)
    log(format_table(report))
    log(f"report: {paths['md']}, chart {paths['png']}")

    from guie.export import export_run

    log("== 3/5 export: TorchScript submission, verified")
    export_run(run_dir, export_dir, log=log, check_torch="auto")

    from guie.ship.folders import PackageSpec, build_package

    log("== 4/5 package: Kaggle dataset and notebook folders")
    spec = PackageSpec.create(DEMO_DATASET, DEMO_KERNEL)
    build_package(export_dir, spec, build_dir, log=log)

    from guie.ship.smoke import run_smoke

    log("== 5/5 smoke: the notebook in an emulated /kaggle, submission.zip checked as the host would")
    run_smoke(build_dir, log=log)
    log(f"== done: everything is under {out_dir}/ (run/, report/, export/, build/). The kernel folder "
        f"{build_dir / KERNEL_DIR} is what `kaggle kernels push -p` takes, once --dataset/--kernel name "
        "your Kaggle account (guie-package ... --upload).")
