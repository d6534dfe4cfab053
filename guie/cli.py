"""Command-line entry points: the ``guie`` group and the ``guie-*`` console scripts."""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from guie.config import TrainConfig, build_config, config_fields, read_config_file
from guie.errors import GuieError
from guie.version import __version__


def friendly_errors(fn: Callable) -> Callable:
    """Turn GuieError into one 'error: ...' line and exit 2; Ctrl-C into a resume hint and exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GuieError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; finished work is kept (rerun with --resume to continue)", err=True)
            sys.exit(130)

    return wrapper


def config_options(fn: Callable) -> Callable:
    """One click option per TrainConfig field, named --kebab-case, help text from the field."""
    for f in reversed(list(config_fields().values())):
        name = "--" + f.name.replace("_", "-")
        meta = f.metadata
        type_str = str(f.type).replace(" | None", "")
        kwargs: dict[str, Any] = {"help": meta.get("help", ""), "show_default": True}
        if meta.get("multiple"):
            kwargs.update(multiple=True, default=(), show_default=False)
        elif type_str == "bool":
            name = f"{name}/--no-{f.name.replace('_', '-')}"
            kwargs["default"] = f.default
        else:
            kwargs["type"] = click.Choice(meta["choices"]) if "choices" in meta else \
                {"int": int, "float": float, "str": str}[type_str]
            kwargs["default"] = f.default
        fn = click.option(name, f.name, **kwargs)(fn)
    return fn


def command_line_values(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user actually typed, so they override the config file and nothing else."""
    out = {}
    for name in config_fields():
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = params[name]
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def resolve_train_config(ctx: click.Context, params: dict[str, Any], config_file: str | None,
                         resume: bool) -> TrainConfig:
    """Defaults < --config file < command line; with --resume, the run folder's own config.json."""
    cli_values = command_line_values(ctx, params)
    if resume:
        if not cli_values.get("out"):
            raise GuieError("--resume needs --out RUN, the run folder to continue")
        stored = Path(cli_values["out"]) / "config.json"
        if not stored.is_file():
            raise GuieError(f"cannot resume: {str(stored.parent)!r} has no config.json; start a new run without --resume")
        saved = json.loads(stored.read_text())
        fields = config_fields()
        values = {k: v for k, v in saved.items() if k in fields}
        # A resumed run keeps its recipe; only the length of training may be extended.
        ignored = sorted(k for k in cli_values if k not in ("out", "epochs") and cli_values[k] != values.get(k))
        if ignored:
            click.echo(f"note: --resume uses the run's saved config; ignoring {', '.join(ignored)}", err=True)
        values.update({k: cli_values[k] for k in ("out", "epochs") if k in cli_values})
        return TrainConfig(**values).validate()
    file_values = read_config_file(config_file) if config_file else {}
    return build_config(file_values, cli_values).validate()


TRAIN_HELP = """Train a 64-D embedding head on frozen open_clip features.

Features are extracted once per image and cached; reruns, sweeps and resumed runs reuse
them. Example, the recipe of the GUIE seed solution:

\b
  guie-train --data products10k:/data/p10k --data gldv2:/data/gldv2 \\
      --backbone ViT-H-14 --pretrained laion2b_s32b_b79k --classes 4000 \\
      --epochs 10 --eval holdout --out runs/vith-4000

Options can also come from a TOML file (--config), which the command line overrides.
"""


@click.command("train", help=TRAIN_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with any of the options below")
@click.option("--resume", is_flag=True, help="continue a killed run in --out from its last checkpoint")
@click.option("--overwrite", is_flag=True, help="replace an existing run folder in --out")
@config_options
@click.pass_context
@friendly_errors
def train_command(ctx: click.Context, config_file: str | None, resume: bool, overwrite: bool, **params: Any) -> None:
    if resume and overwrite:
        raise GuieError("--resume and --overwrite contradict each other; pass one")
    cfg = resolve_train_config(ctx, params, config_file, resume)
    from guie.train.run import run_training  # heavy imports only once the options are valid

    run_training(cfg, resume=resume, overwrite=overwrite, log=click.echo)


DEMO_HELP = """Run the whole chain offline on the embedded demo data (handwritten digits, tiny model).

Writes everything under OUT (default: ./guie-demo) and prints each stage's result.
"""


@click.command("demo", help=DEMO_HELP)
@click.option("--out", default="guie-demo", show_default=True, type=click.Path(file_okay=False),
              help="folder for the demo's run and reports (replaced if it holds an earlier demo)")
@click.option("--epochs", default=15, show_default=True, help="head training epochs")
@friendly_errors
def demo_command(out: str, epochs: int) -> None:
    from guie.train.run import run_training

    out_dir = Path(out)
    click.echo("== train: guie-tiny (random init) on demo:digits, 10 classes, holdout eval")
    cfg = TrainConfig(data=["demo:digits"], out=str(out_dir / "run"), backbone="guie-tiny", pretrained="none",
                      epochs=epochs, batch_size=128, lr=1e-2, scale=16.0, margin=0.2,
                      eval="holdout").validate()
    existing = (out_dir / "run" / "config.json").is_file()
    run_training(cfg, overwrite=existing, log=click.echo)
    click.echo(f"== done: run folder {out_dir / 'run'}")


@click.group(help="guie: frozen-CLIP universal image embedders, from training to a Kaggle submission.")
@click.version_option(__version__, prog_name="guie")
def cli() -> None:
    pass


cli.add_command(train_command)
cli.add_command(demo_command)


def main() -> None:
    cli()


def train_main() -> None:
    train_command(prog_name="guie-train")


def demo_main() -> None:
    demo_command(prog_name="guie-demo")


if __name__ == "__main__":
    main()
