"""open_clip's inference transform, the same pixels, in memory bounded for any image shape.

open_clip resizes the short side to S (or R, for a resize-then-crop of S) and centre-crops S x S,
with PIL. For an image shorter than that on its short side, PIL first builds the whole enlarged
image: a 1 x 6000 strip at S = 224 becomes 224 x 1,344,000 RGB pixels (1.2 GB) for a crop of 224 x 224.
:func:`bounded_eval_transform` computes those two steps for such images through
guie.model.pillow_resize (Pillow's own integer arithmetic, for the crop only: the same bytes PIL
gives) and leaves every other image, and every other kind of transform, to open_clip as it is.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from guie.model.backbone import eval_transform
from guie.model.pillow_resize import pillow_vertical_first_rule, resize_crop

ENLARGED_MODES = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}


class BoundedResizeCrop:
    """``Resize(resize)`` (short side) then ``CenterCrop(crop)`` of a PIL image: for an RGB image shorter than
    ``resize`` on its short side computed through :func:`guie.model.pillow_resize.resize_crop` (exactly
    PIL's result, in memory of the order of the crop), otherwise by the original two steps ``steps``."""

    def __init__(self, resize: int, crop: int, interpolation: str, steps: list[Any]):
        self.resize, self.crop, self.interpolation, self.steps = resize, crop, interpolation, steps
        self.vertical_first_rule = pillow_vertical_first_rule()

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        short = min(w, h)
        if img.mode != "RGB" or short >= self.resize or short < 1:
            for step in self.steps:
                img = step(img)
            return img
        # torchvision's Resize: int(R * long / short) for the long side; CenterCrop: offsets int(round(d / 2))
        new_h, new_w = self.resize * h // short, self.resize * w // short
        top, left = int(round((new_h - self.crop) / 2.0)), int(round((new_w - self.crop) / 2.0))
        pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0)  # a copy: PIL gives a read-only buffer
        levels = resize_crop(pixels, new_h, new_w, top, left, self.crop, self.crop, self.interpolation,
                             self.vertical_first_rule)
        return Image.fromarray(levels[0].to(torch.uint8).permute(1, 2, 0).contiguous().numpy())

    def __repr__(self) -> str:
        return f"BoundedResizeCrop(resize={self.resize}, crop={self.crop}, interpolation={self.interpolation})"


def bounded_eval_transform(preprocess_cfg: dict[str, Any]) -> T.Compose:
    """:func:`guie.model.backbone.eval_transform` for ``preprocess_cfg``, with its leading ``Resize(R)`` (short
    side, bicubic or bilinear) and square ``CenterCrop(S)`` replaced by :class:`BoundedResizeCrop`: the same
    tensor for every image, float32 ``(3, S, S)`` normalised, without the enlarged image of a thin one.
    Transforms of another form (squash, longest, non-square) are returned unchanged: their PIL steps
    never make an image larger than the input and S x S."""
    transform = eval_transform(preprocess_cfg)
    steps = list(transform.transforms)
    if len(steps) >= 2 and isinstance(steps[0], T.Resize) and isinstance(steps[1], T.CenterCrop):
        resize, crop = steps[0].size, steps[1].size
        resize = resize if isinstance(resize, int) else resize[0] if len(resize) == 1 else None
        crop = crop if isinstance(crop, int) else crop[0] if len(set(crop)) == 1 else None
        mode = ENLARGED_MODES.get(steps[0].interpolation)
        if resize and crop and mode and steps[0].max_size is None:
            steps[:2] = [BoundedResizeCrop(resize, crop, mode, steps[:2])]
    return T.Compose(steps)
