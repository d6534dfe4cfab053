"""guie demo: the whole chain on the embedded data, train -> eval (with the retrieval gallery) -> export
(checked in torch 1.11.0, the GUIE host's, unless told not to) -> package -> smoke."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from guie.artifacts import EXPORT_DIR, KERNEL_DIR, RUN_CONFIG
from guie.config import TrainConfig
from guie.errors import GuieError

DEMO_DATASET = "guie-demo/guie-tiny-digits"
DEMO_KERNEL = "guie-demo/guie-tiny-digits-inference"


def run_demo(out_dir: Path, epochs: int = 15, wandb: str = "off", log: Callable[[str], None] = print,
             compat: bool = True) -> None:
    """Run every stage on demo:digits into ``out_dir`` (run/, report/ with report/gallery/, export/, build/),
    replacing an earlier demo there. With ``compat`` the export is also loaded and compared in torch 1.11.0
    (the GUIE host's), whose environment is built on first use (once, in ~/.cache/guie/torch-envs).
    Raises GuieError when ``out_dir`` holds something that is not a demo, or the 1.11.0 environment cannot
    be built (the message names --no-compat)."""
    out_dir = Path(out_dir)
    marker = out_dir / ".guie-demo"
    if out_dir.exists() and any(out_dir.iterdir()) and not marker.exists():
        raise GuieError(f"{str(out_dir)!r} exists and does not hold an earlier guie demo; pass another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by guie demo; rerunning the demo replaces this folder's contents\n")
    run_dir, report_dir, export_dir, build_dir = (out_dir / n for n in ("run", "report", EXPORT_DIR, "build"))

    from guie.workflows.train_eval import train_and_evaluate

    log("== 1/5 train: guie-tiny (random init) on demo:digits, 10 classes, holdout eval")
    cfg = TrainConfig(data=["demo:digits"], out=str(run_dir), backbone="guie-tiny", pretrained="none",
                      epochs=epochs, batch_size=128, lr=1e-2, scale=16.0, margin=0.2, eval="holdout",
                      wandb=wandb).validate()
    train_and_evaluate(cfg, overwrite=(run_dir / RUN_CONFIG).is_file(), log=log)

    from guie.eval.evaluate import EvalSettings, evaluate
    from guie.eval.gallery import DEFAULT_ROWS, attach_gallery
    from guie.eval.report import format_table, write_report

    log("== 2/5 eval: mP@5 on demo:digits and demo:digits-noisy, with the retrieval gallery")
    retrievals: list = []
    report = evaluate([run_dir], ["demo:digits", "demo:digits-noisy"], EvalSettings(), log=log,
                      retrievals=retrievals)
    gallery = attach_gallery(report, retrievals, report_dir, DEFAULT_ROWS)
    paths = write_report(report, report_dir)
    log(format_table(report))
    log(f"report: {paths['md']}, chart {paths['png']}; gallery (what the model retrieves, {DEFAULT_ROWS} "
        f"lowest-scoring and {DEFAULT_ROWS} random queries per task): {gallery}")

    from guie.export import export_run
    from guie.export.torch_envs import HOST_TORCH, ensure_env

    if compat:
        log(f"== 3/5 export: TorchScript submission, verified here and in torch {HOST_TORCH} (the GUIE host's)")
        try:
            ensure_env(HOST_TORCH, log=log)
        except GuieError as exc:
            raise GuieError(f"{exc} (or run guie demo --no-compat, which skips the torch {HOST_TORCH} check)") from None
    else:
        log(f"== 3/5 export: TorchScript submission, verified in this torch only (--no-compat: no torch "
            f"{HOST_TORCH} environment is built or used, so the proof that the file loads where the GUIE host "
            "scored is skipped, and guie-package warns about it)")
    verified = export_run(run_dir, export_dir, log=log, check_torch=[HOST_TORCH] if compat else "none")
    host_checked = any(c["torch"] == HOST_TORCH and c["passed"] for c in verified.get("compat", []))

    from guie.ship.folders import PackageSpec, build_package

    log("== 4/5 package: Kaggle dataset and notebook folders")
    spec = PackageSpec.create(DEMO_DATASET, DEMO_KERNEL)
    build_package(export_dir, spec, build_dir, log=log)

    from guie.ship.smoke import run_smoke

    log("== 5/5 smoke: the notebook in an emulated /kaggle, submission.zip checked as the host would")
    run_smoke(build_dir, log=log)
    log(f"== done: everything is under {out_dir}/ (run/, report/, export/, build/). "
        + (f"The export loads and matches in torch {HOST_TORCH}, the GUIE host's PyTorch. " if host_checked else
           f"The export was not checked in torch {HOST_TORCH} (--no-compat). ")
        + f"Open {gallery} to see what the model retrieves. The kernel folder {build_dir / KERNEL_DIR} is what "
        "`kaggle kernels push -p` takes, once --dataset/--kernel name your Kaggle account "
        "(guie-package ... --upload).")
