"""The submission module: raw images in, L2-normalised embeddings out, preprocessing inside the graph.

Contract (DESIGN.md): input uint8 (or float 0..255) RGB, a batch ``(N, 3, H, W)`` of any H, W
or one image ``(3, H, W)``; output ``(N, dim)`` float32. Inside: to float, resize as the
backbone's open_clip preprocessing does, /255, CLIP mean/std, image tower, projection (given
the input's own H, W when the run was trained with size features), L2 normalise. Resize
semantics for ``resize_mode``:

- ``shortest`` (open_clip's default): the shorter side to S (the longer side to
  int(S * long / short), as torchvision's Resize does), then a centre crop of S x S (offsets
  rounded as torchvision's CenterCrop does);
- ``squash``: straight to S x S;
- ``longest`` (resize the longer side, pad the rest) is refused at export.

The resampling is the backbone's ``interpolation`` (bicubic or bilinear) with antialias, done
as Pillow does it on 8-bit images, which is what open_clip's transform runs on
(guie.model.pillow_resize): two separable passes, each clamped to 0..255 and rounded to whole
levels, in the order of the Pillow the run's features were made with (Pillow 13 runs the vertical
pass first when the height shrinks by more than twice as many pixels as the width). Only the
centre crop is resampled: an image smaller than S on its short side is enlarged in Pillow's own
integer arithmetic from the source pixels the crop reads (exactly open_clip's PIL pipeline), a
larger one through torch's antialiased operators (Pillow's filters in float: one grey level off on
under 0.1% of pixels, about 1e-5 on the embedding), so memory never grows with the aspect ratio.
An image with no pixels is refused with a ValueError naming its size; an empty batch gives
``(0, dim)``.
The batch is processed ``chunk`` images at a time, so at most one chunk's activations are alive:
the host gave single images, but a large batch must not run out of memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from guie.model.pillow_resize import resize_crop


def no_pixels_message(h: int, w: int) -> str:
    """The one-line error for an image with no pixels (its height or width 0)."""
    return (f"guie submission module: an image of {h} x {w} pixels has nothing to resize; "
            "feed images of at least 1 x 1 pixels")


def _check_has_pixels(short, h, w) -> None:
    """The same refusal under torch.export, as a runtime check the traced program keeps (never scripted)."""
    torch._check(short >= 1, lambda: no_pixels_message(h, w))


def preprocess(x: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor, squash: bool,
               interpolation: str = "bicubic", resize: int = 0, vertical_first_rule: bool = True) -> torch.Tensor:
    """uint8/float 0..255 images (N, 3, H, W) -> normalised float (N, 3, size, size).

    ``resize`` > ``size`` (a second-resolution TTA view) resizes to ``resize`` instead and
    centre-crops ``size`` out of that, in either resize mode. ``vertical_first_rule``: Pillow 13's
    pass order (guie.model.pillow_resize). Only the crop is resampled, so memory does not grow with
    the aspect ratio. Integer arithmetic without Python branches on shapes, so the same function
    scripts for TorchScript and traces symbolically for torch.export: ``size * side // short`` equals
    torchvision's ``int(size * long / short)``, and ``(d + (d // 2) % 2) // 2`` equals its
    centre-crop offset ``int(round(d / 2))`` (round half to even). An image with no pixels raises
    ValueError.
    """
    target = resize if resize > 0 else size
    h, w = x.shape[-2], x.shape[-1]
    if torch.jit.is_scripting():
        short = min(h, w)
        if short < 1:
            raise ValueError(no_pixels_message(h, w))
    else:
        short = torch.sym_min(h, w)
        _check_has_pixels(short, h, w)
    if squash:
        new_h, new_w = target, target
    else:
        new_h, new_w = target * h // short, target * w // short
    top = (new_h - size + ((new_h - size) // 2) % 2) // 2
    left = (new_w - size + ((new_w - size) // 2) % 2) // 2
    x = resize_crop(x, new_h, new_w, top, left, size, size, interpolation, vertical_first_rule)
    return (x / 255.0 - mean) / std


def original_sizes(images: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` float (height, width) of a batch ``(N, 3, H, W)``: what size features are computed from."""
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    ones = torch.ones(n, 1, dtype=torch.float32, device=images.device)
    return torch.cat([ones * h, ones * w], dim=1)


class EmbeddingCore(nn.Module):
    """Image tower + projection on preprocessed pixels (and the original sizes, for size features)."""

    def __init__(self, visual: nn.Module, projection: nn.Module):
        super().__init__()
        self.visual = visual
        self.projection = projection
        self.dim = int(projection.dim)  # the embedding's width, for the answer to an empty batch

    def forward(self, pixels: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        return self.projection(self.visual(pixels), sizes)


class SubmissionModule(nn.Module):
    """Raw images -> (N, dim) float32 unit vectors; see the module docstring for the contract.

    Test-time augmentation: ``tta_flip`` adds each view's mirror image, ``tta_resize`` > 0 adds
    a second view resized to that many pixels and centre-cropped to ``size``; the output is the
    normalised mean of all views' embeddings. ``resize`` > 0 does the same to the first view
    (timm's eval crop: resize to floor(size / crop_pct), then the centre crop).
    """

    def __init__(self, core: nn.Module, size: int, mean: list[float], std: list[float], resize_mode: str,
                 chunk: int = 32, half: bool = False, tta_flip: bool = False, interpolation: str = "bicubic",
                 tta_resize: int = 0, resize: int = 0, vertical_first_rule: bool = True):
        super().__init__()
        self.core = core
        self.dim = int(core.dim)
        self.size = size
        self.resize = resize
        self.squash = resize_mode == "squash"
        self.vertical_first_rule = vertical_first_rule
        self.chunk = chunk
        self.half = half
        self.tta_flip = tta_flip
        self.tta_resize = tta_resize
        self.interpolation = interpolation
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        # The host fed CPU tensors, some teams moved the model to a GPU first: compute where the
        # weights are and answer on the input's device.
        device = images.device
        images = images.to(self.mean.device)
        if self.chunk <= 0:  # torch.export: one pass over the batch (a loop over it would fix its size)
            return self._embed(images).to(device)
        if images.shape[0] == 0:  # an empty batch: no images, no embeddings (the tower would refuse it)
            return torch.zeros(0, self.dim, dtype=torch.float32, device=device)
        outputs: list[torch.Tensor] = []
        for start in range(0, images.shape[0], self.chunk):
            outputs.append(self._embed(images[start:start + self.chunk]))
        return torch.cat(outputs, dim=0).to(device)

    def _view(self, images: torch.Tensor, sizes: torch.Tensor, resize: int) -> torch.Tensor:
        """The summed embeddings of one resolution and, under flip TTA, its mirror image."""
        pixels = preprocess(images, self.size, self.mean, self.std, self.squash, self.interpolation, resize,
                            self.vertical_first_rule)
        if self.half:
            pixels = pixels.half()
        embedding = self.core(pixels, sizes).float()
        if self.tta_flip:
            embedding = embedding + self.core(pixels.flip(-1), sizes).float()
        return embedding

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        sizes = original_sizes(images)  # the same for every view: they describe the image as given
        embedding = self._view(images, sizes, self.resize)
        views = 2 if self.tta_flip else 1
        if self.tta_resize > 0:
            embedding = embedding + self._view(images, sizes, self.tta_resize)
            views = views * 2
        return F.normalize(embedding / float(views), dim=-1)
