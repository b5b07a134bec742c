"""Multi-head attention kernel: xformers' memory-efficient attention on CUDA when it is
installed, else torch's scaled_dot_product_attention. Both compute
``softmax(q k^T * scale + bias) v`` and agree within floating-point tolerance."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange


@functools.lru_cache(maxsize=1)
def _xformers_ops():
    try:
        import xformers.ops as xops  # optional extra "gpu"
    except Exception:  # not installed, or built for another torch
        return None
    return xops


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
              scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """q: [B, H, Lq, D], k / v: [B, H, Lk, D], bias: broadcastable to [B, H, Lq, Lk] (added to
    the scaled logits) -> [B, H, Lq, D]. ``backend``: "auto" | "sdpa" | "xformers"."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    xops = _xformers_ops() if backend in ("auto", "xformers") else None
    if backend == "xformers" and (xops is None or not q.is_cuda):
        raise RuntimeError("xformers attention needs CUDA tensors and the xformers package")
    if xops is not None and q.is_cuda and bias is None:
        # xformers takes [B, L, H, D]
        out = xops.memory_efficient_attention(*(rearrange(t, "b h l d -> b l h d").contiguous() for t in (q, k, v)),
                                              scale=scale)
        return rearrange(out, "b l h d -> b h l d")
    if bias is not None:
        bias = bias.to(q.dtype)
    # The fused kernels need a unit stride along D; with any other stride torch falls back to a
    # path about 4x slower on the CPU (e.g. q, k, v split from one interleaved projection).
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
