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

from guie.config import (
    SWEEP_FILENAME,
    TrainConfig,
    build_config,
    config_fields,
    parse_class_counts,
    read_config_file,
)
from guie.errors import GuieError
from guie.export.tta import TTA_HELP, parse_tta
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
        except OSError as exc:
            # Disk full, permissions, vanished files: files already written stay whole (atomic writes).
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}; free disk space or fix permissions, then rerun "
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
        from guie.train.run_folder import CONFIG_FILENAME, sweep_started, training_started

        if not cli_values.get("out"):
            raise GuieError("--resume needs --out RUN, the run folder to continue")
        out = Path(cli_values["out"])
        is_sweep = (out / SWEEP_FILENAME).is_file()
        stored = out / SWEEP_FILENAME if is_sweep else out / CONFIG_FILENAME
        if not stored.is_file():
            raise GuieError(f"cannot resume: {str(out)!r} has no {CONFIG_FILENAME}; start a new run without --resume")
        saved = json.loads(stored.read_text())
        counts = saved.pop("sweep_classes", None)
        fields = config_fields()
        values = {k: v for k, v in saved.items() if k in fields}
        if sweep_started(out) if is_sweep else training_started(out):
            # A resumed run keeps its recipe; only the length of training may be extended.
            ignored = sorted(k for k in cli_values if k not in ("out", "epochs") and cli_values[k] != values.get(k))
            if ignored:
                click.echo(f"note: --resume uses the run's saved config; ignoring {', '.join(ignored)}", err=True)
            values.update({k: cli_values[k] for k in ("out", "epochs") if k in cli_values})
        else:
            # Training never started, so there is nothing to keep: the options given replace the saved ones.
            changed = sorted(k for k in cli_values if k != "out" and cli_values[k] != values.get(k))
            if changed:
                click.echo(f"note: {out} never started training; --resume starts it again with the saved config "
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
    cfg, sweep = resolve_train_config(ctx, params, config_file, resume)
    if sweep:
        from guie.train.sweep import run_sweep  # heavy imports only once the options are valid

        run_sweep(cfg, sweep, resume=resume, overwrite=overwrite, log=click.echo)
        return
    from guie.train.run import run_training

    run_training(cfg, resume=resume, overwrite=overwrite, log=click.echo)


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
        click.echo(_prefix_list())
        return
    if not specs:
        raise GuieError("no data source given; pass SPEC... such as sop:/data/Stanford_Online_Products "
                        "(guie-data --prefixes lists the prefixes)")
    from guie.data import load_source
    from guie.data.summary import format_summary, summarize_source

    summaries = [summarize_source(load_source(spec)) for spec in specs]
    if as_json:
        click.echo(json.dumps({"sources": summaries}, indent=2))
    else:
        click.echo("\n\n".join(format_summary(s) for s in summaries))


EVAL_HELP = """Evaluate models on retrieval tasks: mP@5 as the competition host computed it, P@1, mAP@5.

MODEL is a guie-train run folder (or its model.pt), a TorchScript saved_model.pt, or a
submission.zip; several models give one comparison table and chart. Each --task is a data
source spec; its queries and index come from the dataset's own split where it has one
(DeepFashion query/gallery, The Met queries/database), else from a seeded per-class split
of its test split (SOP, Food-101, Products-10K, ObjectNet) or of all its images. Exact k-NN
(faiss, k=5) on L2-normalised embeddings. Example:

\b
  guie-eval runs/vith-4000 --task sop:/data/Stanford_Online_Products \\
      --task food101:/data/food-101 --out reports/vith-4000
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
@click.option("--max-queries", type=int, help="keep a seeded sample of this many queries per task")
@click.option("--distractors", default=0, show_default=True,
              help="add this many seeded images of never-queried classes to each task's index (the host's index "
              "was mostly images unrelated to any query)")
@click.option("--task-weights", metavar="TASK=W,...",
              help="weight the task mean, e.g. like the host's domain mix (every task needs a weight)")
@click.option("--leaderboard", is_flag=True,
              help="add each model's latest Kaggle score (leaderboard.jsonl beside it, from guie-submit) and the "
              "Spearman/Pearson correlation of mP@5 with it, per task and for the mean")
@click.option("--batch-size", default=64, show_default=True, help="images per forward (run folders)")
@click.option("--workers", type=int, help="DataLoader workers for decoding (default: cores - 1, at most 8)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when present (with autocast), else CPU")
@friendly_errors
def eval_command(models: tuple[str, ...], tasks: tuple[str, ...], out: str | None, seed: int, query_frac: float,
                 max_classes: int | None, max_queries: int | None, distractors: int, task_weights: str | None,
                 leaderboard: bool, batch_size: int, workers: int | None, device: str) -> None:
    if batch_size < 1:
        raise GuieError("--batch-size must be at least 1")
    from guie.eval.evaluate import EvalSettings, evaluate, parse_task_weights
    from guie.eval.report import format_table, write_report

    settings = EvalSettings(seed, query_frac, max_classes, max_queries, batch_size, workers, device, distractors,
                            parse_task_weights(task_weights))
    report = evaluate(list(models), list(tasks), settings, log=lambda line: click.echo(line, err=True))
    if leaderboard:
        from guie.eval.leaderboard import attach_leaderboard

        attach_leaderboard(report)
    click.echo(format_table(report))
    if out:
        paths = write_report(report, out)
        click.echo(f"report: {paths['json']}, {paths['csv'].name}, {paths['md'].name}; chart: {paths['png']}"
                   + (f"; CV vs LB: {paths['scatter']}" if "scatter" in paths else ""))


PACKAGE_HELP = """Build the Kaggle dataset and notebook folders for a model; with --upload, push them.

SOURCE is a submission.zip, an export folder (saved_model.pt) or a guie-train run folder
(exported on the way, into OUT/export). Writes OUT/dataset (dataset-metadata.json,
saved_model.pt, README.md model card) and OUT/kernel (kernel-metadata.json and the inference
notebook: internet off, the dataset and competition attached), exactly what
`kaggle datasets create -p OUT/dataset` and `kaggle kernels push -p OUT/kernel` take. Check
them locally with guie-smoke OUT first. Example:

\b
  guie-package runs/vith-4000 --dataset you/guie-vith-4000 --kernel you/guie-vith-4000-inference --out build
  guie-smoke build
  guie-package runs/vith-4000 --dataset you/guie-vith-4000 --kernel you/guie-vith-4000-inference --out build --upload

--upload uses the official kaggle client with your Kaggle credentials (KAGGLE_API_TOKEN,
~/.kaggle/access_token, or kaggle.json): it creates the dataset (or a new version), waits
until it is ready, then pushes the notebook and prints both URLs.
"""


@click.command("package", help=PACKAGE_HELP)
@click.argument("source", type=click.Path(exists=True))
@click.option("--dataset", "dataset_id", required=True, metavar="OWNER/SLUG",
              help="Kaggle dataset that will hold the model (slug 6-50 characters)")
@click.option("--kernel", "kernel_id", required=True, metavar="OWNER/SLUG",
              help="Kaggle notebook that writes submission.zip (slug 5-50 characters)")
@click.option("--competition", default="google-universal-image-embedding", show_default=True,
              help="competition slug attached to the notebook")
@click.option("--title", help="dataset title, 6-50 characters (default: from the dataset slug)")
@click.option("--kernel-title", help="notebook title; Kaggle derives the URL from it, so it must slugify to "
              "the --kernel slug (default: from the slug)")
@click.option("--license", "license_name", default="other", show_default=True,
              help="dataset licence, a Kaggle licence name (CC0-1.0, CC-BY-4.0, apache-2.0, other, ...)")
@click.option("--gpu/--no-gpu", default=False, show_default=True,
              help="run the notebook on a GPU (it only packages the model, so a CPU suffices)")
@click.option("--public", is_flag=True, help="make the dataset and the notebook public (default: private)")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="BUILD folder for dataset/ and kernel/ (an earlier package there is replaced)")
@click.option("--upload", is_flag=True, help="create or version the dataset and push the notebook to Kaggle")
@click.option("--message", help="version notes when the dataset exists (default: guie version and model hash)")
@click.option("--wait", default=900.0, show_default=True,
              help="seconds to wait for the uploaded dataset to be ready before pushing the notebook")
@click.option("--poll", default=10.0, hidden=True, help="seconds between dataset status checks")
@friendly_errors
def package_command(source: str, dataset_id: str, kernel_id: str, competition: str, title: str | None,
                    kernel_title: str | None, license_name: str, gpu: bool, public: bool, out: str, upload: bool,
                    message: str | None, wait: float, poll: float) -> None:
    from guie.submission.folders import PackageSpec, build_package

    spec = PackageSpec.create(dataset_id, kernel_id, title=title, kernel_title=kernel_title,
                              competition=competition, license=license_name, gpu=gpu, public=public)
    if upload:
        from guie.submission.upload import CREDENTIALS_HELP, find_credentials

        if find_credentials() is None:  # before any work, so nothing is half-done
            raise GuieError(CREDENTIALS_HELP)
    result = build_package(source, spec, out, log=click.echo)
    if not upload:
        click.echo(f"next: guie-smoke {out}   (then guie-package ... --upload, or kaggle datasets create -p "
                   f"{result.dataset_dir} and kaggle kernels push -p {result.kernel_dir})")
        return
    from guie.submission.upload import upload_package

    upload_package(out, message=message or f"guie {__version__}, model sha256 {result.sha256[:12]}",
                   public=public, wait=wait, poll=poll, log=click.echo)


SUBMIT_HELP = """Submit a guie-package BUILD to the competition and record its leaderboard score.

Through the official kaggle client: uploads the dataset and pushes the notebook unless BUILD/uploaded.json
shows these exact files were uploaded already; waits for the notebook version to run (on error saves
its log to BUILD/notebook.log and names the failing cell); submits the notebook's submission.zip as a
code-competition submission of that version; waits for the score and prints the public and private
scores. Each submission is one line of leaderboard.jsonl in the run folder the package was built from
(else in BUILD), read by guie-eval --leaderboard. --wait bounds all waiting together. Exits 0 when
scored, 3 when still pending at the end of --wait (complete it later with --refresh), 2 on errors.

\b
  guie-submit build --message "vith14 4000 classes"
  guie-submit build --refresh
"""


@click.command("submit", help=SUBMIT_HELP)
@click.argument("build", type=click.Path(exists=True, file_okay=False))
@click.option("--message", help="submission description (default: guie-submit OWNER/SLUG/VERSION)")
@click.option("--wait", default=3600.0, show_default=True,
              help="seconds to wait in total for the upload, the notebook run and the score")
@click.option("--competition", default="google-universal-image-embedding", show_default=True,
              help="competition slug to submit to (the notebook must attach it)")
@click.option("--refresh", is_flag=True, help="only complete the pending lines of leaderboard.jsonl; submit nothing")
@click.option("--poll", default=30.0, hidden=True, help="seconds between status checks")
@friendly_errors
def submit_command(build: str, message: str | None, wait: float, competition: str, refresh: bool,
                   poll: float) -> None:
    from guie.submission.submit import refresh_build, submit_build

    if refresh:
        records = refresh_build(build, competition=competition, wait=wait, poll=poll, log=click.echo)
        pending = any(r["status"] == "pending" for r in records)
    else:
        pending = submit_build(build, competition=competition, message=message, wait=wait, poll=poll,
                               log=click.echo)["status"] == "pending"
    if pending:
        sys.exit(3)


SMOKE_HELP = """Run a guie-package BUILD's notebook in an emulated Kaggle, then check submission.zip as the host would.

Lays out a temporary /kaggle-like tree (input/<dataset slug>/ with the dataset's files,
working/), runs BUILD/kernel's notebook there with nbclient on this Python (without guie, as at
Kaggle; /kaggle is redirected through the GUIE_KAGGLE_ROOT variable the notebook honours), then
loads working/submission.zip in a fresh interpreter without guie and feeds it real images of
mixed sizes as the host did: checks output shape (1, 64), float32, finite values, unit norm,
determinism, batch independence and distinct outputs, and scores mP@5 on a small labelled set.
Exits 1 naming the failed check or notebook cell; writes BUILD/smoke/report.json.
"""


@click.command("smoke", help=SMOKE_HELP)
@click.argument("build", type=click.Path(exists=True, file_okay=False))
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="labelled images (one sub-folder per class) instead of the built-in handwritten digits")
@click.option("--min-mp5", default=0.0, show_default=True, help="fail when mP@5 on the labelled set is below this")
@click.option("--timeout", default=600.0, show_default=True,
              help="seconds allowed per notebook cell and for the host check")
@click.option("--keep", is_flag=True, help="keep the emulated /kaggle tree and print where it is")
@friendly_errors
def smoke_command(build: str, images: str | None, min_mp5: float, timeout: float, keep: bool) -> None:
    from guie.submission.smoke import run_smoke

    run_smoke(build, images=images, min_mp5=min_mp5, timeout=timeout, keep=keep, log=click.echo)


EXPORT_HELP = """Export a trained run as the competition's TorchScript file and verify it.

RUN is a guie-train run folder (or its model.pt). Writes OUT/saved_model.pt (raw uint8
images of any size in, L2-normalised 64-D float32 out, preprocessing inside the graph),
OUT/submission.zip (saved_model.pt at its root, nothing else) and OUT/verify.json. Every
check (parity with the eager embedder, several sizes, batch 1 and 8, batch independence,
determinism, reload in a fresh process without guie) must pass before any file appears.

\b
  guie-export runs/vith14-4000 --torchscript --out export/vith14-4000
  guie-export runs/vith14-4000 --program --out export/vith14-4000-program
  guie-export runs/vith14-4000 runs/vitl14-4000 --ensemble pca --out export/ensemble
"""


@click.command("export", help=EXPORT_HELP)
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--torchscript", "fmt", flag_value="torchscript", default=True,
              help="TorchScript saved_model.pt + submission.zip, for Kaggle (default)")
@click.option("--program", "fmt", flag_value="program",
              help="a torch.export program (saved_model.pt2) for use outside Kaggle")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="output folder (default: RUN/export)")
@click.option("--fp16", is_flag=True, help="fp16 image-tower weights, --program only (output stays float32; a "
              "TorchScript file with them would fail on CPU in PyTorch before 2.x)")
@click.option("--chunk", default=32, show_default=True, help="images per forward inside the module (bounds memory)")
@click.option("--tta", default="none", show_default=True, metavar="SPEC",
              help="test-time augmentation inside the graph, the embeddings of all views averaged: " + TTA_HELP)
@click.option("--ensemble", type=click.Choice(["pca"]), default=None,
              help="several RUNS as one module: their embeddings concatenated, then a PCA to 64-D (4th place GUIE 2022)")
@click.option("--ensemble-images", default=2000, show_default=True,
              help="training images of the first run the ensemble PCA is fitted on (seeded sample)")
@click.option("--check-torch", default="auto", show_default=True, metavar="VERSIONS",
              help="torch releases the file must also load and match in before it is written (comma-separated, "
              "e.g. 1.11.0,2.4.1; environments built once, see guie-compat); auto: 1.11.0, the GUIE host's, when "
              "its environment is built; none")
@friendly_errors
def export_command(runs: tuple[str, ...], fmt: str, out: str | None, fp16: bool, chunk: int, tta: str,
                   ensemble: str | None, ensemble_images: int, check_torch: str) -> None:
    from guie.export import export_ensemble, export_run
    from guie.export.compat import resolve_versions

    augmentation = parse_tta(tta)  # a bad spec fails here, before any model loads
    resolve_versions(check_torch)  # and so does a bad release number
    if len(runs) > 1 or ensemble:
        if not ensemble or len(runs) < 2:
            raise GuieError("several runs export as one module only with --ensemble pca, and --ensemble needs "
                            "at least two runs")
        if fmt != "torchscript" or fp16 or str(augmentation) != "none":
            raise GuieError("--ensemble exports TorchScript in fp32 without --tta; drop --program/--fp16/--tta")
        out_dir = Path(out) if out else Path("export-ensemble")
        export_ensemble(list(runs), out_dir, images=ensemble_images, chunk=chunk, log=click.echo,
                        check_torch=check_torch)
        return
    run_path = Path(runs[0])
    out_dir = Path(out) if out else (run_path if run_path.is_dir() else run_path.parent) / "export"
    export_run(run_path, out_dir, fp16=fp16, fmt=fmt, chunk=chunk, tta=tta, log=click.echo, check_torch=check_torch)


COMPAT_HELP = """Load a submission file in other PyTorch releases, as the host did, and compare outputs.

FILE is a saved_model.pt, a submission.zip or an export folder. For each --torch release,
guie builds once a virtual environment (pip, from the package index) in $GUIE_TORCH_ENVS
(default ~/.cache/guie/torch-envs), loads FILE there with plain torch.jit.load in a fresh
process, feeds it uint8 (1, 3, H, W) images from 7x5 to 1200x37 pixels one at a time and a
batch of 4, and compares with this torch's outputs (limit 1e-4). Releases before 1.13 need
Python 3.10 or older: guie finds one on PATH or in pyenv, or takes --python. Results go into
the verify.json beside FILE and a record guie-package reads. Exits 1 when a release fails.

\b
  guie-compat export/vith14/saved_model.pt                 # the GUIE host's PyTorch 1.11.0
  guie-compat export/vith14 --torch 1.11.0 --torch 2.4.1 --torch 2.14.1
"""


@click.command("compat", help=COMPAT_HELP)
@click.argument("file", type=click.Path(exists=True))
@click.option("--torch", "versions", multiple=True, metavar="VERSION",
              help="a torch release to check in (repeat or comma-separate; default: 1.11.0, the GUIE host's)")
@click.option("--python", "python", default=None, metavar="PATH",
              help="the interpreter to build the environments with (default: one that fits each release)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: move the loaded model to the GPU and feed CPU tensors, as some hosts did")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@friendly_errors
def compat_command(file: str, versions: tuple[str, ...], python: str | None, device: str, as_json: bool) -> None:
    from guie.export.compat import HOST_TORCH, check_file

    wanted = [v.strip() for item in versions for v in item.split(",") if v.strip()] or [HOST_TORCH]
    rows = check_file(file, wanted, python=python, device=device, log=lambda line: click.echo(line, err=as_json))
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    if not all(row.passed for row in rows):
        sys.exit(1)


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


if __name__ == "__main__":
    main()
