"""guie-package, guie-submit, guie-smoke: the Kaggle folders, the submission and the local host check."""
from __future__ import annotations

import sys

import click

from guie.cli.common import echo, friendly_errors
from guie.version import __version__

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
    from guie.ship.folders import PackageSpec, build_package

    spec = PackageSpec.create(dataset_id, kernel_id, title=title, kernel_title=kernel_title,
                              competition=competition, license=license_name, gpu=gpu, public=public)
    if upload:
        from guie.ship.upload import check_kaggle

        # before any work, so nothing is half-done: credentials, and Kaggle answering
        check_kaggle(f"nothing was built or uploaded. Without Kaggle, run guie-package without --upload and "
                     f"upload later: kaggle datasets create -p {out}/dataset, then kaggle kernels push -p {out}/kernel",
                     log=echo)
    result = build_package(source, spec, out, log=echo)
    if not upload:
        echo(f"next: guie-smoke {out}   (then guie-package ... --upload, or kaggle datasets create -p "
                   f"{result.dataset_dir} and kaggle kernels push -p {result.kernel_dir})")
        return
    from guie.ship.upload import upload_package

    upload_package(out, message=message or f"guie {__version__}, model sha256 {result.sha256[:12]}",
                   public=public, wait=wait, poll=poll, log=echo)


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
    from guie.ship.submit import refresh_build, submit_build

    if refresh:
        records = refresh_build(build, competition=competition, wait=wait, poll=poll, log=echo)
        pending = any(r["status"] == "pending" for r in records)
    else:
        pending = submit_build(build, competition=competition, message=message, wait=wait, poll=poll,
                               log=echo)["status"] == "pending"
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
    from guie.ship.smoke import run_smoke

    run_smoke(build, images=images, min_mp5=min_mp5, timeout=timeout, keep=keep, log=echo)
