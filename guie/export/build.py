"""Build the submission module from a run folder (or model.pt): eager for checking, scripted for shipping."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from guie.errors import GuieError
from guie.export.submission_module import EmbeddingCore, SubmissionModule, original_sizes
from guie.export.tta import parse_tta
from guie.model.backbone import export_problem, resize_before_crop
from guie.model.embedder import Embedder, load_embedder
from guie.model.pillow_resize import pillow_vertical_first_rule, resize_crop_unbounded


def build_submission_module(model: str | Path, fp16: bool = False, chunk: int = 32, tta: str = "none"
                            ) -> tuple[SubmissionModule, Embedder, dict[str, Any]]:
    """The eager SubmissionModule, the eager guie Embedder it wraps, and the preprocessing facts."""
    augmentation = parse_tta(tta)
    embedder, backbone = load_embedder(model, "cpu")
    cfg = backbone.preprocess_cfg
    problem = export_problem(backbone.spec.name, cfg)
    if problem:
        raise GuieError(problem)
    size = cfg["size"] if isinstance(cfg["size"], int) else int(cfg["size"][0])
    embedder.requires_grad_(False).eval()
    core = EmbeddingCore(embedder.visual, embedder.projection)
    if fp16:
        # The image tower carries the weight; the projection stays fp32 and gets float features.
        core.visual.half()
    tta_resize = augmentation.resize(size)
    # timm's eval crop: resize to floor(size / crop_pct), then the centre size x size (0: open_clip's, straight to size)
    resize = resize_before_crop(cfg)
    vertical_first = pillow_vertical_first_rule()  # the pass order of the Pillow the features were made with
    module = SubmissionModule(core, size, list(cfg["mean"]), list(cfg["std"]), cfg["resize_mode"], chunk, fp16,
                              tta_flip=augmentation.flip, interpolation=cfg["interpolation"],
                              tta_resize=tta_resize, resize=resize, vertical_first_rule=vertical_first).eval()
    order = ("vertical first when the height shrinks by more than twice the width's pixels, as Pillow 13"
             if vertical_first else "horizontal first, as Pillow before 13")
    info = {"image_size": size, "resize_mode": cfg["resize_mode"], "interpolation": cfg["interpolation"],
            "resampling": f"antialiased, two passes each rounded to 8 bits ({order}); only the crop resampled",
            "vertical_first_rule": vertical_first,
            "mean": list(cfg["mean"]), "std": list(cfg["std"]), "chunk": chunk, "fp16": fp16,
            "backbone": backbone.spec.to_dict(), "dim": embedder.projection.dim,
            "size_features": embedder.projection.size_features, "tta": str(augmentation),
            "tta_resize": tta_resize, "resize": resize,
            "pil_pipeline": "timm" if "crop_pct" in cfg else "open_clip"}
    if "crop_pct" in cfg:
        info.update(crop_pct=cfg["crop_pct"], crop_mode=cfg["crop_mode"])
    return module, embedder, info


def eager_reference(embedder: Embedder, info: dict[str, Any], images: torch.Tensor) -> torch.Tensor:
    """The eager guie Embedder on the plain definition of the tensor preprocessing, in Python: the parity
    reference. Unlike the module it resizes the whole image before the crop
    (guie.model.pillow_resize.resize_crop_unbounded: Pillow's integer passes when both axes enlarge, torch's
    antialiased operator otherwise), so verify checks the bounded resampling against the simple one; its
    memory grows with the aspect ratio (fine for the test images)."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    mean = torch.tensor(info["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(info["std"]).view(1, 3, 1, 1)
    augmentation = parse_tta(info["tta"])
    sizes = original_sizes(images)
    size, h, w = info["image_size"], images.shape[-2], images.shape[-1]
    embeddings = []
    with torch.inference_mode():
        for resize in [info.get("resize", 0)] + ([info["tta_resize"]] if augmentation.scale else []):
            target = resize or size
            if info["resize_mode"] == "squash":
                new_h = new_w = target
            else:
                new_h, new_w = target * h // min(h, w), target * w // min(h, w)
            top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))  # torchvision's CenterCrop
            levels = resize_crop_unbounded(images, new_h, new_w, top, left, size, size, info["interpolation"],
                                           info.get("vertical_first_rule", False))
            pixels = (levels / 255.0 - mean) / std
            if info["fp16"]:
                pixels = pixels.half()
            embeddings.append(embedder(pixels, sizes).float())
            if augmentation.flip:
                embeddings.append(embedder(pixels.flip(-1), sizes).float())
        return torch.nn.functional.normalize(torch.stack(embeddings).mean(0), dim=-1)


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """TorchScript by scripting (not tracing), so any H, W and batch size take the same graph; of the
    portable rewrite (``guie.export.portable``), so every PyTorch from 1.11 on can load it."""
    from guie.export.portable import script_portable

    try:
        return script_portable(module)
    except GuieError:
        raise
    except Exception as exc:  # noqa: BLE001 - TorchScript reports unsupported code with many types
        raise GuieError(f"TorchScript could not compile the model ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:160]}); try --program instead") from None


def export_program(module: SubmissionModule, path: Path) -> None:
    """torch.export with dynamic batch, height and width, saved as a .pt2 program."""
    from torch.export import Dim

    example = torch.randint(0, 256, (2, 3, 40, 57), dtype=torch.uint8)
    dims = {"images": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=dims)
    except Exception as exc:  # noqa: BLE001 - torch.export reports unsupported code with many types
        raise GuieError(f"torch.export could not capture the model ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:160]}); use --torchscript") from None
    torch.export.save(program, str(path))
