"""GPU check (for a machine with CUDA): ViT-L-14 feature extraction images/s, fp16 autocast vs fp32.

Random-init weights (no download) and random pre-decoded 224x224 inputs: this measures the
backbone forward that guie's extraction runs, at the batch size of --batch. Under 5 minutes
on one modern GPU. Prints fp16/fp32 throughput.
"""
from __future__ import annotations

import argparse
import time

import torch

from guie.model.backbone import BackboneSpec, load_backbone


def images_per_s(visual, x: torch.Tensor, dtype: torch.dtype | None, seconds: float) -> float:
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for _ in range(3):
            visual(x)
        torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            visual(x)
            n += 1
        torch.cuda.synchronize()
    return n * len(x) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-L-14")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark is for a GPU machine)")
        return
    backbone = load_backbone(BackboneSpec(args.backbone), "cuda")
    x = torch.randn(args.batch, 3, *backbone.image_size, device="cuda")
    fp32 = images_per_s(backbone.visual, x, None, args.seconds)
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    fp16 = images_per_s(backbone.visual, x, half, args.seconds)
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.backbone}, batch {args.batch}")
    print(f"fp32: {fp32:.0f} img/s; {str(half).split('.')[-1]} autocast: {fp16:.0f} img/s")
    print(f"ratio half_vs_fp32_extraction: {fp16 / fp32:.2f}")


if __name__ == "__main__":
    main()
