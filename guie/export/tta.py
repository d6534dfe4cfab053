"""Test-time augmentation specs for guie-export (``--tta``): which extra views the module averages."""
from __future__ import annotations

import math
from dataclasses import dataclass

from guie.errors import GuieError

TTA_HELP = ("none; flip (mean with the mirror image); scale:R (mean with a view resized to R times the input "
            "size, centre-cropped; 1 < R <= 2); or both, e.g. flip,scale:1.15")


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Which extra views the exported module averages: the mirror image, a second resolution, or both."""

    flip: bool = False
    scale: float | None = None

    def __str__(self) -> str:
        parts = (["flip"] if self.flip else []) + ([f"scale:{self.scale:g}"] if self.scale else [])
        return ",".join(parts) or "none"

    def resize(self, size: int) -> int:
        """The second view's resize target in pixels for a model input of ``size`` pixels (0: no second
        view). GuieError when the scale rounds back to ``size``: that view would be the first one again."""
        if not self.scale:
            return 0
        target = int(round(size * self.scale))
        if target <= size:
            least = least_new_view_scale(size)
            raise GuieError(f"--tta scale:{self.scale:g} gives no new view at this model's {size}-pixel input (it "
                            f"resizes to {target} pixels, the first view again); use scale:{least:g} or more")
        return target

    @property
    def views(self) -> int:
        return (2 if self.flip else 1) * (2 if self.scale else 1)


def least_new_view_scale(size: int) -> float:
    """The least ``--tta scale:`` factor, in thousandths, whose second view at a model input of ``size`` pixels
    is larger than ``size`` (``round(size * scale) > size``, Python's round: half to even)."""
    least = math.ceil((size + 0.5) / size * 1000) / 1000
    while int(round(size * least)) <= size:  # size + 0.5 rounds down to size when size is even
        least = round(least + 0.001, 3)
    return least


def parse_tta(value: str | None) -> TestTimeAugmentation:
    """``--tta`` as none, flip, scale:R or flip,scale:R."""
    parts = [p.strip() for p in (value or "none").split(",") if p.strip()]
    flip, scale = False, None
    for part in parts:
        name, _, arg = part.partition(":")
        if part == "none" and len(parts) == 1:
            continue
        if part == "flip" and not flip:
            flip = True
        elif name == "scale" and scale is None:
            try:
                scale = float(arg)
            except ValueError:
                scale = -1.0
            if not 1.0 < scale <= 2.0:
                raise GuieError(f"--tta {part!r}: the scale must be a number in (1, 2], e.g. scale:1.15")
        else:
            raise GuieError(f"unknown --tta {value!r}; choose {TTA_HELP}")
    return TestTimeAugmentation(flip, scale)
