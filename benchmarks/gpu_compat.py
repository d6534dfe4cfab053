"""Prepared GPU check: the portable submission file on CUDA, loaded the ways hosts load it.

For guie-tiny and a ViT-B-32 tower (random init, no download) with a random projection, the
exported file is loaded (1) with ``map_location="cuda"``, (2) on CPU then moved with ``.cuda()``,
and fed CPU uint8 images of the host's sizes one at a time, as the GUIE host did; the outputs are
compared with the same file on CPU. Prints one line per case and ``ratio cuda_vs_cpu_<model>``
(images/s at batch 32 on 224x224 uint8). Exits 0 printing 'skipped' without CUDA.

    python benchmarks/gpu_compat.py
"""
from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (this check needs a GPU)")
        return 0
    warnings.filterwarnings("ignore")
    from guie.export.host_images import host_cases
    from guie.export.portable import save_portable, script_portable
    from guie.export.submission_module import EmbeddingCore, SubmissionModule
    from guie.model.backbone import BackboneSpec, load_backbone
    from guie.model.projection import Projection

    for name in ("guie-tiny", "ViT-B-32"):
        backbone = load_backbone(BackboneSpec(name))
        torch.manual_seed(0)
        cfg = backbone.preprocess_cfg
        module = SubmissionModule(EmbeddingCore(backbone.visual, Projection(backbone.feature_dim, 64).eval()),
                                  backbone.image_size[0], list(cfg["mean"]), list(cfg["std"]), cfg["resize_mode"],
                                  32, interpolation=cfg["interpolation"]).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "saved_model.pt"
            save_portable(script_portable(module), path)
            cpu = torch.jit.load(str(path), map_location="cpu")
            for how, model in (("map_location=cuda", torch.jit.load(str(path), map_location="cuda")),
                               (".cuda() after load", torch.jit.load(str(path)).cuda())):
                worst = 0.0
                with torch.no_grad():
                    for x in host_cases():
                        y = model(x)  # a CPU tensor into a CUDA module
                        assert y.device.type == "cpu" and y.dtype == torch.float32
                        worst = max(worst, float((y - cpu(x)).abs().max()))
                print(f"{name}: {how}, CPU uint8 inputs: max abs diff to CPU {worst:.2e}")
            x = torch.randint(0, 256, (32, 3, 224, 224), dtype=torch.uint8)
            gpu = torch.jit.load(str(path), map_location="cuda")
            speed = {}
            with torch.no_grad():
                for label, model, inp in (("cpu", cpu, x), ("cuda", gpu, x.cuda())):
                    model(inp)
                    model(inp)
                    if inp.is_cuda:
                        torch.cuda.synchronize()
                    start, n = time.perf_counter(), 0
                    while time.perf_counter() - start < 2.0 or n < 3:
                        model(inp)
                        n += 1
                    if inp.is_cuda:
                        torch.cuda.synchronize()
                    speed[label] = n * 32 / (time.perf_counter() - start)
            print(f"{name}: {speed['cuda']:.0f} img/s on CUDA vs {speed['cpu']:.0f} on CPU (batch 32, 224x224)")
            print(f"ratio cuda_vs_cpu_{name}: {speed['cuda'] / speed['cpu']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
