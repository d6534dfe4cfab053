"""guie-data: what data sources hold."""
from __future__ import annotations

import json

import click

from guie.cli.common import echo, friendly_errors
from guie.errors import GuieError

DATA_HELP = """Show what data source specs hold: images, classes, splits, domains, and skipped rows with reasons.

Each SPEC is PREFIX:PATH, the dataset as published (no converted copy). Examples:

\b
  guie-data sop:/data/Stanford_Online_Products food101:/data/food-101
  guie-data --json products10k:/data/products10k gldv2:/data/gldv2
"""


def _prefix_list() -> str:
    from guie.data import source_prefixes

    return "\n".join(f"  {p}:PATH  {h}" for p, h in source_prefixes().items())


@click.command("data", help=DATA_HELP, epilog="Prefixes: see `guie-data --prefixes`.")
@click.argument("specs", nargs=-1, metavar="SPEC...")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
@click.option("--prefixes", is_flag=True, help="list the source prefixes and exit")
@friendly_errors
def data_command(specs: tuple[str, ...], as_json: bool, prefixes: bool) -> None:
    if prefixes:
        echo(_prefix_list())
        return
    if not specs:
        raise GuieError("no data source given; pass SPEC... such as sop:/data/Stanford_Online_Products "
                        "(guie-data --prefixes lists the prefixes)")
    from guie.data import load_source
    from guie.data.summary import format_summary, summarize_source

    summaries = [summarize_source(load_source(spec)) for spec in specs]
    if as_json:
        echo(json.dumps({"sources": summaries}, indent=2))
    else:
        echo("\n\n".join(format_summary(s) for s in summaries))
