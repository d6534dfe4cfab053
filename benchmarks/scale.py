"""Scale: guie-train's stages other than the backbone, on synthetic GLDv2-like data at growing N.

For each N (10k, 100k, 1M by default; ``--max-n 5000000`` goes on to 5M) in a fresh process: a
GLDv2 ``train.csv`` of N rows over about N/18 landmarks (long-tailed, like GLDv2's 1.58M clean
images of 81k landmarks) with an empty file per image in GLDv2's ``train/a/b/c/<id>.jpg``
layout (no image is decoded), and a feature cache of N random rows written shard by shard
through ``FeatureCache.add_shard``. Timed, each with guie's own code:

  records   the gldv2 adapter: CSV parsing, a file check per row, Record objects
  sampling  class sampling (all classes with >= 2 images) and the 20% per-class holdout split
  keys      the cache key of every sampled image (one stat each)
  write     adding the N/shard-size shards to the cache (files and bookkeeping)
  open      opening the cache: journal, every shard's keys, the key index
  missing   which images the cache lacks (none)
  table     the feature table of all N images
  epoch     one train_head epoch on the memory-mapped features, ArcFace over --head-classes
            classes (its matmul is batch x classes: with every GLDv2 class it would grow as N x
            classes, the head's own arithmetic, not bookkeeping)
  knn       embedding the training images and --queries held-out ones, exact k-NN, mP@5

Prints a table (seconds per stage, peak RSS), ``ratio scale_growth_exponent: X`` (the least-squares
slope of log total time over log N; 1.0 is linear) and the peak RSS per million images.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("records", "sampling", "keys", "write", "open", "missing", "table", "epoch", "knn")
ROWS_PER_CLASS = 18


def image_ids(n: int) -> list[str]:
    """n distinct 16-hex-digit ids, as GLDv2 names its images."""
    rng = np.random.default_rng(1)
    return [f"{x:016x}" for x in rng.choice(2**62, size=n, replace=False).tolist()]


def make_dataset(root: Path, n: int) -> list[str]:
    """Empty image files for n GLDv2 ids under ``root/train``; returns the ids."""
    ids = image_ids(n)
    for a in "0123456789abcdef":
        for b in "0123456789abcdef":
            for c in "0123456789abcdef":
                (root / "train" / a / b / c).mkdir(parents=True, exist_ok=True)
    for i in ids:
        os.close(os.open(f"{root}/train/{i[0]}/{i[1]}/{i[2]}/{i}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return ids


def write_csv(path: Path, ids: list[str], seed: int = 0) -> None:
    """GLDv2's train.csv (id,url,landmark_id) over ``ids``, long-tailed landmark sizes, rows shuffled."""
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, rng.lognormal(2.2, 1.0, size=len(ids)).astype(np.int64))
    labels = np.repeat(np.arange(len(sizes)), sizes)[:len(ids)]
    rng.shuffle(labels)
    with open(path, "w") as fh:
        fh.write("id,url,landmark_id\n")
        fh.writelines(f"{i},https://upload.wikimedia.org/x/{i}.jpg,{lab}\n" for i, lab in zip(ids, labels.tolist(), strict=True))


def run_one(args: argparse.Namespace) -> dict[str, float]:
    """All stages at one N, in this process; returns seconds per stage and peak RSS (MiB)."""
    import torch

    from guie.data import load_source
    from guie.data.sampling import holdout_split, sample_classes
    from guie.features.cache import FeatureCache, image_key
    from guie.features.extract import project_features as embed
    from guie.model.heads import build_head
    from guie.model.projection import Projection
    from guie.retrieval.knn import evaluate_retrieval
    from guie.train.loop import LoopSettings, train_head
    from guie.train.tracking import Tracker

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    t: dict[str, float] = {}

    def stage(name, fn):
        t0 = time.perf_counter()
        out = fn()
        t[name] = time.perf_counter() - t0
        return out

    data = stage("records", lambda: load_source(f"gldv2:{work / f'train-{args.one}.csv'}"))
    assert len(data.records) == args.one, (len(data.records), data.skipped[:3])

    def sampling():
        kept, _ = sample_classes(data.records, None, min_per_class=2)
        return kept, holdout_split(kept, 0.2, seed=0)

    records, (train_index, held_index) = stage("sampling", sampling)  # as guie-train: the sampled records
    data = None  # the records list is no longer needed (frees its memory before the later stages)
    train_index, held_index = np.array(train_index), np.array(held_index)
    keys = stage("keys", lambda: [image_key(r.path) for r in records])

    folder = work / f"cache-{args.one}"
    shutil.rmtree(folder, ignore_errors=True)
    block = np.random.default_rng(0).standard_normal((args.shard_size, args.dim), dtype=np.float32)
    sizes = np.full((args.shard_size, 2), 480, np.int32)
    meta = {"feature_dim": args.dim, "preprocess_cfg": {}}

    def write():
        cache = FeatureCache.open_dir(folder, {"format": "scale-benchmark"})
        for s in range(0, len(keys), args.shard_size):
            part = keys[s:s + args.shard_size]
            cache.add_shard(part, block[:len(part)], sizes[:len(part)], {}, meta)

    stage("write", write)
    cache = stage("open", lambda: FeatureCache.open_dir(folder, {"format": "scale-benchmark"}))
    assert not stage("missing", lambda: cache.missing(keys))
    table = stage("table", lambda: cache.table(keys))
    t["key_index_bytes"] = cache.key_index_bytes

    class_id: dict[str, int] = {}
    labels = np.array([class_id.setdefault(r.class_key, len(class_id)) % args.head_classes for r in records])
    del class_id
    projection = Projection(args.dim, 64)
    head = build_head("arcface", 64, args.head_classes, 30.0, 0.3, 1)
    settings = LoopSettings(epochs=1, batch_size=256, lr=1e-3, weight_decay=1e-4, warmup=0.1, seed=0)
    device = torch.device("cpu")
    stage("epoch", lambda: train_head([table], train_index, labels, projection, head, settings, work / "run", device,
                                      Tracker(), log=lambda _: None))
    queries = np.random.default_rng(0).permutation(held_index)[:args.queries]
    projection.eval()
    names = [r.class_key for r in records]
    stage("knn", lambda: evaluate_retrieval(embed(projection, table, train_index, device), [names[i] for i in train_index],
                                            embed(projection, table, queries, device), [names[i] for i in queries]))
    t["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(folder, ignore_errors=True)
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="N values, comma-separated")
    p.add_argument("--max-n", type=int, default=0, help="also run every N from the list of 10k, 100k, 1M, 5M up to this")
    p.add_argument("--shard-size", type=int, default=4096, help="rows per cache shard (guie-train's default)")
    p.add_argument("--dim", type=int, default=256, help="feature width of the synthetic cache")
    p.add_argument("--head-classes", type=int, default=4000, help="ArcFace classes of the head epoch")
    p.add_argument("--queries", type=int, default=2000, help="held-out queries of the k-NN stage")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads per stage (1: steady on a shared machine; 0: the libraries' default)")
    p.add_argument("--work", default="", help=argparse.SUPPRESS)
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    ns = sorted({int(x) for x in args.sizes.split(",")}
                | ({n for n in (10_000, 100_000, 1_000_000, 5_000_000) if n <= args.max_n} if args.max_n else set()))
    work = Path(tempfile.mkdtemp(prefix="guie-scale-"))
    try:
        t0 = time.perf_counter()
        ids = make_dataset(work, max(ns))
        print(f"{max(ns)} empty image files in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPU cores; "
              f"shard size {args.shard_size}, {args.dim}-D features, head of {args.head_classes} classes, "
              f"{args.queries} k-NN queries, {args.threads or 'default'} thread(s)", flush=True)
        results = {}
        for n in ns:
            write_csv(work / f"train-{n}.csv", ids[:n])
            cmd = [sys.executable, __file__, "--one", str(n), "--work", str(work), "--shard-size", str(args.shard_size),
                   "--threads", str(args.threads),
                   "--dim", str(args.dim), "--head-classes", str(args.head_classes), "--queries", str(args.queries)]
            env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"N={n} failed:\n{out.stderr[-3000:]}")
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            results[n]["total"] = sum(results[n][s] for s in STAGES)
            print(f"N={n}: {results[n]['total']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"| stage | {' | '.join(f'N={n:,}' for n in ns)} | exponent {ns[-2]:,}->{ns[-1]:,} |" if len(ns) > 1 else "")
    print("|---" * (len(ns) + 2) + "|")
    for s in (*STAGES, "total"):
        cells = " | ".join(f"{results[n][s]:.3f} s" for n in ns)
        a, b = results[ns[-2]][s], results[ns[-1]][s]
        slope = math.log(max(b, 1e-6) / max(a, 1e-6)) / math.log(ns[-1] / ns[-2]) if len(ns) > 1 else float("nan")
        print(f"| {s} | {cells} | {slope:.2f} |")
    rss = " | ".join(f"{results[n]['rss_mib']:.0f} MiB" for n in ns)
    print(f"| peak RSS | {rss} | |")
    x = np.log(np.array(ns, dtype=float))
    y = np.log(np.array([results[n]["total"] for n in ns]))
    exponent = float(np.polyfit(x, y, 1)[0]) if len(ns) > 1 else float("nan")
    lo = ns[-2] if len(ns) > 1 else 0
    per_million = (results[ns[-1]]["rss_mib"] - results.get(lo, {"rss_mib": 0})["rss_mib"]) / ((ns[-1] - lo) / 1e6)
    print(f"\npeak RSS per million images: {per_million:.0f} MiB (growth from N={lo:,} to N={ns[-1]:,}); "
          f"at N={ns[-1]:,}: {results[ns[-1]]['rss_mib']:.0f} MiB in all")
    print(f"the cache's key index: {results[ns[-1]]['key_index_bytes'] / ns[-1]:.0f} bytes per cached image "
          f"({results[ns[-1]]['key_index_bytes'] / 2**20:.0f} MiB at N={ns[-1]:,})")
    print(f"ratio scale_growth_exponent: {exponent:.2f}")


if __name__ == "__main__":
    main()
