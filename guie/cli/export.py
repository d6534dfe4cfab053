"""guie-export and guie-compat: the submission file and the PyTorch releases it loads in."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from guie.cli.common import echo, friendly_errors
from guie.errors import GuieError
from guie.export.tta import TTA_HELP, parse_tta

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
@click.option("--torchscript", "torchscript", is_flag=True,
              help="TorchScript saved_model.pt + submission.zip, for Kaggle (default)")
@click.option("--program", "program", is_flag=True,
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
def export_command(runs: tuple[str, ...], torchscript: bool, program: bool, out: str | None, fp16: bool, chunk: int,
                   tta: str, ensemble: str | None, ensemble_images: int, check_torch: str) -> None:
    from guie.export import export_ensemble, export_run
    from guie.export.torch_envs import resolve_versions

    if torchscript and program:  # two formats asked for: refused before anything else
        raise GuieError("--torchscript and --program are two formats, one export writes one; give one of them "
                        "(TorchScript, the default, for Kaggle; --program for use outside it)")
    fmt = "program" if program else "torchscript"
    augmentation = parse_tta(tta)  # a bad spec fails here, before any model loads
    resolve_versions(check_torch)  # and so does a bad release number
    if len(runs) > 1 or ensemble:
        if not ensemble or len(runs) < 2:
            raise GuieError("several runs export as one module only with --ensemble pca, and --ensemble needs "
                            "at least two runs")
        if fmt != "torchscript" or fp16 or str(augmentation) != "none":
            raise GuieError("--ensemble exports TorchScript in fp32 without --tta; drop --program/--fp16/--tta")
        out_dir = Path(out) if out else Path("export-ensemble")
        export_ensemble(list(runs), out_dir, images=ensemble_images, chunk=chunk, log=echo,
                        check_torch=check_torch)
        return
    from guie.artifacts import EXPORT_DIR, TAKES_RUN, identify

    run = identify(runs[0], TAKES_RUN)  # a wrong RUN is refused before anything loads
    out_dir = Path(out) if out else run.folder / EXPORT_DIR
    export_run(run.path, out_dir, fp16=fp16, fmt=fmt, chunk=chunk, tta=tta, log=echo, check_torch=check_torch)


COMPAT_HELP = """Load a submission file in other PyTorch releases, as the host did, and compare outputs.

FILE is a saved_model.pt, a submission.zip or an export folder. For each --torch release,
guie builds once a virtual environment (pip, from the package index) in $GUIE_TORCH_ENVS
(default ~/.cache/guie/torch-envs on Linux), loads FILE there with plain torch.jit.load in a fresh
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
    from guie.export.compat import check_file
    from guie.export.torch_envs import HOST_TORCH

    wanted = [v.strip() for item in versions for v in item.split(",") if v.strip()] or [HOST_TORCH]
    rows = check_file(file, wanted, python=python, device=device, log=lambda line: echo(line, err=as_json))
    if as_json:
        echo(json.dumps([row.to_dict() for row in rows], indent=2))
    if not all(row.passed for row in rows):
        sys.exit(1)
