"""guie demo: the whole chain on the embedded data."""
from __future__ import annotations

from pathlib import Path

import click

from guie.cli.common import friendly_errors
from guie.config import (
    TrainConfig,
)
from guie.errors import GuieError

DEMO_HELP = """Run the whole chain offline on the embedded demo data (handwritten digits, tiny model).

Train guie-tiny (random init) on demo:digits with a holdout eval, evaluate it with guie-eval
on two tasks (demo:digits and demo:digits-noisy), export and verify the TorchScript
submission, build the Kaggle dataset and notebook folders, and smoke-test them as the host
would. Writes everything under OUT (default: ./guie-demo), replacing an earlier demo there,
and prints each stage's result and where its files are.
"""

DEMO_DATASET = "guie-demo/guie-tiny-digits"
DEMO_KERNEL = "guie-demo/guie-tiny-digits-inference"


@click.command("demo", help=DEMO_HELP)
@click.option("--out", default="guie-demo", show_default=True, type=click.Path(file_okay=False),
              help="folder for the demo's run, report, export and Kaggle build (an earlier demo there is replaced)")
@click.option("--epochs", default=15, show_default=True, help="head training epochs")
@click.option("--wandb", type=click.Choice(["off", "offline"]), default="off", show_default=True,
              help="log the training run to W&B offline, inside the run folder")
@friendly_errors
def demo_command(out: str, epochs: int, wandb: str) -> None:
    out_dir = Path(out)
    marker = out_dir / ".guie-demo"
    if out_dir.exists() and any(out_dir.iterdir()) and not marker.exists():
        raise GuieError(f"{out!r} exists and does not hold an earlier guie demo; pass another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by guie demo; rerunning the demo replaces this folder's contents\n")
    run_dir, report_dir, export_dir, build_dir = (out_dir / n for n in ("run", "report", "export", "build"))

    from guie.train.run import run_training

    click.echo("== 1/5 train: guie-tiny (random init) on demo:digits, 10 classes, holdout eval")
    cfg = TrainConfig(data=["demo:digits"], out=str(run_dir), backbone="guie-tiny", pretrained="none",
                      epochs=epochs, batch_size=128, lr=1e-2, scale=16.0, margin=0.2, eval="holdout",
                      wandb=wandb).validate()
    run_training(cfg, overwrite=(run_dir / "config.json").is_file(), log=click.echo)

    from guie.eval.evaluate import EvalSettings, evaluate
    from guie.eval.report import format_table, write_report

    click.echo("== 2/5 eval: mP@5 on demo:digits and demo:digits-noisy")
    report = evaluate([run_dir], ["demo:digits", "demo:digits-noisy"], EvalSettings(), log=click.echo)
    paths = write_report(report, report_dir)
    click.echo(format_table(report))
    click.echo(f"report: {paths['md']}, chart {paths['png']}")

    from guie.export import export_run

    click.echo("== 3/5 export: TorchScript submission, verified")
    export_run(run_dir, export_dir, log=click.echo, check_torch="auto")

    from guie.submission.folders import PackageSpec, build_package

    click.echo("== 4/5 package: Kaggle dataset and notebook folders")
    spec = PackageSpec.create(DEMO_DATASET, DEMO_KERNEL)
    build_package(export_dir, spec, build_dir, log=click.echo)

    from guie.submission.smoke import run_smoke

    click.echo("== 5/5 smoke: the notebook in an emulated /kaggle, submission.zip checked as the host would")
    run_smoke(build_dir, log=click.echo)
    click.echo(f"== done: everything is under {out_dir}/ (run/, report/, export/, build/). The kernel folder "
               f"{build_dir / 'kernel'} is what `kaggle kernels push -p` takes, once --dataset/--kernel name "
               "your Kaggle account (guie-package ... --upload).")
