"""guie-eval of a second run folder on the same backbone: it reads the features the first evaluation cached.

Two run folders of the same backbone (guie-tiny by default, random init) are trained on the
benchmark's digits into a training cache of their own, so evaluation starts from an empty cache.
Each round gives guie-eval a fresh feature cache: the first run folder's evaluation computes every
image's backbone features into it, the second's reads them and runs only its projection and the
k-NN; both on the same tasks (the digits, all images: a seeded query/index split) with guie-eval's
defaults. The two are timed interleaved over --repeat rounds, each side's best counting. Prints
second/first time (target <= 0.2 with guie-tiny on 2 cores).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common import interleaved, machine, parser, ratio, setup

from guie.config import TrainConfig
from guie.eval.evaluate import EvalSettings, evaluate
from guie.train.run import run_training


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(images=2000)
    args = p.parse_args()
    digits = setup(args)
    images = sum(1 for _ in digits.rglob("*.png"))
    work = Path(tempfile.mkdtemp(prefix="guie-bench-eval-"))
    runs = []
    for name, classes in (("first", 10), ("second", 6)):  # another head and class count, one backbone
        cfg = TrainConfig(data=[f"imagefolder:{digits}"], out=str(work / name), backbone=args.backbone,
                          pretrained="none", classes=classes, epochs=args.epochs, eval="none",
                          cache_dir=str(work / "train-cache")).validate()
        runs.append(run_training(cfg, log=lambda _: None).run_dir)
    tasks = [f"imagefolder:{digits}"]
    state: dict[str, object] = {"round": 0}
    lines: dict[str, list[str]] = {"first": [], "second": []}

    def first():
        state["round"] = int(state["round"]) + 1
        state["cache"] = str(work / f"eval-cache-{state['round']}")  # empty: this evaluation fills it
        lines["first"].clear()
        evaluate([runs[0]], tasks, EvalSettings(cache_dir=str(state["cache"])), log=lines["first"].append)

    def second():
        lines["second"].clear()
        evaluate([runs[1]], tasks, EvalSettings(cache_dir=str(state["cache"])), log=lines["second"].append)

    best = interleaved({"first": first, "second": second}, args.repeat)
    shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {machine()}; backbone {args.backbone}; {images} images, 1 task; best of {args.repeat} "
          "interleaved rounds")
    for side in ("first", "second"):
        said = next(line for line in lines[side] if line.startswith("backbone features of"))
        print(f"{side} run folder: {best[side]:.2f} s ({said.split(': ', 1)[1].split(' (cache')[0]})")
    ratio("eval_cached_vs_first", best["second"] / best["first"])


if __name__ == "__main__":
    main()
