"""The gallery's pictures: one bounded JPEG thumbnail per image file, a named placeholder for a file that
does not decode, and a task's first rows drawn as one PNG (for a terminal, a notebook or a W&B log).

Images open with PIL and convert to RGB as the host did (``guie.data.images.load_rgb``); JPEGs are
decoded at reduced size first (PIL's draft mode), so a 4,000-pixel photo costs a fraction of a full
decode. Thumbnails fit in THUMB_PX x THUMB_PX; small images (the demo's 32 x 32 digits) are enlarged by a
whole factor with nearest-neighbour resampling, so they stay sharp.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

THUMB_PX = 128  # longest side of a thumbnail
JPEG_QUALITY = 85
HIT_RGB = (26, 150, 65)  # the frame of a relevant result (same colours as the HTML pages)
MISS_RGB = (215, 48, 39)
QUERY_RGB = (60, 90, 200)


def thumb_name(path: str) -> str:
    """The thumbnail's file name for the image file ``path``: a hash of its absolute path (any bytes) + .jpg."""
    digest = hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:20]
    return f"{digest}.jpg"


def shown_text(text: str) -> str:
    """``text`` as a person can read it: itself, or Python's repr when it holds bytes that are not UTF-8
    (a file name read with surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return repr(text)
    return text


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: ImageFont.ImageFont,
               width: int, fill: tuple[int, int, int] = (30, 30, 30)) -> None:
    """``text`` cut to ``width`` pixels (ending in '...'), drawn at ``xy``."""
    text = shown_text(text)
    try:
        draw.textlength(text, font=font)
    except (UnicodeEncodeError, ValueError):  # a bitmap font knows Latin-1 only
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    if draw.textlength(text, font=font) > width:
        while text and draw.textlength(text + "...", font=font) > width:
            text = text[:-1]
        text += "..."
    draw.text(xy, text, fill=fill, font=font)


def _decode(path: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's DecompressionBomb and palette warnings
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG only: decode at 1/2 .. 1/8 scale
            return img.convert("RGB")


def _fit(img: Image.Image) -> Image.Image:
    longest = max(img.size)
    if longest * 2 <= THUMB_PX:
        factor = THUMB_PX // longest
        return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    img = img.copy()
    img.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return img


def placeholder(name: str, reason: str) -> Image.Image:
    """A grey THUMB_PX square saying the file ``name`` cannot be decoded, and why (first words)."""
    img = Image.new("RGB", (THUMB_PX, THUMB_PX), (225, 225, 225))
    draw = ImageDraw.Draw(img)
    font = _font(11)
    draw.rectangle((0, 0, THUMB_PX - 1, THUMB_PX - 1), outline=(150, 150, 150))
    for i, line in enumerate(("cannot decode", name, reason)):
        _draw_text(draw, (6, 8 + 18 * i), line, font, THUMB_PX - 12, fill=(90, 90, 90))
    return img


def write_thumbnail(path: str, target: Path) -> str | None:
    """Write the thumbnail of the image file ``path`` to ``target`` (JPEG); None when it decoded, else the
    one-line reason it did not (the placeholder is written instead)."""
    try:
        img, problem = _fit(_decode(path)), None
    except Exception as exc:  # noqa: BLE001 - every decode failure gets the same placeholder
        detail = " ".join(str(exc).replace(path, Path(path).name).split())[:120]  # the page names the file
        problem = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        img = placeholder(Path(path).name, problem)
    img.save(target, format="JPEG", quality=JPEG_QUALITY)
    return problem


@dataclass(frozen=True)
class SheetTile:
    """One picture of a sheet row: its thumbnail file, the caption lines, and the frame colour (RGB)."""

    thumb: Path
    lines: tuple[str, ...]
    frame: tuple[int, int, int]


@dataclass(frozen=True)
class SheetRow:
    """A query tile and, per model, a heading (model name, score) and its result tiles."""

    query: SheetTile
    strips: tuple[tuple[str, tuple[SheetTile, ...]], ...]


def draw_sheet(rows: Sequence[SheetRow], title: str, k: int, target: Path, tile: int = 96) -> None:
    """Draw ``rows`` as one PNG at ``target``: the title line, then per row the query on the left and each
    model's strip of up to ``k`` results to its right, one strip under the other, frames coloured as on the
    page (green relevant, red not)."""
    font, small = _font(13), _font(11)
    caption, pad, head = 3 * 13, 6, 120
    cell_w, cell_h = tile + 2 * pad, tile + 2 * pad + caption
    width = cell_w + head + k * cell_w + pad
    heights = [max(1, len(r.strips)) * cell_h + pad for r in rows]
    sheet = Image.new("RGB", (width, 28 + sum(heights) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    _draw_text(draw, (pad, 7), title, font, width - 2 * pad)

    def put(t: SheetTile, x: int, y: int) -> None:
        draw.rectangle((x + 1, y + 1, x + tile + 2 * pad - 2, y + tile + 2 * pad - 2), outline=t.frame, width=3)
        with Image.open(t.thumb) as im:
            im = im.convert("RGB")
            im.thumbnail((tile, tile), Image.Resampling.NEAREST if max(im.size) <= tile else Image.Resampling.LANCZOS)
            sheet.paste(im, (x + pad + (tile - im.width) // 2, y + pad + (tile - im.height) // 2))
        for i, line in enumerate(t.lines[:3]):
            _draw_text(draw, (x + 2, y + tile + 2 * pad + 13 * i), line, small, cell_w - 4)

    y = 28
    for row, h in zip(rows, heights, strict=True):
        put(row.query, 0, y)
        for s, (heading, tiles) in enumerate(row.strips):
            sy = y + s * cell_h
            for i, line in enumerate(heading.split("\n")[:3]):
                _draw_text(draw, (cell_w + 4, sy + pad + 16 * i), line, small, head - 8)
            for j, t in enumerate(tiles[:k]):
                put(t, cell_w + head + j * cell_w, sy)
        y += h
        draw.line((0, y - pad // 2, width, y - pad // 2), fill=(220, 220, 220))
    sheet.save(target, format="PNG", optimize=True)
