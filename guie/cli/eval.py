"""guie-eval: retrieval evaluation of models on tasks."""
from __future__ import annotations

import click

from guie.cli.common import echo, friendly_errors
from guie.errors import GuieError

EVAL_HELP = """Evaluate models on retrieval tasks: mP@5 as the competition host computed it, P@1, mAP@5.

MODEL is a guie-train run folder (or its model.pt), a TorchScript saved_model.pt, or a
submission.zip; several models give one comparison table and chart. Each --task is a data
source spec; its queries and index come from the dataset's own split where it has one
(DeepFashion query/gallery, The Met queries/database), else from a seeded per-class split
of its test split (SOP, Food-101, Products-10K, ObjectNet) or of all its images. A uned:ROOT
task follows the UnED benchmark's protocol (8 domains, fixed queries and index; separate and
common index; mMP@5 and R@1). Exact k-NN (faiss, or torch on CUDA; k=5) on L2-normalised
embeddings. Run folders read their backbone's features from guie-train's feature cache and
compute only the missing images; under torchrun (python -m guie.eval) every rank computes its
share and rank 0 scores. Examples:

\b
  guie-eval runs/vith-4000 --task sop:/data/Stanford_Online_Products \\
      --task food101:/data/food-101 --out reports/vith-4000
  guie-eval runs/vith-4000 --task uned:/data/uned --out reports/vith-4000-uned
"""


@click.command("eval", help=EVAL_HELP)
@click.argument("models", nargs=-1, required=True, metavar="MODEL...", type=click.Path(exists=True))
@click.option("--task", "tasks", multiple=True, required=True, metavar="SPEC",
              help="retrieval task PREFIX:PATH, repeatable (see guie-data --prefixes)")
@click.option("--out", type=click.Path(file_okay=False),
              help="write report.json, report.csv, report.md and report.png (bar chart) here")
@click.option("--seed", default=0, show_default=True, help="seed of the query/index split and of samples")
@click.option("--query-frac", default=0.2, show_default=True,
              help="share of each class's images used as queries, where the dataset has no query split")
@click.option("--max-classes", type=int, help="evaluate on a seeded sample of this many classes per task")
@click.option("--max-queries", type=int, help="keep a seeded sample of this many queries per task (per domain on "
              "UnED)")
@click.option("--distractors", default=0, show_default=True,
              help="add this many seeded images of never-queried classes to each task's index (the host's index "
              "was mostly images unrelated to any query)")
@click.option("--task-weights", metavar="TASK=W,...",
              help="weight the task mean, e.g. like the host's domain mix (every task needs a weight)")
@click.option("--uned-split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="the UnED split whose protocol uned: tasks follow")
@click.option("--leaderboard", is_flag=True,
              help="add each model's latest Kaggle score (leaderboard.jsonl beside it, from guie-submit) and the "
              "Spearman/Pearson correlation of mP@5 with it, per task and for the mean")
@click.option("--gallery", type=int, metavar="N",
              help="also write OUT/gallery/: per task and model the N queries with the lowest mP@5 and N random "
              "ones, each with every model's top 5 (index.html to open in a browser, a PNG per task)")
@click.option("--batch-size", default=64, show_default=True, help="images per forward (run folders)")
@click.option("--workers", type=int, help="DataLoader workers for decoding (default: cores - 1, at most 8)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when present (with autocast), else CPU")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="feature cache folder of run folders' backbones, as guie-train's --cache-dir "
              "(default $GUIE_CACHE/features or ~/.cache/guie/features)")
@friendly_errors
def eval_command(models: tuple[str, ...], tasks: tuple[str, ...], out: str | None, seed: int, query_frac: float,
                 max_classes: int | None, max_queries: int | None, distractors: int, task_weights: str | None,
                 uned_split: str, leaderboard: bool, gallery: int | None, batch_size: int, workers: int | None,
                 device: str, cache_dir: str | None) -> None:
    if batch_size < 1:
        raise GuieError("--batch-size must be at least 1")
    if gallery is not None and gallery < 1:
        raise GuieError(f"--gallery must be at least 1 (queries per section), got {gallery}")
    if gallery is not None and not out:
        raise GuieError("--gallery writes its pages under --out; add --out FOLDER")
    from guie.distributed import init_distributed, shutdown
    from guie.eval.evaluate import EvalSettings, evaluate, parse_task_weights
    from guie.eval.report import format_table, write_report

    settings = EvalSettings(seed, query_frac, max_classes, max_queries, batch_size, workers, device, distractors,
                            parse_task_weights(task_weights), uned_split=uned_split, cache_dir=cache_dir)
    retrievals: list | None = [] if gallery else None
    dist = init_distributed()  # a world of one without torchrun
    try:
        log = (lambda line: echo(line, err=True)) if dist.is_main else (lambda _: None)
        report = evaluate(list(models), list(tasks), settings, log=log, dist=dist, retrievals=retrievals)
    finally:
        shutdown(dist)
    if report is None:  # a torchrun rank other than 0: its share of the features is cached; rank 0 reports
        return
    if leaderboard:
        from guie.eval.cv_vs_leaderboard import attach_leaderboard

        attach_leaderboard(report)
    echo(format_table(report))
    if out:
        index = None
        if gallery:
            from guie.eval.gallery import attach_gallery

            index = attach_gallery(report, retrievals, out, gallery, seed)
        paths = write_report(report, out)
        echo(f"report: {paths['json']}, {paths['csv'].name}, {paths['md'].name}; chart: {paths['png']}"
                   + (f"; CV vs LB: {paths['scatter']}" if "scatter" in paths else ""))
        if index is not None:
            echo(f"gallery: {index} (open it in a browser)")
