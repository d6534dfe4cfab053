"""One guie-train run: records -> sampled classes -> cached features -> head -> run folder (+ holdout eval).

:func:`run_training` reads top to bottom as the stages it runs, each a function of this module in
the same order: check the recipe, load and sample the records, prepare the run folder, fill the
feature cache, check the unreadable images (data.json), split and label, build the projection
and heads, train the head (guie.train.loop), fine-tune with stage 2 when asked, save model.pt,
evaluate the held-out images, run the --eval task specs (a hook from the composing layer, see
:data:`TaskEval`), write eval.json.
"""
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
from guie.data.sampling import SampleReport, holdout_split, sample_classes
from guie.data.summary import format_skipped, skipped_reasons
from guie.distributed import DistContext, init_distributed, shutdown
from guie.errors import GuieError
from guie.features.cache import FeatureTable
from guie.features.extract import (
    BackboneOnDemand,
    CachedFeatures,
    ensure_features,
    project_features,
)
from guie.fileio import write_json, writing_into
from guie.model.backbone import (
    Backbone,
    BackboneSpec,
    expected_preprocess,
    export_problem,
    load_backbone,
    resolve_device,
)
from guie.model.heads import MarginHead, build_head, parse_margin_schedule
from guie.model.model_file import save_model_file
from guie.model.projection import Projection
from guie.paths import feature_cache_dir
from guie.retrieval.knn import evaluate_retrieval
from guie.train.checkpoint import load_checkpoint
from guie.train.loop import LoopSettings, TrainOutcome, train_head
from guie.train.run_folder import check_run_dir
from guie.train.stage2 import Stage2Settings, embed_through_finetuned_tower, fine_tune
from guie.train.tracking import Tracker, check_tracking, start_tracking
from guie.version import __version__

RUN_FULL_FIX = ("free space there, then rerun the same command (add --resume once checkpoint.pt exists: training "
                "continues from its last epoch), or pass another --out")


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
               if not_train else "")
            + (f"; skipped: {format_skipped(source.skipped)}" if source.skipped else ""))
        report.append({"spec": spec, "domain": domain, "images": len(recs), "classes": classes,
                       "skipped": len(source.skipped), "skipped_examples": source.skipped[:20],
                       "skipped_reasons": {why: entry["count"] for why, entry in skipped_reasons(source.skipped).items()}})
    return records, report


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


TaskEval = Callable[[Path, TrainConfig, str, Callable[[str], None]], tuple[dict[str, Any], dict[str, Any]]]
"""``--eval TASKS`` on a finished model: ``(model.pt, config, device, log) -> (report, summary)``; the
report goes into eval.json under "tasks", the summary (metric name -> value, or a W&B media object) to
the tracker. The
composing layer supplies it (guie.workflows.train_eval): training does not import evaluation."""


def run_training(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] = print,
                 backbone_loader: Callable[[BackboneSpec, torch.device], Backbone] = load_backbone,
                 task_eval: TaskEval | None = None) -> RunResult:
    """Run guie-train end to end; see the module docstring for the stages.

    ``task_eval`` runs the ``--eval`` task specs on the finished model; a config with task specs
    and no ``task_eval`` raises GuieError before anything is read or written. Under torchrun
    every rank calls this; rank 0 alone prepares and writes the run folder.
    """
    if cfg.eval_tasks and task_eval is None:
        raise GuieError(f"--eval {','.join(cfg.eval_tasks)} needs the task evaluation on the finished model; run "
                        "through guie-train (guie.workflows.train_eval.train_and_evaluate), or pass --eval holdout")
    dist = init_distributed()
    try:
        with writing_into(cfg.out, RUN_FULL_FIX):
            return _run(cfg, resume, overwrite, log if dist.is_main else (lambda _: None), backbone_loader, dist,
                        task_eval)
    finally:
        shutdown(dist)


def _run(cfg: TrainConfig, resume: bool, overwrite: bool, log: Callable[[str], None],
         backbone_loader: Callable[[BackboneSpec, torch.device], Backbone], dist: DistContext,
         task_eval: TaskEval | None) -> RunResult:
    """The stages in order; each is a function below, in the same order."""
    started = time.perf_counter()
    spec, device = check_recipe(cfg, dist, log)
    check_tracking(cfg.wandb if dist.is_main else "off", log)  # W&B online: a key and an answer, before any work
    resolved = resolved_config(cfg, spec, dist)
    # Inputs first, outputs after: a run that fails on its data leaves no folder behind.
    action = check_run_dir(cfg.out, resume, overwrite)
    records, source_report = load_records(cfg.data, log)
    records, sampled = sample_training_classes(records, cfg, log)
    run_dir = open_run_folder(cfg, action, resolved, log, dist)
    backbone = BackboneOnDemand(spec, device, backbone_loader, log)
    feats = cached_features(records, spec, cfg, backbone, device, log, dist)
    check_bad_images(records, feats, source_report, sampled, cfg, run_dir, log, dist)
    split = split_training_data(records, feats, cfg, log)
    projection, head, domain_head, stats = build_head_model(feats, split, cfg, log)
    tracker = start_tracking(cfg.wandb if dist.is_main else "off", run_dir, resolved, cfg.wandb_project, log)
    try:
        outcome = train_heads(feats, split, projection, head, domain_head, cfg, run_dir, action, device, tracker,
                              log, dist)
        if not dist.is_main:
            return RunResult(run_dir, outcome.history, {}, feats.computed)
        finetuned = None
        if cfg.stage2_blocks:
            finetuned = fine_tune_stage2(backbone(), projection, head, records, split, cfg, device, log)
        save_run(run_dir, spec, feats, projection, head, split.classes, cfg, resolved, outcome, finetuned)
        results: dict[str, Any] = {}
        if len(split.holdout_index):
            results["holdout"] = evaluate_holdout(records, feats, split, projection, stats, finetuned, backbone,
                                                  cfg, device, tracker, log)
        if cfg.eval_tasks:
            backbone.release()  # the training backbone is no longer needed; the eval loads the model whole
            report, summary = task_eval(run_dir / RUN_MODEL, cfg, str(device), log)
            results["tasks"] = report
            tracker.summary(summary)
        results["seconds"] = round(time.perf_counter() - started, 2)
        write_json(run_dir / RUN_EVAL, results)
    finally:
        tracker.finish()
    log(f"run folder: {run_dir}")
    return RunResult(run_dir, outcome.history, results, feats.computed)


def check_recipe(cfg: TrainConfig, dist: DistContext,
                 log: Callable[[str], None] = print) -> tuple[BackboneSpec, torch.device]:
    """The backbone spec and this rank's device, once the recipe is known to be exportable and runnable.

    Raises GuieError for a backbone that is not there (a wrong name, path or tag; an hf-hub: model or
    timm tag neither cached nor on the Hugging Face hub, checked with a bounded wait and a progress
    line on ``log``), for one guie-export would refuse (now, not after the training) and for stage 2
    under torchrun.
    """
    spec = BackboneSpec.resolve(cfg.backbone, cfg.pretrained, cfg.image_size, log=log)
    problem = export_problem(spec.name, expected_preprocess(spec))
    if problem:
        raise GuieError(f"{problem}; choose another --backbone")
    device = dist.device(resolve_device(cfg.device))
    if cfg.stage2_blocks and dist.enabled:
        raise GuieError("--stage2-blocks runs in one process; run stage 2 without torchrun")
    return spec, device


def resolved_config(cfg: TrainConfig, spec: BackboneSpec, dist: DistContext) -> dict[str, Any]:
    """config.json: the config with the package version, git commit, the resolved backbone spec and its
    fingerprint, and the world size."""
    return {**cfg.to_dict(), "guie_version": __version__, "git_commit": git_commit(),
            "backbone_spec": spec.to_dict(), "backbone_fingerprint": spec.fingerprint(), "world_size": dist.world}


def sample_training_classes(records: list[Record], cfg: TrainConfig,
                            log: Callable[[str], None]) -> tuple[list[Record], SampleReport]:
    """The records of the classes --classes / --min-per-class / --max-per-class keep (see sample_classes)."""
    records, sampled = sample_classes(records, cfg.classes, cfg.min_per_class, cfg.max_per_class, cfg.seed,
                                      cfg.domain_caps())
    log(f"classes: kept {sampled.classes_kept} of {sampled.classes_eligible} with >= {cfg.min_per_class} images "
        f"({sampled.images_kept} images)")
    return records, sampled


def open_run_folder(cfg: TrainConfig, action: str, resolved: dict[str, Any], log: Callable[[str], None],
                    dist: DistContext) -> Path:
    """The run folder, prepared by rank 0 as ``check_run_dir`` decided (config.json written unless resuming);
    every rank waits for it."""
    run_dir = Path(cfg.out)
    if dist.is_main:
        prepare_run_dir(cfg.out, action, log)
        if action != "resume":
            write_json(run_dir / RUN_CONFIG, resolved)
    dist.barrier()
    return run_dir


def cached_features(records: list[Record], spec: BackboneSpec, cfg: TrainConfig, backbone: Callable[[], Backbone],
                    device: torch.device, log: Callable[[str], None], dist: DistContext) -> CachedFeatures:
    """The records' frozen features, clean view and --aug-views augmented views, from the cache (filled first)."""
    return ensure_features([r.path for r in records], spec, cfg.aug_views, feature_cache_dir(cfg.cache_dir), backbone,
                           batch_size=cfg.extract_batch_size, num_workers=cfg.workers, device=device, log=log,
                           shard_size=cfg.shard_size, dist=dist, need_sizes=cfg.size_features)


def check_bad_images(records: list[Record], feats: CachedFeatures, source_report: list[dict[str, Any]],
                     sampled: SampleReport, cfg: TrainConfig, run_dir: Path, log: Callable[[str], None],
                     dist: DistContext) -> None:
    """Write data.json (sources, sampling, unreadable images); raise GuieError when more than
    --max-bad-frac of the images cannot be read."""
    bad_frac = len(feats.bad) / max(1, len(records))
    data_report = {"sources": source_report, "sampling": vars(sampled), "bad_images": len(feats.bad),
                   "bad_image_list": [{"path": records[i].path, "reason": why} for i, why in sorted(feats.bad.items())]}
    if dist.is_main:
        write_json(run_dir / RUN_DATA_REPORT, data_report)
    if bad_frac > cfg.max_bad_frac:
        raise GuieError(f"{len(feats.bad)} of {len(records)} images ({bad_frac:.1%}) cannot be read, more than "
                        f"--max-bad-frac {cfg.max_bad_frac}; see {run_dir / RUN_DATA_REPORT}, fix the files or raise the limit")
    if feats.bad:
        log(f"skipped {len(feats.bad)} unreadable images (listed in {run_dir / RUN_DATA_REPORT})")


@dataclass
class TrainingSplit:
    """Which readable records train and which are held out, and the labels training sees."""

    train_index: np.ndarray  # record positions, int64
    holdout_index: np.ndarray  # record positions, int64 (empty without --eval holdout)
    classes: list[str]  # class keys of the training images, sorted; class id = position
    labels: np.ndarray  # per record: class id, -1 outside training
    domains: list[str]  # domains of the training images, sorted
    domain_labels: np.ndarray  # per record: domain id, -1 for a domain without training images


def split_training_data(records: list[Record], feats: CachedFeatures, cfg: TrainConfig,
                        log: Callable[[str], None]) -> TrainingSplit:
    """The readable records, split into training and (with --eval holdout) held-out images, and labelled."""
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
    domains = sorted({records[i].domain for i in train_index})
    domain_labels = np.array([domains.index(r.domain) if r.domain in domains else -1 for r in records])
    return TrainingSplit(train_index, holdout_index, classes, labels, domains, domain_labels)


def build_head_model(feats: CachedFeatures, split: TrainingSplit, cfg: TrainConfig,
                     log: Callable[[str], None]
                     ) -> tuple[Projection, MarginHead, torch.nn.Linear | None, tuple[torch.Tensor, torch.Tensor]]:
    """The projection (its input standardised by the training features' mean and std), the margin head
    and, with --domain-loss, the domain head; all initialised from --seed, in this order."""
    torch.manual_seed(cfg.seed)
    projection = Projection(feats.feature_dim, cfg.dim, cfg.batchnorm, cfg.dropout, cfg.size_features)
    stats = feature_stats(projection, feats.views[0], split.train_index, cfg.seed, feats.sizes)
    projection.set_feature_stats(*stats)
    if feats.sizes is not None:
        hw = feats.sizes[split.train_index]
        log(f"size features: training images {int(hw[:, 0].min())}-{int(hw[:, 0].max())} pixels high, "
            f"{int(hw[:, 1].min())}-{int(hw[:, 1].max())} wide"
            + ("; they all share one size, so the size features carry nothing and are ignored"
               if (hw == hw[0]).all() else ""))
    head = build_head(cfg.head, cfg.dim, len(split.classes), cfg.scale, cfg.margin, cfg.subcenters)
    domain_head = torch.nn.Linear(cfg.dim, len(split.domains)) if cfg.domain_loss > 0 else None
    return projection, head, domain_head, stats


def train_heads(feats: CachedFeatures, split: TrainingSplit, projection: Projection, head: MarginHead,
                domain_head: torch.nn.Module | None, cfg: TrainConfig, run_dir: Path, action: str,
                device: torch.device, tracker: Tracker, log: Callable[[str], None], dist: DistContext) -> TrainOutcome:
    """The head training loop over the cached features (guie.train.loop), from the last checkpoint on resume."""
    settings = LoopSettings(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.seed,
                            cfg.ema, parse_margin_schedule(cfg.margin_schedule), cfg.domain_loss)
    resume_state = load_checkpoint(run_dir) if action == "resume" else None
    return train_head(feats.views, split.train_index, split.labels, projection, head, settings, run_dir, device,
                      tracker, resume_state, log=log, dist=dist, domain_head=domain_head,
                      domain_labels=split.domain_labels, sizes=feats.sizes)


def fine_tune_stage2(backbone: Backbone, projection: Projection, head: MarginHead, records: list[Record],
                     split: TrainingSplit, cfg: TrainConfig, device: torch.device,
                     log: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """--stage2-blocks: fine-tune the backbone's last blocks and the head on the training images;
    returns the changed block weights (see guie.train.stage2.fine_tune)."""
    settings = Stage2Settings(cfg.stage2_blocks, cfg.lr, cfg.stage2_lr_scale, cfg.stage2_epochs, cfg.batch_size,
                              cfg.weight_decay, cfg.seed, cfg.workers)
    return fine_tune(backbone, projection, head, [records[i].path for i in split.train_index],
                     split.labels[split.train_index], settings, device, log)


def save_run(run_dir: Path, spec: BackboneSpec, feats: CachedFeatures, projection: Projection, head: MarginHead,
             classes: list[str], cfg: TrainConfig, resolved: dict[str, Any], outcome: TrainOutcome,
             finetuned: dict[str, torch.Tensor] | None) -> None:
    """model.pt (everything evaluation and export need) and classes.json into the run folder."""
    save_model_file(run_dir / RUN_MODEL, backbone=spec, preprocess_cfg=feats.preprocess_cfg,
                    projection=projection.cpu(), head=head.cpu(), head_kind=cfg.head, classes=classes,
                    config=resolved, version=__version__, raw_weights=outcome.raw_weights,
                    backbone_finetuned=finetuned)
    write_json(run_dir / RUN_CLASSES, classes)


def evaluate_holdout(records: list[Record], feats: CachedFeatures, split: TrainingSplit, projection: Projection,
                     stats: tuple[torch.Tensor, torch.Tensor], finetuned: dict[str, torch.Tensor] | None,
                     backbone: Callable[[], Backbone], cfg: TrainConfig, device: torch.device, tracker: Tracker,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """--eval holdout: mP@5 (and P@1, mAP@5) of held-out queries (at most HOLDOUT_MAX_QUERIES) against the
    training images, beside a random 64-D projection's; logged, and sent to the tracker summary.

    After stage 2 the cached features predate the fine-tuned blocks, so the images are streamed again.
    """
    holdout_index = holdout_queries(split.holdout_index, cfg.seed)
    class_keys = [r.class_key for r in records]
    projection.to(device)
    if finetuned:
        tuned = backbone()

        def embed_at(index: np.ndarray) -> np.ndarray:
            return embed_through_finetuned_tower(tuned, projection, [records[i].path for i in index], device,
                                                 cfg.extract_batch_size, cfg.workers)
    else:
        def embed_at(index: np.ndarray) -> np.ndarray:
            return project_features(projection, feats.views[0], index, device, feats.sizes)
    train_index = split.train_index
    holdout = evaluate_retrieval(embed_at(train_index), [class_keys[i] for i in train_index],
                                 embed_at(holdout_index), [class_keys[i] for i in holdout_index])
    holdout["random_projection_mP@5"] = random_projection_baseline(
        feats.views[0], holdout_index, train_index, class_keys, cfg.dim, cfg.seed, *stats)
    projection.cpu()
    log(f"mP@5 {holdout['mP@5']:.4f}  (P@1 {holdout['P@1']:.4f}, mAP@5 {holdout['mAP@5']:.4f}; "
        f"random 64-D projection {holdout['random_projection_mP@5']:.4f}; "
        f"{holdout['queries']} held-out queries against {holdout['index']} training images)")
    tracker.summary({f"holdout/{k}": v for k, v in holdout.items()})
    return holdout
