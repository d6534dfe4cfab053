"""guie demo: the whole chain on the embedded data."""
from __future__ import annotations

from pathlib import Path

import click

from guie.cli.common import echo, friendly_errors

DEMO_HELP = """Run the whole chain offline on the embedded demo data (handwritten digits, tiny model).

Train guie-tiny (random init) on demo:digits with a holdout eval, evaluate it with guie-eval
on two tasks (demo:digits and demo:digits-noisy) and write the retrieval gallery
(OUT/report/gallery/index.html), export the TorchScript submission and verify it here and in
torch 1.11.0, the GUIE host's (its environment is built once, about 30 s, in
~/.cache/guie/torch-envs), build the Kaggle dataset and notebook folders, and smoke-test them
as the host would. Writes everything under OUT (default: ./guie-demo), replacing an earlier
demo there, and prints each stage's result and where its files are.
"""


@click.command("demo", help=DEMO_HELP)
@click.option("--out", default="guie-demo", show_default=True, type=click.Path(file_okay=False),
              help="folder for the demo's run, report, export and Kaggle build (an earlier demo there is replaced)")
@click.option("--epochs", default=15, show_default=True, help="head training epochs")
@click.option("--wandb", type=click.Choice(["off", "offline"]), default="off", show_default=True,
              help="log the training run to W&B offline, inside the run folder")
@click.option("--no-compat", is_flag=True,
              help="skip the torch 1.11.0 check of the export (no environment built; a quicker first run)")
@friendly_errors
def demo_command(out: str, epochs: int, wandb: str, no_compat: bool) -> None:
    from guie.workflows.demo import run_demo

    run_demo(Path(out), epochs=epochs, wandb=wandb, log=echo, compat=not no_compat)
