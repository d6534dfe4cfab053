"""A TorchScript file every PyTorch from 1.11 (the GUIE host's) to today can load: the graph, rewritten.

A file saved by a new torch keeps the Python-like source of every function the scripted module
calls, and the loading torch compiles that source again with its own operator table. Three
things in an open_clip/timm image tower break that in older releases (measured, DESIGN.md
"Portability"): ``aten::gelu`` carries operator version 10 since it gained ``approximate``
(1.11 reads at most 9); ``nn.MultiheadAttention`` and timm's fused attention compile in
``aten::scaled_dot_product_attention`` (absent before 2.0); and ``F.interpolate`` drags every
resize mode into the file, ``aten::_upsample_lanczos2d_aa`` among them (absent before 2.12).
The scripted module's ``.debug_pkl`` source-range records also use a layout 1.11 cannot parse.

So the exported copy (never the eager model, which stays open_clip's own) gets:

- GELU as its formula (exact, through erfc, or the tanh approximation), the same function;
- attention written with ``linear``, ``baddbmm``, ``bmm`` and ``softmax`` on the same weights, for
  ``nn.MultiheadAttention``, open_clip's ``AttentionPool2d`` (ModifiedResNet) and its custom
  ``Attention``, and timm's ``Attention`` (ViT, DINOv2); timm's other attention modules (EVA's
  rotary one) switched to their non-fused path (their ``fused_attn`` is a TorchScript constant,
  so the fused branch is not compiled at all);
- every bool option of every submodule frozen as a TorchScript constant, so code behind
  switched-off options (timm's position-embedding resampling, gradient checkpointing) is not
  compiled into the file;
- the resize called as the antialiased aten operator itself (``guie.export.submission_module``);
- the archive rewritten without ``.debug_pkl`` records (error messages then name no Python
  source line, which nobody at the host reads anyway).

Anything left that an old torch lacks is caught by guie-compat's matrix, which loads the
file in real older releases; a tower that still needs a newer release is refused at export
(``minimum_torch`` names the oldest that could load it).

Speed (measured, README "Performance"): the rewrite keeps the eager tower's arithmetic and adds
no pass of its own where it can help it. Self-attention projects q, k and v in one matrix
multiply and splits the heads in one copy (the eager fast path's layout); the 1/sqrt(d) scale and
any mask ride in the ``baddbmm`` that forms the scores; GELU makes one new tensor and works in
place on it (the eager fused kernel is one pass; an out-of-place formula made four tensors of
the MLP's width, and allocating them cost as much as computing them).
"""

import contextlib
import copy
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import List, Optional  # noqa: UP035 - TorchScript

import torch
import torch.nn.functional as F
from torch import nn

from guie.artifacts import file_format_version, quiet_jit
from guie.errors import GuieError

# The newest operator version PyTorch 1.11 reads (its kMaxSupportedFileFormatVersion).
HOST_MAX_FILE_VERSION = 9


class PortableGELU(nn.Module):
    """GELU as its formula: exact ``x * Phi(x)`` with Phi(x) = erfc(-x / sqrt 2) / 2, or the tanh approximation
    (Hendrycks & Gimpel 2016) as ``x * sigmoid(2 z)`` (= x (1 + tanh z) / 2), so the file holds no ``aten::gelu``
    and its operator version stays below 10. One new tensor, the rest in place on it: 4 (exact) or 6 (tanh)
    passes over the activations where the textbook formula takes 5 or 9 and allocates each."""

    approximate: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.approximate == "tanh":
            # 2 z = 2 sqrt(2 / pi) (x + 0.044715 x^3) = x (1.5957691216057308 + 0.0713548162726009 x^2)
            y = x * x
            return y.mul_(0.0713548162726009).add_(1.5957691216057308).mul_(x).sigmoid_().mul_(x)
        return (x * -0.7071067811865476).erfc_().mul_(x).mul_(0.5)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045 - TorchScript
    """softmax(scale q k^T + mask) v per batch-and-head slice: q ``(N, Lq, D)``, k and v ``(N, Lk, D)``,
    ``mask`` additive, broadcastable to ``(N, Lq, Lk)``. Returns ``(N, Lq, D)``. The scale and the mask
    go into the one ``baddbmm`` (no pass of their own); k is read transposed, not copied."""
    if mask is None:
        bias = torch.zeros(1, 1, 1, dtype=q.dtype, device=q.device)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), beta=0.0, alpha=scale)
    else:
        scores = torch.baddbmm(mask, q, k.transpose(1, 2), beta=1.0, alpha=scale)
    return torch.bmm(scores.softmax(dim=-1), v)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, L, H * D)`` -> ``(B * H, L, D)`` (one copy)."""
    b, length, e = x.shape[0], x.shape[1], x.shape[2]
    return x.reshape(b, length, num_heads, e // num_heads).transpose(1, 2).reshape(b * num_heads, length, e // num_heads)


def merge_heads(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B * H, L, D)`` -> ``(B, L, H * D)`` (one copy)."""
    n, length, d = x.shape[0], x.shape[1], x.shape[2]
    return x.reshape(batch, n // batch, length, d).transpose(1, 2).reshape(batch, length, (n // batch) * d)


def heads_mask(mask: Optional[torch.Tensor], batch: int, num_heads: int, lq: int,  # noqa: UP045
               lk: int) -> Optional[torch.Tensor]:  # noqa: UP045 - TorchScript
    """An additive mask broadcastable to ``(B, H, Lq, Lk)`` as one broadcastable to ``(B * H, Lq, Lk)``."""
    if mask is None:
        return None
    if mask.dim() <= 2:
        return mask
    return mask.expand(batch, num_heads, lq, lk).reshape(batch * num_heads, lq, lk)


def scaled_dot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                         mask: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045 - TorchScript
    """Multi-head softmax(q k^T / sqrt(d)) v on projected inputs (Vaswani et al. 2017).

    q ``(B, Lq, E)``, k and v ``(B, Lk, E)``, E divisible by ``num_heads``; ``mask`` an additive
    float mask broadcastable to ``(B, num_heads, Lq, Lk)``. Returns ``(B, Lq, E)``.
    """
    b, lq, e = q.shape[0], q.shape[1], q.shape[2]
    out = attend(split_heads(q, num_heads), split_heads(k, num_heads), split_heads(v, num_heads),
                 float(e // num_heads) ** -0.5, heads_mask(mask, b, num_heads, lq, k.shape[1]))
    return merge_heads(out, b)


def additive_mask(attn_mask: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],  # noqa: UP045
                  batch: int, num_heads: int, lq: int, lk: int, dtype: torch.dtype
                  ) -> Optional[torch.Tensor]:  # noqa: UP045 - TorchScript
    """nn.MultiheadAttention's masks (bool: True = blocked; float: added) as one float mask
    broadcastable to ``(B, num_heads, Lq, Lk)``, or None."""
    mask: Optional[torch.Tensor] = None  # noqa: UP045 - TorchScript
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        m = m.to(dtype)
        if m.dim() == 3:
            m = m.reshape(batch, num_heads, lq, lk)
        mask = m
    if key_padding_mask is not None:
        p = key_padding_mask
        if p.dtype == torch.bool:
            p = torch.zeros(p.shape, dtype=dtype, device=p.device).masked_fill(p, float("-inf"))
        p = p.to(dtype).reshape(batch, 1, 1, lk)
        mask = p if mask is None else mask + p
    return mask


class PortableMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention's inference forward on its own weights, without the fused kernels. Self-attention
    (query, key and value the same tensor, as in every tower block) projects q, k and v in one matrix
    multiply and splits the heads in one copy."""

    def self_attention(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045
        """``(B, L, E)`` -> ``(B, L, E)`` before ``out_proj``: the packed projection, then ``attend``."""
        b, length, e = x.shape[0], x.shape[1], x.shape[2]
        h = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).reshape(b, length, 3, h, e // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).reshape(3, b * h, length, e // h).unbind(0)
        return merge_heads(attend(q, k, v, float(e // h) ** -0.5, heads_mask(mask, b, h, length, length)), b)

    def project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v from the packed ``in_proj_weight`` (query, key and value of the same width)."""
        e, w, bias = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        return (F.linear(query, w[:e], bias[:e]), F.linear(key, w[e:2 * e], bias[e:2 * e]),
                F.linear(value, w[2 * e:], bias[2 * e:]))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None, need_weights: bool = True,  # noqa: UP045
                attn_mask: Optional[torch.Tensor] = None, average_attn_weights: bool = True,  # noqa: UP045
                is_causal: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:  # noqa: UP045
        same = key is query and value is query
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        mask = additive_mask(attn_mask, key_padding_mask, query.shape[0], self.num_heads, query.shape[1],
                             key.shape[1], query.dtype)
        if same:
            out = self.out_proj(self.self_attention(query, mask))
        else:
            q, k, v = self.project(query, key, value)
            out = self.out_proj(scaled_dot_attention(q, k, v, self.num_heads, mask))
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights: Optional[torch.Tensor] = None  # noqa: UP045 - TorchScript
        return out, weights


class PortableCrossMultiheadAttention(PortableMultiheadAttention):
    """The same for separate q/k/v projection weights (kdim or vdim differ from embed_dim: CoCa's pooler)."""

    def project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, bias = self.embed_dim, self.in_proj_bias
        return (F.linear(query, self.q_proj_weight, bias[:e]), F.linear(key, self.k_proj_weight, bias[e:2 * e]),
                F.linear(value, self.v_proj_weight, bias[2 * e:]))

    def self_attention(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045
        """No packed weights here: the three projections, then ``scaled_dot_attention``."""
        q, k, v = self.project(x, x, x)
        return scaled_dot_attention(q, k, v, self.num_heads, mask)


class PortableAttentionPool2d(nn.Module):
    """open_clip ModifiedResNet's attention pooling (mean token + positions, then attention), computing
    only the mean token's output, which is all the original returns."""

    num_heads: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(0, 2, 1)  # N (HW) C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self.positional_embedding.unsqueeze(0).to(x.dtype)
        q = self.q_proj(x[:, :1])
        out = scaled_dot_attention(q, self.k_proj(x), self.v_proj(x), self.num_heads, None)
        return self.c_proj(out)[:, 0]


class PortableOpenClipAttention(nn.Module):
    """open_clip's own ``Attention`` (custom blocks: scaled cosine, QK norm, head scale, inner norm)
    without ``scaled_dot_product_attention``."""

    num_heads: int
    scale: float
    logit_scale_max: float

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        n, length, c = x.shape[0], x.shape[1], x.shape[2]
        h = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        mask = additive_mask(attn_mask, None, n, h, length, length, qkv.dtype)
        if self.logit_scale is None and self.head_scale is None:
            # plain scaled dot product: the packed heads split in one copy, then attend
            q, k, v = qkv.reshape(n, length, 3, h, c // h).permute(2, 0, 3, 1, 4).reshape(
                3, n * h, length, c // h).unbind(0)
            q, k = self.ln_q(q), self.ln_k(k)
            out = merge_heads(attend(q, k, v, self.scale, heads_mask(mask, n, h, length, length)), n)
            return self.out_proj(self.ln_inner(out))
        q, k, v = qkv.chunk(3, dim=-1)
        q = q.reshape(n, length, h, c // h).transpose(1, 2)
        k = k.reshape(n, length, h, c // h).transpose(1, 2)
        v = v.reshape(n, length, h, c // h).transpose(1, 2)
        if self.logit_scale is not None:
            scores = torch.matmul(F.normalize(q, dim=-1), F.normalize(k, dim=-1).transpose(-1, -2))
            scores = scores * torch.clamp(self.logit_scale, max=self.logit_scale_max).exp()
        else:
            q, k = self.ln_q(q), self.ln_k(k)
            scores = torch.matmul(q * self.scale, k.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(scores.softmax(dim=-1), v)
        if self.head_scale is not None:
            out = out * self.head_scale
        out = out.transpose(1, 2).reshape(n, length, c)
        return self.out_proj(self.ln_inner(out))


class PortableTimmAttention(nn.Module):
    """timm's ``Attention`` (timm.layers.attention: ViT, DINOv2, ... blocks) without
    ``scaled_dot_product_attention``: its packed q/k/v projection split into heads in one copy, its q/k
    norms, then ``attend``; the optional output gate and norm as timm applies them."""

    num_heads: int
    head_dim: int
    attn_dim: int
    scale: float

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,  # noqa: UP045 - TorchScript
                is_causal: bool = False) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        h, d = self.num_heads, self.head_dim
        gate: Optional[torch.Tensor] = None  # noqa: UP045 - TorchScript
        if self.gate is not None:
            gate = self.gate(x).sigmoid()
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, b * h, n, d).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        mask = additive_mask(attn_mask, None, b, h, n, n, q.dtype)
        if is_causal:
            causal = torch.full((n, n), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
            mask = causal if mask is None else mask + causal
        out = self.norm(merge_heads(attend(q, k, v, self.scale, heads_mask(mask, b, h, n, n)), b))
        if gate is not None:
            out = out * gate
        return self.proj(out)


def portable_pad(input: torch.Tensor, pad: List[int], mode: str = "constant",  # noqa: UP006 - TorchScript
                 value: Optional[float] = None) -> torch.Tensor:  # noqa: UP045 - TorchScript
    """``F.pad`` through the operators it used before ``aten::pad`` existed (PyTorch 1.13): constant
    padding is ``constant_pad_nd``; reflect and replicate go to their per-rank operators (1-3
    padded dimensions). Same arguments and result as ``F.pad`` for these modes."""
    if mode == "constant":
        return torch.constant_pad_nd(input, pad, 0.0 if value is None else value)
    dims = len(pad) // 2
    if mode == "reflect":
        if dims == 1:
            return torch._C._nn.reflection_pad1d(input, pad)
        if dims == 2:
            return torch._C._nn.reflection_pad2d(input, pad)
        return torch._C._nn.reflection_pad3d(input, pad)
    if mode == "replicate":
        if dims == 1:
            return torch._C._nn.replication_pad1d(input, pad)
        if dims == 2:
            return torch._C._nn.replication_pad2d(input, pad)
        return torch._C._nn.replication_pad3d(input, pad)
    raise ValueError("padding mode " + mode + " is not in guie's portable F.pad")


@contextlib.contextmanager
def portable_functionals() -> Iterator[None]:
    """While scripting: ``torch.nn.functional.pad`` is ``portable_pad``. TorchScript resolves ``F.pad``
    in the towers' code at compile time, so the file gets the old operators; nothing else changes."""
    original = F.pad
    F.pad = portable_pad
    try:
        yield
    finally:
        F.pad = original


def script_portable(module: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``make_portable(module)`` with the portable functionals in place."""
    portable = make_portable(module)
    with portable_functionals(), quiet_jit():
        return torch.jit.script(portable)


def _ops_of(table: str) -> frozenset[str]:
    text = (Path(__file__).parent / "ops" / table).read_text()
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def missing_host_ops(scripted: torch.jit.ScriptModule) -> list[str]:
    """The aten operators of ``scripted``'s forward graph (every branch, functions inlined) that
    PyTorch 1.11 does not have (its operator table is shipped in ``ops/torch-1.11.0.txt``, taken
    from ``torch._C._jit_get_all_schemas()`` in 1.11.0), sorted. Empty when the file can load there."""
    used = set(re.findall(r"aten::[A-Za-z0-9_]+", str(scripted.inlined_graph)))
    return sorted(used - _ops_of("torch-1.11.0.txt"))


def host_portability(scripted: torch.jit.ScriptModule, version: int | None) -> dict:
    """Whether the saved file can load in PyTorch 1.11 (the GUIE host), from its file version and its
    operators: ``{"loads_in_1_11": bool, "reason": str | None}``. The reason names what is newer."""
    missing = missing_host_ops(scripted)
    reasons = []
    if version is not None and version > HOST_MAX_FILE_VERSION:
        reasons.append(f"file format version {version} (1.11 reads at most {HOST_MAX_FILE_VERSION}; 1.12 or newer needed)")
    if missing:
        reasons.append(f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} missing in 1.11")
    return {"loads_in_1_11": not reasons, "reason": "; ".join(reasons) or None}


# The first release that has each operator a scripted tower may bring that PyTorch 1.11 lacks (measured,
# DESIGN.md "Portability": 1.12 and 1.13 stop at scaled_dot_product_attention only; aten::pad from F.pad's own
# history), and the first that reads file format 10 (aten::gelu with ``approximate``).
OP_SINCE = {"aten::pad": "1.13", "aten::_native_multi_head_attention": "1.13", "aten::is_autocast_enabled": "1.13",
            "aten::scaled_dot_product_attention": "2.0", "aten::_upsample_lanczos2d_aa": "2.12"}
FILE_VERSION_SINCE = {10: "1.12"}


def minimum_torch(scripted: torch.jit.ScriptModule, version: int | None) -> str:
    """The oldest PyTorch that could load ``scripted`` saved with file format ``version``, in words, from
    :data:`OP_SINCE` and :data:`FILE_VERSION_SINCE`: "PyTorch 1.11 or newer" when nothing is newer, e.g.
    "PyTorch 2.0 or newer" for scaled_dot_product_attention, and "a PyTorch newer than 1.11 (at least R;
    aten::x is not in guie's table)" for an operator 1.11 lacks that the table does not know."""
    needed = ["1.11"]
    if version is not None and version > HOST_MAX_FILE_VERSION:
        needed.append(FILE_VERSION_SINCE.get(version, "1.12"))
    unknown = []
    for op in missing_host_ops(scripted):
        if op in OP_SINCE:
            needed.append(OP_SINCE[op])
        else:
            unknown.append(op)
    oldest = max(needed, key=lambda v: tuple(int(part) for part in v.split(".")))
    if unknown:
        return f"a PyTorch newer than 1.11 (at least {oldest}; {', '.join(unknown[:3])} not in guie's table)"
    return f"PyTorch {oldest} or newer"


def freeze_flags(module: nn.Module) -> None:
    """Make every plain bool attribute of every submodule (``dynamic_img_size``, ``grad_checkpointing``,
    ...) a TorchScript constant, in place. TorchScript compiles only the taken side of an ``if`` on
    a constant, so code behind a switched-off option (timm's position-embedding resampling through
    ``F.interpolate``, say) never reaches the file. ``training`` stays an attribute."""
    for sub in module.modules():
        flags = sorted(k for k, v in vars(sub).items() if isinstance(v, bool) and k != "training"
                       and not k.startswith("_"))
        known = set(getattr(type(sub), "__constants__", ()))
        if not flags or known.issuperset(flags):
            continue
        cls = type(sub)
        sub.__class__ = type(cls.__name__, (cls,), {"__constants__": sorted(known | set(flags)),
                                                     "__module__": cls.__module__, "__qualname__": cls.__qualname__})


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def make_portable(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every part that old torch cannot load rewritten (module docstring).

    Same weights, same function up to float rounding; the parity check at export compares the
    saved file with the original eager model. Raises GuieError for an attention variant this
    rewrite does not cover (so a file is never shipped narrower than the README says).
    """
    from open_clip.modified_resnet import AttentionPool2d
    from open_clip.transformer import Attention as OpenClipAttention

    portable = copy.deepcopy(module)
    for name, sub in portable.named_modules():
        kind = type(sub)
        if kind is nn.GELU or _class_name(sub) in ("timm.layers.activations.GELU", "timm.layers.activations.GELUTanh"):
            approximate = getattr(sub, "approximate", "tanh" if kind.__name__ == "GELUTanh" else "none")
            sub.__class__ = PortableGELU
            sub.approximate = approximate
        elif kind is nn.MultiheadAttention or isinstance(sub, nn.MultiheadAttention):
            if sub.bias_k is not None or sub.add_zero_attn:
                raise GuieError(f"attention {name!r} uses bias_k/add_zero_attn, which guie's portable export does "
                                "not rewrite; export with --program, or open an issue with the model name")
            if sub.in_proj_bias is None:
                sub.in_proj_bias = nn.Parameter(torch.zeros(3 * sub.embed_dim, dtype=sub.out_proj.weight.dtype))
            sub.__class__ = PortableMultiheadAttention if sub._qkv_same_embed_dim else PortableCrossMultiheadAttention
        elif kind is AttentionPool2d:
            sub.__class__ = PortableAttentionPool2d
        elif kind is OpenClipAttention:
            sub.__class__ = PortableOpenClipAttention
        elif _class_name(sub) == "timm.layers.attention.Attention" and all(
                hasattr(sub, a) for a in ("qkv", "q_norm", "k_norm", "norm", "proj", "head_dim", "attn_dim", "scale")):
            if not hasattr(sub, "gate"):
                sub.gate = None  # older timm: no output gate
            sub.__class__ = PortableTimmAttention
        elif hasattr(sub, "fused_attn"):
            sub.fused_attn = False  # timm: a TorchScript constant, so the fused branch is never compiled
    freeze_flags(portable)
    return portable


def strip_debug_records(path: Path) -> None:
    """Rewrite the TorchScript archive at ``path`` without its ``.debug_pkl`` source-range records,
    which PyTorch 1.11 cannot parse when they come from a newer torch. Entry order, names and
    stored (uncompressed) layout are kept."""
    tmp = path.with_name(path.name + ".strip")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename.endswith(".debug_pkl"):
                continue
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_STORED)
    tmp.replace(path)


def save_portable(scripted: torch.jit.ScriptModule, path: Path) -> int | None:
    """Save a scripted (already portable) module at ``path`` without debug records; its file version."""
    with quiet_jit():
        torch.jit.save(scripted, str(path))
    strip_debug_records(path)
    return file_format_version(path)
