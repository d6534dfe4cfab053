"""Shared pieces of the guie commands: one-line errors, config-driven options."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from guie.config import config_fields
from guie.errors import GuieError
from guie.fileio import OutOfSpace, space_problem, written_file
from guie.fsnames import display_text


def echo(message: object = "", err: bool = False) -> None:
    """Print one message line (stderr with ``err``) whatever the stream's encoding and error handler: a file
    name with undecodable bytes (``caf\\xe9`` on disk) shows as ``caf\\xe9``, also inside a ``repr`` quote,
    rather than raising UnicodeEncodeError under a strict UTF-8 stdout. Every guie command prints through this."""
    click.echo(display_text(str(message)), err=err)


def friendly_errors(fn: Callable) -> Callable:
    """Turn GuieError into one 'error: ...' line and exit 2 (1 for OutOfSpace); Ctrl-C into a resume hint and
    exit 130; an OSError into one line and exit 1 (a full disk or quota named as such, with its folder)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GuieError as exc:
            echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            echo("interrupted; finished work is kept (rerun with --resume to continue)", err=True)
            sys.exit(130)
        except OSError as exc:
            # Permissions, vanished files, a full disk no writer named: files already written stay whole.
            problem, named = space_problem(exc), written_file(exc)
            if problem and named:
                echo(f"error: {OutOfSpace(Path(named).parent, problem)}", err=True)
                sys.exit(OutOfSpace.exit_code)
            where = f" ({exc.filename})" if exc.filename else ""
            echo(f"error: {problem or exc.strerror or exc}{where}; free disk space or fix permissions, then rerun "
                 "(add --resume to continue a training run)", err=True)
            sys.exit(1)

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
                {"int": int, "float": float, "str": str}[meta.get("cli_type", type_str)]
            kwargs["default"] = f.default
        fn = click.option(name, f.name, **kwargs)(fn)
    return fn
