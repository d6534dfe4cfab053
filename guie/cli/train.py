"""guie-train: the command and how its options meet the config file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from guie.artifacts import RUN_CONFIG, SWEEP_CONFIG
from guie.cli.common import config_options, echo, friendly_errors
from guie.config import (
    TrainConfig,
    build_config,
    config_fields,
    parse_class_counts,
    read_config_file,
)
from guie.errors import GuieError


def command_line_values(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user actually typed, so they override the config file and nothing else."""
    out = {}
    for name in config_fields():
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = params[name]
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def resolve_train_config(ctx: click.Context, params: dict[str, Any], config_file: str | None,
                         resume: bool) -> tuple[TrainConfig, list[int] | None]:
    """Defaults < --config file < command line; with --resume, the run folder's own config.json.

    Returns the config and, for a class-count sweep (``--classes 1000,2000``), the counts.
    """
    cli_values = command_line_values(ctx, params)
    if resume:
        from guie.train.run_folder import sweep_started, training_started

        if not cli_values.get("out"):
            raise GuieError("--resume needs --out RUN, the run folder to continue")
        out = Path(cli_values["out"])
        is_sweep = (out / SWEEP_CONFIG).is_file()
        stored = out / SWEEP_CONFIG if is_sweep else out / RUN_CONFIG
        if not stored.is_file():
            raise GuieError(f"cannot resume: {str(out)!r} has no {RUN_CONFIG}; start a new run without --resume")
        saved = json.loads(stored.read_text())
        counts = saved.pop("sweep_classes", None)
        fields = config_fields()
        values = {k: v for k, v in saved.items() if k in fields}
        if sweep_started(out) if is_sweep else training_started(out):
            # A resumed run keeps its recipe; only the length of training may be extended.
            ignored = sorted(k for k in cli_values if k not in ("out", "epochs") and cli_values[k] != values.get(k))
            if ignored:
                echo(f"note: --resume uses the run's saved config; ignoring {', '.join(ignored)}", err=True)
            values.update({k: cli_values[k] for k in ("out", "epochs") if k in cli_values})
        else:
            # Training never started, so there is nothing to keep: the options given replace the saved ones.
            changed = sorted(k for k in cli_values if k != "out" and cli_values[k] != values.get(k))
            if changed:
                echo(f"note: {out} never started training; --resume starts it again with the saved config "
                           f"and the new {', '.join(changed)}", err=True)
            values.update(cli_values)
            if "classes" in cli_values:
                counts = parse_class_counts(cli_values["classes"])
                values["classes"] = counts[0] if counts and len(counts) == 1 else None
                counts = counts if counts and len(counts) > 1 else None
        return TrainConfig(**values).validate(), counts
    file_values = read_config_file(config_file) if config_file else {}
    values = {**file_values, **cli_values}
    counts = parse_class_counts(values.get("classes"))
    values["classes"] = counts[0] if counts and len(counts) == 1 else None
    cfg = build_config({}, values).validate()
    return cfg, counts if counts and len(counts) > 1 else None


TRAIN_HELP = """Train a 64-D embedding head on frozen image-tower features (open_clip, hf-hub:, local-dir: or timm:).

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
    cfg, sweep = resolve_train_config(ctx, params, config_file, resume)
    if sweep:
        from guie.workflows.sweep import run_sweep  # heavy imports only once the options are valid

        run_sweep(cfg, sweep, resume=resume, overwrite=overwrite, log=echo)
        return
    from guie.workflows.train_eval import train_and_evaluate

    train_and_evaluate(cfg, resume=resume, overwrite=overwrite, log=echo)
