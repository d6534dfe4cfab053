"""One guie-train run: records -> sampled classes -> cached features -> head -> run folder (+ holdout eval)."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guie.artifacts import RUN_CLASSES, RUN_CONFIG, RUN_DATA_REPORT, RUN_EVAL, RUN_MODEL
from guie.config import TrainConfig
from guie.data import load_source
from guie.data.records import Record, unique_name
from guie.data.sampling import holdout_split, sample_classes
from guie.distributed import init_distributed, shutdown
from guie.errors import GuieError
from guie.features.cache import FeatureTable
from guie.features.extract import ensure_features
from guie.fileio import write_json
from guie.model.backbone import (
    Backbone,
    BackboneSpec,
    expected_preprocess,
    export_problem,
    load_backbone,
    resolve_device,
)
from guie.model.heads import build_head, parse_margin_schedule
from guie.model.model_file import save_model_file
from guie.model.projection import Projection
from guie.paths import cache_root
from guie.retrieval.knn import evaluate_retrieval
from guie.train.checkpoint import load_checkpoint
from guie.train.loop import LoopSettings, train_head
from guie.train.run_folder import check_run_dir
from guie.train.stage2 import Stage2Settings, fine_tune
from guie.train.stage2 import embed_images as stage2_embed
from guie.train.tracking import start_tracking
from guie.version import __version__


@dataclass
class RunResult:
    run_dir: Path
    metrics: list[dict[str, Any]]
    eval: dict[str, Any]
    features_computed: int


def git_commit() -> str | None:
    """The commit of the guie checkout this code runs from, when it runs from one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def prepare_run_dir(out: str, action: str, log: Callable[[str], None]) -> Path:
    """Create, replace or keep the run folder as ``check_run_dir`` decided, once the inputs are valid."""
    run_dir = Path(out)
    if action in ("overwrite", "restart") and run_dir.is_dir():
        if action == "restart":
            log(f"note: {out} holds a run that stopped before training started; starting it afresh")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def load_records(specs: list[str], log: Callable[[str], None]) -> tuple[list[Record], list[dict[str, Any]]]:
    """All records of all sources, each source a distinct domain; plus a per-source report."""
    records: list[Record] = []
    report: list[dict[str, Any]] = []
    used: set[str] = set()
    for spec in specs:
        source = load_source(spec)
        domain = unique_name(source.domain, used)
        recs = [Record(r.path, r.label, domain if r.domain == source.domain else r.domain, r.split)
                for r in source.records]
        # Only the training split trains: test, query and gallery images are kept for guie-eval.
        not_train = Counter(r.split for r in recs if r.split != "train")
        recs = [r for r in recs if r.split == "train"]
        if not recs:
            raise GuieError(f"data source {spec!r} has no training split (only {', '.join(sorted(not_train))}); "
                            "evaluate on it with --eval or guie-eval --task instead")
        records.extend(recs)
        classes = len({r.class_key for r in recs})
        log(f"data {spec}: {len(recs)} images, {classes} classes, {len(source.skipped)} skipped"
            + (f" ({', '.join(f'{n} {s}' for s, n in sorted(not_train.items()))} images not used for training)"
               if not_train else ""))
        report.append({"spec": spec, "domain": domain, "images": len(recs), "classes": classes,
                       "skipped": len(source.skipped), "skipped_examples": source.skipped[:20]})
    return records, report


def evaluate_tasks(model: Path, cfg: TrainConfig, device: str, log: Callable[[str], None]) -> dict[str, Any]:
    """guie-eval on the finished model for the --eval task specs; logs the mean mP@5."""
    from guie.eval.evaluate import EvalSettings, evaluate

    report = evaluate([model], cfg.eval_tasks, EvalSettings(seed=cfg.seed, batch_size=cfg.extract_batch_size,
                                                            workers=cfg.workers, device=device), log=log)
    mean = report["mean"][0]
    log(f"mP@5 {mean['mP@5']:.4f} mean over {mean['tasks']} eval tasks ("
        + ", ".join(f"{r['task']} {r['mP@5']:.4f}" for r in report["results"]) + ")")
    return report


def embed(projection: Projection, table: FeatureTable, index: np.ndarray, device: torch.device,
          sizes: np.ndarray | None = None, batch: int = 8192) -> np.ndarray:
    """Embeddings of clean features at record positions ``index`` (with the records' ``sizes`` for size features)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(index), batch):
            part = index[start:start + batch]
            x = torch.from_numpy(table.get(part)).to(device)
            s = torch.from_numpy(sizes[part]).to(device) if sizes is not None else None
            out.append(projection(x, s).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, projection.dim), np.float32)


def feature_stats(projection: Projection, table: FeatureTable, index: np.ndarray, seed: int,
                  sizes: np.ndarray | None = None, sample: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the projection's clean training inputs (from a seeded sample when large)."""
    if len(index) > sample:
        index = np.sort(np.random.default_rng(seed).choice(index, sample, replace=False))
    s = torch.from_numpy(sizes[index]) if sizes is not None else None
    x = projection.inputs(torch.from_numpy(table.get(index)), s).numpy().astype(np.float64)
    return torch.from_numpy(x.mean(0)).float(), torch.from_numpy(x.std(0)).float()


HOLDOUT_MAX_QUERIES = 10_000  # held-out images searched by --eval holdout: k-NN then grows linearly with N


def holdout_queries(holdout_index: np.ndarray, seed: int, limit: int | None = None) -> np.ndarray:
    """At most ``limit`` (default HOLDOUT_MAX_QUERIES) of the held-out images, a seeded sample, sorted.

    All held-out images stay out of training; only the search is capped, since 0.2N queries
    against 0.8N images would grow as N squared (about 300k x 1.2M at GLDv2 scale).
    """
    limit = HOLDOUT_MAX_QUERIES if limit is None else limit
    if len(holdout_index) <= limit:
        return holdout_index
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(holdout_index, size=limit, replace=False))


def random_projection_baseline(table: FeatureTable, query: np.ndarray, index: np.ndarray, labels: list[str],
                               dim: int, seed: int, mean: torch.Tensor, std: torch.Tensor) -> float:
    """mP@5 of a random Gaussian projection of the same standardised features: the floor a trained head must beat."""
    matrix = np.random.default_rng(seed).standard_normal((table.dim, dim)).astype(np.float32)
    mean, std = mean[:table.dim], std[:table.dim]  # the backbone features' part (without size features)

    def project(idx: np.ndarray) -> np.ndarray:
        y = ((table.get(idx) - mean.numpy()) / (std.numpy() + 1e-6)) @ matrix
        return y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-12)

    res = evaluate_retrieval(project(index), [labels[i] for i in index], project(query), [labels[i] for i in query])
    return res["mP@5"]


def run_training(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] = print,
                 backbone_loader: Callable[[BackboneSpec, torch.device], Backbone] = load_backbone) -> RunResult:
    """Run guie-train end to end; see the module docstring for the stages.

    Under torchrun every rank calls this; rank 0 alone prepares and writes the run folder.
    """
    dist = init_distributed()
    try:
        return _run(cfg, resume, overwrite, log if dist.is_main else (lambda _: None), backbone_loader, dist)
    finally:
        shutdown(dist)


def _run(cfg: TrainConfig, resume: bool, overwrite: bool, log: Callable[[str], None],
         backbone_loader: Callable[[BackboneSpec, torch.device], Backbone], dist) -> RunResult:
    started = time.perf_counter()
    spec = BackboneSpec(cfg.backbone, cfg.pretrained).validate()
    problem = export_problem(spec.name, expected_preprocess(spec))
    if problem:  # refused now, not by guie-export after the training
        raise GuieError(f"{problem}; choose another --backbone")
    device = dist.device(resolve_device(cfg.device))
    if cfg.stage2_blocks and dist.enabled:
        raise GuieError("--stage2-blocks runs in one process; run stage 2 without torchrun")
    resolved = {**cfg.to_dict(), "guie_version": __version__, "git_commit": git_commit(),
                "backbone_fingerprint": spec.fingerprint(), "world_size": dist.world}
    # Inputs first, outputs after: a run that fails on its data leaves no folder behind.
    action = check_run_dir(cfg.out, resume, overwrite)
    records, source_report = load_records(cfg.data, log)
    records, sampled = sample_classes(records, cfg.classes, cfg.min_per_class, cfg.max_per_class, cfg.seed,
                                      cfg.domain_caps())
    log(f"classes: kept {sampled.classes_kept} of {sampled.classes_eligible} with >= {cfg.min_per_class} images "
        f"({sampled.images_kept} images)")
    run_dir = Path(cfg.out)
    if dist.is_main:
        prepare_run_dir(cfg.out, action, log)
        if action != "resume":
            write_json(run_dir / RUN_CONFIG, resolved)
    dist.barrier()

    loaded: list[Backbone] = []

    def get_backbone() -> Backbone:
        if not loaded:
            log(f"loading backbone {spec.name} ({spec.pretrained}) on {device}")
            loaded.append(backbone_loader(spec, device))
        return loaded[0]

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "features"
    feats = ensure_features([r.path for r in records], spec, cfg.aug_views, cache_dir, get_backbone,
                            batch_size=cfg.extract_batch_size, num_workers=cfg.workers, device=device, log=log,
                            shard_size=cfg.shard_size, dist=dist, need_sizes=cfg.size_features)
    bad_frac = len(feats.bad) / max(1, len(records))
    data_report = {"sources": source_report, "sampling": vars(sampled), "bad_images": len(feats.bad),
                   "bad_image_list": [{"path": records[i].path, "reason": why} for i, why in sorted(feats.bad.items())]}
    if dist.is_main:
        write_json(run_dir / RUN_DATA_REPORT, data_report)
    if bad_frac > cfg.max_bad_frac:
        raise GuieError(f"{len(feats.bad)} of {len(records)} images ({bad_frac:.1%}) cannot be read, more than "
                        f"--max-bad-frac {cfg.max_bad_frac}; see {run_dir / 'data.json'}, fix the files or raise the limit")
    if feats.bad:
        log(f"skipped {len(feats.bad)} unreadable images (listed in {run_dir / 'data.json'})")

    good = np.array([i for i in range(len(records)) if i not in feats.bad], dtype=np.int64)
    good_records = [records[i] for i in good]
    if cfg.eval_holdout:
        tr, ho = holdout_split(good_records, cfg.holdout_frac, cfg.seed)
        train_index, holdout_index = good[tr], good[ho]
    else:
        train_index, holdout_index = good, np.zeros(0, dtype=np.int64)
    classes = sorted({records[i].class_key for i in train_index})
    class_id = {c: i for i, c in enumerate(classes)}
    labels = np.full(len(records), -1, dtype=np.int64)
    for i in train_index:
        labels[i] = class_id[records[i].class_key]
    log(f"training on {len(train_index)} images of {len(classes)} classes"
        + (f", holding out {len(holdout_index)}" if len(holdout_index) else ""))

    torch.manual_seed(cfg.seed)
    projection = Projection(feats.feature_dim, cfg.dim, cfg.batchnorm, cfg.dropout, cfg.size_features)
    stats = feature_stats(projection, feats.views[0], train_index, cfg.seed, feats.sizes)
    projection.set_feature_stats(*stats)
    if feats.sizes is not None:
        hw = feats.sizes[train_index]
        log(f"size features: training images {int(hw[:, 0].min())}-{int(hw[:, 0].max())} pixels high, "
            f"{int(hw[:, 1].min())}-{int(hw[:, 1].max())} wide"
            + ("; they all share one size, so the size features carry nothing and are ignored"
               if (hw == hw[0]).all() else ""))
    head = build_head(cfg.head, cfg.dim, len(classes), cfg.scale, cfg.margin, cfg.subcenters)
    domains = sorted({records[i].domain for i in train_index})
    domain_labels = np.array([domains.index(r.domain) if r.domain in domains else -1 for r in records])
    domain_head = torch.nn.Linear(cfg.dim, len(domains)) if cfg.domain_loss > 0 else None
    tracker = start_tracking(cfg.wandb if dist.is_main else "off", run_dir, resolved, cfg.wandb_project)
    try:
        settings = LoopSettings(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.seed,
                                cfg.ema, parse_margin_schedule(cfg.margin_schedule), cfg.domain_loss)
        resume_state = load_checkpoint(run_dir) if action == "resume" else None
        outcome = train_head(feats.views, train_index, labels, projection, head, settings, run_dir, device,
                             tracker, resume_state, log=log, dist=dist,
                             domain_head=domain_head, domain_labels=domain_labels, sizes=feats.sizes)
        history = outcome.history
        if not dist.is_main:
            return RunResult(run_dir, history, {}, feats.computed)
        finetuned = None
        if cfg.stage2_blocks:
            backbone = get_backbone()
            finetuned = fine_tune(backbone, projection, head, [records[i].path for i in train_index],
                                  labels[train_index], Stage2Settings(
                                      cfg.stage2_blocks, cfg.lr, cfg.stage2_lr_scale, cfg.stage2_epochs,
                                      cfg.batch_size, cfg.weight_decay, cfg.seed, cfg.workers or 0), device, log)
        save_model_file(run_dir / RUN_MODEL, backbone=spec, preprocess_cfg=feats.preprocess_cfg,
                        projection=projection.cpu(), head=head.cpu(), head_kind=cfg.head, classes=classes,
                        config=resolved, version=__version__, raw_weights=outcome.raw_weights,
                        backbone_finetuned=finetuned)
        write_json(run_dir / RUN_CLASSES, classes)
        results: dict[str, Any] = {}
        if len(holdout_index):
            holdout_index = holdout_queries(holdout_index, cfg.seed)
            class_keys = [r.class_key for r in records]
            projection.to(device)
            if finetuned:  # the cached features predate the fine-tuned blocks: stream the images again
                backbone = get_backbone()

                def embed_at(index: np.ndarray) -> np.ndarray:
                    return stage2_embed(backbone.visual, projection, backbone.preprocess_cfg, backbone.image_size,
                                        [records[i].path for i in index], device, cfg.extract_batch_size,
                                        cfg.workers or 0)
            else:
                def embed_at(index: np.ndarray) -> np.ndarray:
                    return embed(projection, feats.views[0], index, device, feats.sizes)
            holdout = evaluate_retrieval(embed_at(train_index), [class_keys[i] for i in train_index],
                                         embed_at(holdout_index), [class_keys[i] for i in holdout_index])
            holdout["random_projection_mP@5"] = random_projection_baseline(
                feats.views[0], holdout_index, train_index, class_keys, cfg.dim, cfg.seed, *stats)
            projection.cpu()
            results["holdout"] = holdout
            log(f"mP@5 {holdout['mP@5']:.4f}  (P@1 {holdout['P@1']:.4f}, mAP@5 {holdout['mAP@5']:.4f}; "
                f"random 64-D projection {holdout['random_projection_mP@5']:.4f}; "
                f"{holdout['queries']} held-out queries against {holdout['index']} training images)")
            tracker.summary({f"holdout/{k}": v for k, v in holdout.items()})
        if cfg.eval_tasks:
            loaded.clear()  # the training backbone is no longer needed; the eval loads the model whole
            results["tasks"] = evaluate_tasks(run_dir / RUN_MODEL, cfg, str(device), log)
            tracker.summary({f"eval/{r['task']}/mP@5": r["mP@5"] for r in results["tasks"]["results"]})
        results["seconds"] = round(time.perf_counter() - started, 2)
        write_json(run_dir / RUN_EVAL, results)
    finally:
        tracker.finish()
    log(f"run folder: {run_dir}")
    return RunResult(run_dir, history, results, feats.computed)
