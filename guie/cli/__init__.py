"""Command-line entry points: the ``guie`` group and the ``guie-*`` console scripts, one module per command."""
from __future__ import annotations

import click

from guie.cli.data import data_command
from guie.cli.demo import demo_command
from guie.cli.eval import eval_command
from guie.cli.export import compat_command, export_command
from guie.cli.ship import package_command, smoke_command, submit_command
from guie.cli.train import resolve_train_config, train_command
from guie.version import __version__

__all__ = ["cli", "main", "resolve_train_config", "train_command"]


@click.group(help="guie: frozen-CLIP universal image embedders, from training to a Kaggle submission.")
@click.version_option(__version__, prog_name="guie")
def cli() -> None:
    pass


cli.add_command(train_command)
cli.add_command(demo_command)
cli.add_command(data_command)
cli.add_command(eval_command)
cli.add_command(package_command)
cli.add_command(smoke_command)
cli.add_command(submit_command)
cli.add_command(export_command)
cli.add_command(compat_command)


def main() -> None:
    cli()


def train_main() -> None:
    train_command(prog_name="guie-train")


def demo_main() -> None:
    demo_command(prog_name="guie-demo")


def data_main() -> None:
    data_command(prog_name="guie-data")


def eval_main() -> None:
    eval_command(prog_name="guie-eval")


def package_main() -> None:
    package_command(prog_name="guie-package")


def export_main() -> None:
    export_command(prog_name="guie-export")


def smoke_main() -> None:
    smoke_command(prog_name="guie-smoke")


def submit_main() -> None:
    submit_command(prog_name="guie-submit")


def compat_main() -> None:
    compat_command(prog_name="guie-compat")
