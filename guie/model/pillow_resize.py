"""Pillow's antialiased 8-bit resize followed by a crop, in torch operators, in memory bounded for any image shape.

What it reproduces: ``Image.resize`` with BICUBIC or BILINEAR on an 8-bit RGB image, as open_clip's
transform runs it (Pillow's src/libImaging/Resample.c): two separable passes, each output pixel the
filter-weighted sum of the source pixels within the filter's support (2 pixels bicubic, a = -0.5;
1 bilinear; times the shrink factor when the pass shrinks), the weights normalised, quantised to
22-bit fixed point and summed in integers, each pass rounded half up and clamped to 0..255.
Pillow before 13 always runs the horizontal pass first; Pillow 13 runs the vertical pass first when
the height shrinks by more than twice as many pixels as the width (python-pillow/Pillow#9549), which
changes one grey level on many pixels of a tall image; ``vertical_first_rule`` picks the rule.

What it computes: only the crop. A pass that enlarges its axis (source shorter than target) is done
here in Pillow's own arithmetic, exactly, for the kept output pixels only and from the source pixels
they read (the support as margin); a pass that shrinks its axis runs torch's antialiased operator
(Pillow's filters, float weights: one grey level off Pillow on under 0.1% of pixels) over whole
lines, and only the crop's outputs are kept; scripted, a pass over more than 2 ** 23 values (32 MB
of float32) takes the lines 2 ** 18 values at a time (:func:`resample_axis`), a smaller one runs in
one call (a chunk of 32 photos at 224 px: measured, the block loop cost 25% of a ViT-B-32 export's
throughput). So no intermediate is longer than the crop along an axis the crop spans (plus the
support), and the scripted module holds no float copy of a large image: a 1 x 6000 strip
resized to 224 on its short side never becomes the 224 x 1,344,000 image it stands for, and a
3000 x 4000 photo costs its first pass's 224-pixel band (measured in tests/test_image_shapes.py:
at most 32 float (3, S, S) inputs plus 1 byte per image byte above the memory before the call, for
images over 2 ** 23 values; 64 MB at most below that).

Every function here scripts for TorchScript (PyTorch 1.11 operators only: the antialiased aten
upsampling operators and basic arithmetic) and traces symbolically for torch.export: the branches
on image shapes are Python ``if`` under scripting and ``torch.cond`` under tracing.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def _imin(a: int, b: int) -> int:
    if torch.jit.is_scripting():
        return min(a, b)
    return torch.sym_min(a, b)


def _imax(a: int, b: int) -> int:
    if torch.jit.is_scripting():
        return max(a, b)
    return torch.sym_max(a, b)


def _choose(pred, if_true: Callable, if_false: Callable, x: torch.Tensor) -> torch.Tensor:
    """``if_true(x)`` or ``if_false(x)`` by ``pred``: a plain branch when ``pred`` is known, ``torch.cond``
    when torch.export traces it as a symbolic shape condition (never scripted)."""
    if isinstance(pred, torch.SymBool) or torch.compiler.is_compiling():  # (inside a cond branch, dynamo traces)
        return torch.cond(pred, if_true, if_false, (x,))
    return if_true(x) if pred else if_false(x)


def _bind(fn: Callable, *args) -> Callable:
    """``fn`` with every argument after the image bound, for :func:`_choose` (never scripted)."""
    return lambda x: fn(x, *args)


def support_of(interpolation: str) -> int:
    """The filter's support in source pixels when a pass enlarges: 2 for bicubic, 1 for bilinear."""
    return 2 if interpolation == "bicubic" else 1


def pillow_filter(x: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Pillow's filter at float64 offsets ``x`` (its bicubic_filter with a = -0.5, or bilinear_filter),
    evaluated in the order of operations Pillow's C code uses, so the doubles agree bit for bit."""
    x = x.abs()
    zero = torch.zeros_like(x)
    if interpolation == "bicubic":
        near = (1.5 * x - 2.5) * x * x + 1.0
        far = (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
        return torch.where(x < 1.0, near, torch.where(x < 2.0, far, zero))
    return torch.where(x < 1.0, 1.0 - x, zero)


def source_window(n: int, m: int, start: int, count: int, support: int, x: torch.Tensor
                  ) -> tuple[int, torch.Tensor]:
    """The first source pixel and the int64 indices of ``count + 2 * support + 3`` source pixels that cover all an enlarging pass ``n -> m``
    (n < m) reads for its outputs ``start .. start + count - 1``, the first being the first it reads.

    Output i reads ``[floor(c - support + 0.5), floor(c + support + 0.5))``, c = (i + 0.5) n / m, within
    ``[0, n)``; as n / m < 1 the outputs' span is under ``count + 2 * support + 1`` pixels (one more of
    margin each side for Pillow's rounding). A fixed length, indices past the end repeating the last
    pixel: the window's shape depends on no image size, so torch.export needs no guard on it.
    """
    first = _imax(((2 * start + 1) * n + (1 - 2 * support) * m) // (2 * m) - 1, 0)  # below n - 1, as c < n
    return first, (torch.arange(count + 2 * support + 3, device=x.device) + first).clamp(max=n - 1)


def enlarge_last_axis(x: torch.Tensor, n: int, m: int, start: int, count: int, offset: int,
                      interpolation: str) -> torch.Tensor:
    """Outputs ``start .. start + count - 1`` of Pillow's 8-bit pass enlarging the last axis from ``n`` to
    ``m`` pixels (n < m), exactly as Pillow computes them (precompute_coeffs, normalize_coeffs_8bpc,
    ImagingResampleHorizontal_8bpc).

    ``x`` ``(..., k)`` holds the source pixels ``offset .. offset + k - 1`` of that axis (repeats past the end allowed) as 0..255 levels
    (uint8, or float rounded to whole levels first) and must cover :func:`source_window`. Returns int32
    levels ``(..., count)``.
    """
    support = support_of(interpolation)
    taps = 2 * support + 1  # Pillow's ksize: ceil(support) * 2 + 1 (no shrink factor when enlarging)
    scale = n / m
    out = torch.arange(count, dtype=torch.float64, device=x.device) + start
    center = (out + 0.5) * scale
    first = torch.floor(center - support + 0.5).clamp(min=0.0)  # Pillow's xmin, (int) of a value >= 0
    end = torch.floor(center + support + 0.5).clamp(max=n)  # its xmax
    tap = torch.arange(taps, dtype=torch.float64, device=x.device)
    pos = first.unsqueeze(1) + tap.unsqueeze(0)  # (count, taps) source pixels
    weight = torch.where(pos < end.unsqueeze(1), pillow_filter(pos - center.unsqueeze(1) + 0.5, interpolation),
                         torch.zeros_like(pos))
    total = weight[:, 0]
    for k in range(1, taps):  # Pillow's running sum, in its order
        total = total + weight[:, k]
    weight = weight / total.unsqueeze(1) * 4194304.0  # Pillow's PRECISION_BITS: 22-bit fixed point
    fixed = torch.where(weight < 0.0, torch.ceil(weight - 0.5), torch.floor(weight + 0.5)).to(torch.int32)
    index = (pos.to(torch.int64) - offset).clamp(0, x.shape[-1] - 1)  # taps past xmax have weight 0
    if x.is_floating_point():
        levels = torch.floor(x.float() + 0.5).to(torch.int32)
    else:  # uint8, or the int32 levels of the first pass: no float copy
        levels = x.to(torch.int32)
    acc = levels.index_select(-1, index[:, 0]) * fixed[:, 0] + 2097152  # Pillow's rounding term, 2 ** 21
    for k in range(1, taps):
        acc = acc + levels.index_select(-1, index[:, k]) * fixed[:, k]
    return (acc >> 22).clamp(0, 255)


def _resample_rows(flat: torch.Tensor, m: int, interpolation: str, start: int, count: int) -> torch.Tensor:
    """Rows ``(1, R, 1, n)`` of 0..255 levels resampled to ``m`` and cut to ``start .. start + count - 1``,
    rounded: float32 ``(1, R, 1, count)``."""
    flat = flat.float()
    if interpolation == "bicubic":
        flat = torch._C._nn._upsample_bicubic2d_aa(flat, [1, m], False, None, None)
    else:
        flat = torch._C._nn._upsample_bilinear2d_aa(flat, [1, m], False, None, None)
    return torch.floor(_centre(flat, 3, start, count).clamp(0.0, 255.0) + 0.5)


def resample_axis(x: torch.Tensor, dim: int, m: int, interpolation: str, start: int = 0, count: int = -1
                  ) -> torch.Tensor:
    """Torch's antialiased resampling of axis ``dim`` (2: height, 3: width) of 0..255 levels ``(N, C, H, W)``
    (N * C at least 1) to ``m`` pixels, clamped and rounded to whole levels (half up) as Pillow does: float32,
    that axis's outputs ``start .. start + count - 1`` (``count`` -1: all ``m``).

    The antialiased aten operators are called directly (they exist since PyTorch 1.11, and are what
    ``F.interpolate(..., antialias=True)`` calls with these arguments): scripting ``F.interpolate``
    would compile every one of its modes into the file, some absent from older torch releases. Every
    line along the axis becomes a channel of a one-row image resized in width: from PyTorch 2.0 the
    operators return wrong values when they resize the height of a one-pixel-wide image (measured: 2.0.1
    and 2.14.1, not 1.11), and a one-row image never resizes its height. The lines are independent, so the
    scripted module takes a pass over more than 2 ** 23 values 2 ** 18 values (1 MB of float32) at a time,
    each block laid out along the axis by itself, and keeps only the outputs asked for: it holds no float
    or transposed copy of a large image, nor its whole first pass; a smaller pass (a chunk of photos) runs
    in one call, as fast as the operator goes. torch.export takes them at once (a loop would fix the image's size).
    """
    if dim == 2:
        x = x.transpose(2, 3)  # a view: the axis to resample last
    n, c, lines, length = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    if count < 0:
        start, count = 0, m
    if torch.jit.is_scripting() and n * c * lines * max(length, m) > 8388608:  # 2 ** 23 values
        step = max(1, 262144 // (n * c * max(length, m)))
        out = torch.empty([n, c, lines, count], dtype=torch.float32, device=x.device)  # filled block by block
        for first in range(0, lines, step):
            block = x[:, :, first:first + step]
            rows = block.shape[2]
            out[:, :, first:first + rows] = _resample_rows(block.contiguous().reshape(1, n * c * rows, 1, length), m,
                                                           interpolation, start, count).reshape(n, c, rows, count)
    else:
        out = _resample_rows(x.contiguous().reshape(1, n * c * lines, 1, length), m, interpolation, start,
                             count).reshape(n, c, lines, count)
    return out.transpose(2, 3) if dim == 2 else out


def _centre(x: torch.Tensor, dim: int, start: int, count: int) -> torch.Tensor:
    # index_select, not slicing: the length is stated outright and never aliases the input, so
    # torch.export keeps one graph for every H, W (a slice of full length would specialise)
    return x.index_select(dim, torch.arange(count, device=x.device) + start)


def _enlarged(x: torch.Tensor, out_h: int, out_w: int, top: int, left: int, crop_h: int, crop_w: int,
              interpolation: str) -> torch.Tensor:
    """Both axes enlarge (horizontal pass first, as Pillow when neither side shrinks): Pillow's arithmetic on
    the source pixels the crop reads, for the crop only."""
    h, w = x.shape[-2], x.shape[-1]
    support = support_of(interpolation)
    a, rows = source_window(h, out_h, top, crop_h, support, x)
    c, cols = source_window(w, out_w, left, crop_w, support, x)
    # one gather of the (crop_h + 7) x (crop_w + 7) source pixels (bicubic): selecting the rows first would
    # hold crop_h + 7 rows of the whole width, for a wide strip much more than the crop
    index = (rows.unsqueeze(1) * w + cols.unsqueeze(0)).flatten()
    x = x.flatten(2).index_select(2, index).reshape(x.shape[0], x.shape[1], rows.shape[0], cols.shape[0])
    x = enlarge_last_axis(x, w, out_w, left, crop_w, c, interpolation)
    x = enlarge_last_axis(x.transpose(2, 3), h, out_h, top, crop_h, a, interpolation)
    return x.transpose(2, 3).float().contiguous()  # torch.cond: every branch's output laid out alike


def _shrunk(x: torch.Tensor, out_h: int, out_w: int, top: int, left: int, crop_h: int, crop_w: int,
            interpolation: str) -> torch.Tensor:
    """Horizontal pass first, torch's operator over whole lines, only the crop's columns kept for the second."""
    x = resample_axis(x, 3, out_w, interpolation, left, crop_w)
    return resample_axis(x, 2, out_h, interpolation, top, crop_h).contiguous()


def _shrunk_vertical_first(x: torch.Tensor, out_h: int, out_w: int, top: int, left: int, crop_h: int, crop_w: int,
                           interpolation: str) -> torch.Tensor:
    """The vertical pass first, only the crop's rows kept for the horizontal one."""
    x = resample_axis(x, 2, out_h, interpolation, top, crop_h)
    return resample_axis(x, 3, out_w, interpolation, left, crop_w).contiguous()


def _shrunk_in_order(x: torch.Tensor, out_h: int, out_w: int, top: int, left: int, crop_h: int, crop_w: int,
                     interpolation: str, vertical_first_rule: bool) -> torch.Tensor:
    first = vertical_pass_first(x.shape[-2], x.shape[-1], out_h, out_w, vertical_first_rule)
    if torch.jit.is_scripting():
        if first:
            return _shrunk_vertical_first(x, out_h, out_w, top, left, crop_h, crop_w, interpolation)
        else:
            return _shrunk(x, out_h, out_w, top, left, crop_h, crop_w, interpolation)
    else:
        return _choose(first, _bind(_shrunk_vertical_first, out_h, out_w, top, left, crop_h, crop_w, interpolation),
                       _bind(_shrunk, out_h, out_w, top, left, crop_h, crop_w, interpolation), x)


def pillow_vertical_first_rule() -> bool:
    """Whether the installed Pillow follows Pillow 13's pass order (the vertical pass first when the height
    shrinks by more than twice as many pixels as the width), i.e. whether it is Pillow 13 or newer."""
    import PIL

    return int(PIL.__version__.split(".")[0]) >= 13


def vertical_pass_first(h: int, w: int, out_h: int, out_w: int, vertical_first_rule: bool = True):
    """Whether Pillow resizes ``h x w`` to ``out_h x out_w`` vertical pass first: under Pillow 13's rule
    (``vertical_first_rule``) when the height shrinks, and by more than twice as many pixels as the width
    does (Resample.c, ImagingResampleInner); never before Pillow 13. A bool, or a symbolic one under
    torch.export."""
    shrink = h - out_h
    return vertical_first_rule and _imin(shrink, shrink - 2 * (w - out_w)) > 0


def resize_crop(x: torch.Tensor, out_h: int, out_w: int, top: int, left: int, crop_h: int, crop_w: int,
                interpolation: str, vertical_first_rule: bool = True) -> torch.Tensor:
    """Pillow's 8-bit resize of ``x`` ``(N, C, H, W)`` (uint8, or float 0..255 levels) to ``out_h x out_w``,
    rows ``top .. top + crop_h - 1`` and columns ``left .. left + crop_w - 1`` of it: float32
    ``(N, C, crop_h, crop_w)`` whole levels. Bicubic or bilinear; pass order by ``vertical_first_rule``.

    When both axes enlarge (an image shorter than the target on its short side, in ``shortest``
    mode), Pillow's arithmetic exactly, on the source pixels the crop reads only: memory of the
    order of the crop. Otherwise torch's antialiased operator over whole lines in Pillow's order,
    only the crop's outputs of the first pass kept for the second (:func:`resample_axis`): scripted,
    no intermediate larger than ``H x crop_w`` / ``crop_h x W`` or 2 ** 18 values. Within one grey
    level of Pillow there, on a few pixels.
    """
    h, w = x.shape[-2], x.shape[-1]
    enlarges = _imax(h - out_h, w - out_w) < 0
    if torch.jit.is_scripting():
        if enlarges:
            return _enlarged(x, out_h, out_w, top, left, crop_h, crop_w, interpolation)
        else:
            return _shrunk_in_order(x, out_h, out_w, top, left, crop_h, crop_w, interpolation, vertical_first_rule)
    else:
        return _choose(enlarges, _bind(_enlarged, out_h, out_w, top, left, crop_h, crop_w, interpolation),
                       _bind(_shrunk_in_order, out_h, out_w, top, left, crop_h, crop_w, interpolation,
                             vertical_first_rule), x)


def resize_crop_unbounded(x: torch.Tensor, out_h: int, out_w: int, top: int, left: int, crop_h: int, crop_w: int,
                          interpolation: str, vertical_first_rule: bool = True) -> torch.Tensor:
    """The plain definition :func:`resize_crop` computes in bounded memory: both passes over the whole image,
    each rounded to 8 bits, then the crop. When both axes enlarge, Pillow's integer arithmetic over whole
    axes, horizontal pass first (what :func:`resize_crop` computes for the crop alone); otherwise torch's
    antialiased operator in Pillow's order. Its intermediates grow with the image's aspect ratio; for
    checking only (eager, not scripted)."""
    h, w = x.shape[-2], x.shape[-1]
    if h < out_h and w < out_w:
        x = enlarge_last_axis(x, w, out_w, 0, out_w, 0, interpolation)
        x = enlarge_last_axis(x.transpose(2, 3), h, out_h, 0, out_h, 0, interpolation).transpose(2, 3).float()
    elif vertical_pass_first(h, w, out_h, out_w, vertical_first_rule):
        x = resample_axis(resample_axis(x, 2, out_h, interpolation), 3, out_w, interpolation)
    else:
        x = resample_axis(resample_axis(x, 3, out_w, interpolation), 2, out_h, interpolation)
    return x[..., top:top + crop_h, left:left + crop_w]
