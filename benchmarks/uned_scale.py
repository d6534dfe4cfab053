"""UnED's test protocol at a fraction of its size: reading the info files, and scoring both settings.

Writes a synthetic UnED ``data/`` folder: for each domain, its test split (and index split) with
``--fraction`` of the published sizes (dataset_infos.py; 241,986 queries and a 1,397,126-image
common index at 1.0), about as many images per class as the real split, an empty file per image
(nothing is decoded) and info files in the published format. Then, with guie's own code:

  read     build_uned_task: the info files, a file check per entry, the protocol's sets, n_q
  score    evaluate_uned on random unit 64-D embeddings: separate and common k-NN
           (guie.retrieval.knn) and the protocol's metrics

Prints seconds per stage, the peak RSS, and ``ratio uned_common_knn_share``: the share of the
scoring time spent in the common setting's k-NN, the part that grows as queries x index.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# domain -> (test queries, index images or None for test vs test, images per class)
SIZES = {"cars": (8131, None, 83), "sop": (60502, None, 5), "inshop": (14218, 12612, 4),
         "inat": (136093, None, 30), "met": (1003, 397121, 2), "gldv2": (1129, 761757, 10),
         "food2k": (9979, None, 11), "rp2k": (10931, None, 10)}


def write_split(root: Path, domain: str, split: str, n: int, per_class: int) -> None:
    folder = root / "images" / domain / split
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        (folder / f"{i}.jpg").touch()
        entries.append({"path": f"{domain}/{split}/{i}.jpg", "class_id": i // per_class})
    (root / "info_files" / domain).mkdir(parents=True, exist_ok=True)
    (root / "info_files" / domain / f"{split}.json").write_text(json.dumps(entries))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.1, help="share of UnED's test-protocol sizes")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="guie-uned-"))
    try:
        run(work / "data", args.fraction)
    finally:
        shutil.rmtree(work)


def run(root: Path, fraction: float) -> None:
    from guie.eval.uned import build_uned_task, evaluate_uned

    for domain, (queries, index, per_class) in SIZES.items():
        write_split(root, domain, "test", max(2, round(queries * fraction)), per_class)
        if index:  # index classes overlap the queries' (ids from 0)
            write_split(root, domain, "index", max(2, round(index * fraction)), per_class)
    t0 = time.perf_counter()
    task = build_uned_task(f"uned:{root}", "test")
    t_read = time.perf_counter() - t0
    paths = sorted(task.paths())
    vectors = np.random.default_rng(0).normal(size=(len(paths), 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    position = {p: i for i, p in enumerate(paths)}
    import guie.eval.uned as uned

    spent = {"common": 0.0}
    inner = uned.knn

    def timed_knn(xb, xq, k):
        t = time.perf_counter()
        out = inner(xb, xq, k)
        if len(xb) == task.index_size:
            spent["common"] += time.perf_counter() - t
        return out

    uned.knn = timed_knn
    t0 = time.perf_counter()
    row, _ = evaluate_uned(task, vectors, position)
    t_score = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{os.cpu_count()} CPU cores; fraction {fraction}: {task.queries} queries, common index "
          f"{task.index_size}, {len(paths)} images")
    print(f"read  {t_read:8.2f} s  ({t_read / len(paths) * 1e6:.1f} us per image)")
    print(f"score {t_score:8.2f} s  (common k-NN {spent['common']:.2f} s)  mMP@5 {row['mP@5']:.4f} (random)")
    print(f"peak RSS {peak:.0f} MiB")
    print(f"ratio uned_common_knn_share: {spent['common'] / t_score:.2f}")


if __name__ == "__main__":
    sys.exit(main())
