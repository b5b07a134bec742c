"""FIR filters and resampling along time (1-D) and space (2-D), shared by the GAN families.

- :func:`kaiser_lowpass` designs a Kaiser-window low-pass filter exactly as
  ``scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)`` does (docs/METHODS.md 1.1, 1.2).
- :func:`upfirdn1d` is the generic "upsample by zero insertion, pad, FIR filter, decimate"
  operator along one dimension of any tensor; :func:`upfirdn2d` applies a separable filter
  along the last two dimensions. Both are plain slicing and sums, so they run on any device
  and dtype and back-propagate.
- Time helpers with *valid* semantics (no padding) keep track of absolute sample indices so a
  window of a long sequence gives exactly the samples of the whole sequence
  (:func:`temporal_upsample2_valid`, :func:`temporal_downsample2_valid`).
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from einops import rearrange

from vidgen.nn import is_channels_last


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Kaiser-window low-pass FIR (as ``scipy.signal.firwin``), float64, unit DC gain."""
    return scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)


def linear_filter(scale: int = 2) -> np.ndarray:
    """Linear-interpolation kernel for resampling by ``scale`` (scale 2: [1, 3, 3, 1] / 8)."""
    half = np.linspace(0.5 / scale, 1 - 0.5 / scale, scale)
    f = np.concatenate([half, half[::-1]])
    return f / f.sum()


def _as_filter(f, like: torch.Tensor) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(f) if not isinstance(f, torch.Tensor) else f)
    return f.to(device=like.device, dtype=like.dtype)


def upfirdn1d(x: torch.Tensor, f, up: int = 1, down: int = 1, padding: tuple[int, int] = (0, 0),
              dim: int = -1, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, zero-pad, convolve with FIR ``f``, keep every ``down``-th sample.

    x: any shape, filtered along ``dim``; f: [K] taps (numpy or tensor). Output length along
    ``dim``: ``(L * up + pad0 + pad1 - K) // down + 1``. ``gain`` scales the filter (use
    ``gain=up`` for upsampling so the signal level is kept).
    """
    dim = dim % x.ndim
    f = _as_filter(f, x).flip(0) * gain  # convolution = correlation with the flipped filter
    K = f.shape[0]
    x = x.movedim(dim, -1)
    if up > 1:  # zero insertion: x[j] lands on sample j * up
        z = torch.zeros(*x.shape, up - 1, dtype=x.dtype, device=x.device)
        x = torch.cat([x.unsqueeze(-1), z], dim=-1).flatten(-2)[..., : (x.shape[-1] - 1) * up + 1]
        x = F.pad(x, (0, up - 1))
    pad0, pad1 = padding
    if pad0 < 0:
        x, pad0 = x[..., -pad0:], 0
    if pad1 < 0:
        x, pad1 = x[..., : x.shape[-1] + pad1], 0
    if pad0 or pad1:
        x = F.pad(x, (pad0, pad1))
    n = (x.shape[-1] - K) // down + 1
    assert n > 0, f"signal of length {x.shape[-1]} is shorter than the filter ({K} taps)"
    span = (n - 1) * down + 1
    y = sum(f[k] * x[..., k:k + span:down] for k in range(K))
    return y.movedim(-1, dim)


def upfirdn2d(x: torch.Tensor, f, up: int = 1, down: int = 1, padding: int | tuple[int, int] = 0,
              gain: float = 1.0) -> torch.Tensor:
    """Separable :func:`upfirdn1d` over the last two dimensions (H, W); ``gain`` per axis."""
    p = (padding, padding) if isinstance(padding, int) else padding
    x = upfirdn1d(x, f, up, down, p, dim=-1, gain=gain)
    return upfirdn1d(x, f, up, down, p, dim=-2, gain=gain)


def upsample2d_bilinear(x: torch.Tensor) -> torch.Tensor:
    """x2 bilinear upsampling in space with replicated edges (kernel [1, 3, 3, 1] / 4 per axis).

    x: [B, C, H, W] or [B, C, T, H, W] (each frame separately) -> height and width doubled.
    """
    if x.ndim == 5:
        B = x.shape[0]
        y = F.interpolate(rearrange(x, "b c t h w -> b (c t) h w"), scale_factor=2, mode="bilinear",
                          align_corners=False)
        return rearrange(y, "b (c t) h w -> b c t h w", b=B, t=x.shape[2])
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def upsample2x_zero(x: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """x2 linear upsampling along each of ``dims`` with zeros beyond the edges (upfirdn with the
    [1, 3, 3, 1] / 4 kernel and 'same' zero padding, as StyleGAN's upsample2d):
    ``y[2i] = x[i-1] / 4 + 3 x[i] / 4``, ``y[2i+1] = 3 x[i] / 4 + x[i+1] / 4``, x[-1] = x[L] = 0.
    x: any shape, e.g. frames [N, C, H, W] (the default dims: bilinear in space)."""
    channels_last = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    for d in dims:
        d %= x.ndim
        L = x.shape[d]
        p = F.pad(x, [0, 0] * (x.ndim - 1 - d) + [1, 1])
        prev, mid, nxt = p.narrow(d, 0, L), p.narrow(d, 1, L), p.narrow(d, 2, L)
        even, odd = torch.lerp(mid, prev, 0.25), torch.lerp(mid, nxt, 0.25)
        x = torch.stack([even, odd], dim=d + 1).flatten(d, d + 1)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def downsample2d(x: torch.Tensor, f=None, down: int = 2) -> torch.Tensor:
    """Low-pass and decimate by ``down`` over the last two dimensions, keeping the size a
    multiple (``H / down``): zero padding ``(K - down + 1) // 2`` before, ``(K - down) // 2`` after.
    Default filter: [1, 3, 3, 1] / 8."""
    f = linear_filter(2) if f is None else f
    K = len(f)
    return upfirdn2d(x, f, down=down, padding=((K - down + 1) // 2, (K - down) // 2))


def downsample_same(x: torch.Tensor, dim: int, f=None, down: int = 2) -> torch.Tensor:
    """Decimate along ``dim`` by ``down`` with zero padding so the length becomes L / down."""
    f = linear_filter(2) if f is None else f
    K = len(f)
    return upfirdn1d(x, f, down=down, padding=((K - down + 1) // 2, (K - down) // 2), dim=dim)


_BINOMIAL4 = (1.0, 3.0, 3.0, 1.0)  # the taps of binomial4_sum


def _empty_as(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` in x's dtype, device and memory layout."""
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def _zero_inserted(x: torch.Tensor, d: int, before: int, after: int, step: int) -> torch.Tensor:
    """``x`` along ``d`` with ``step - 1`` zeros between samples and ``before`` / ``after`` zeros
    at the ends, in a new tensor of x's memory layout."""
    shape = list(x.shape)
    shape[d] = before + (x.shape[d] - 1) * step + 1 + after
    out = _empty_as(x, shape).zero_()
    idx = [slice(None)] * x.ndim
    idx[d] = slice(before, before + (x.shape[d] - 1) * step + 1, step)
    out[tuple(idx)] = x
    return out


def _binomial4_axis(x: torch.Tensor, d: int, p: int, down: int) -> torch.Tensor:
    """One axis of :func:`binomial4_sum`, on plain tensors (no autograd bookkeeping). The zero
    padding is never materialised: the outputs whose four taps all lie inside x are sums of
    shifted views written into one new tensor, and the few at the ends sum their valid taps."""
    L = x.shape[d]
    n = (L + 2 * p - 4) // down + 1
    assert n > 0, f"length {L} (+ {p} zeros a side) along dim {d} is shorter than the 4-tap filter"
    if torch.is_grad_enabled() and x.requires_grad:  # a backward that is itself differentiated
        return _binomial4_padded(x, d, p, down, n)
    shape = list(x.shape)
    shape[d] = n
    out = _empty_as(x, shape)
    j0, j1 = -(-p // down), min(n, (L - 4 + p) // down + 1)  # outputs with every tap inside x
    if j1 > j0:
        m = j1 - j0

        def tap(k: int) -> torch.Tensor:
            idx = [slice(None)] * x.ndim
            first = j0 * down - p + k
            idx[d] = slice(first, first + (m - 1) * down + 1, down)
            return x[tuple(idx)]

        body = out.narrow(d, j0, m)
        torch.add(tap(0), tap(1), alpha=3, out=body)
        body.add_(tap(2), alpha=3).add_(tap(3))
    for j in [*range(0, min(j0, n)), *range(max(j1, j0), n)]:
        o = out.narrow(d, j, 1).zero_()
        for k, c in enumerate(_BINOMIAL4):
            i = j * down - p + k
            if 0 <= i < L:
                o.add_(x.narrow(d, i, 1), alpha=c)
    return out


def _binomial4_padded(x: torch.Tensor, d: int, p: int, down: int, n: int) -> torch.Tensor:
    """:func:`_binomial4_axis` from differentiable operations (a padded copy, then four taps)."""
    x = F.pad(x, [0, 0] * (x.ndim - d - 1) + [p, p])
    span = (n - 1) * down + 1

    def tap(k: int) -> torch.Tensor:
        idx = [slice(None)] * x.ndim
        idx[d] = slice(k, k + span, down)
        return x[tuple(idx)]

    return tap(0) + 3 * tap(1) + 3 * tap(2) + tap(3)


class _Binomial4(torch.autograd.Function):
    """The 4-tap sum along one axis with its own backward: the filter is symmetric, so the
    input gradient is the same sum over the (zero-inserted, if decimated) output gradient
    padded by 3 - pad, at the input's length. Nothing is saved for backward, and no zero-filled
    input-sized gradient is made per tap as slicing's backward would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, d: int, p: int, down: int) -> torch.Tensor:
        ctx.meta = (d, p, down, x.shape[d])
        return _binomial4_axis(x, d, p, down)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        d, p, down, length = ctx.meta
        if down == 1:  # the same filter over the output gradient, padded by 3 - p a side
            return _binomial4_axis(gy, d, 3 - p, 1), None, None, None
        # The gradient at every position of the padded input (zeros between decimated
        # outputs), padded by 3 - p in front and up to the input's length behind.
        right = length + p - ((gy.shape[d] - 1) * down + 1)
        gy = _zero_inserted(gy, d, 3 - p, right, down)
        return _binomial4_axis(gy, d, 0, 1), None, None, None


def _binomial4_kernel(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The depthwise [C, 1, kh, kw] kernel of the [1, 3, 3, 1] taps along ``dims`` (of 2, 3)."""
    taps = torch.tensor(_BINOMIAL4, dtype=x.dtype, device=x.device)
    one = torch.ones(1, dtype=x.dtype, device=x.device)
    kh, kw = (taps if 2 in dims else one), (taps if 3 in dims else one)
    return (kh[:, None] * kw[None, :]).expand(x.shape[1], 1, -1, -1).contiguous()


class _Binomial4Depthwise(torch.autograd.Function):
    """:func:`binomial4_sum` of an image batch as one depthwise convolution. The filter is
    linear and symmetric, so the input gradient is the transposed convolution with the same
    kernel; nothing is saved for backward (a plain conv2d would keep its input alive), and the
    backward is itself differentiable (R1, path length)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: tuple[int, ...], pad: tuple[int, ...], down: int) -> torch.Tensor:
        p_of = dict(zip(dims, pad))
        padding = (p_of.get(2, 0), p_of.get(3, 0))
        stride = tuple(down if d in p_of else 1 for d in (2, 3))
        ctx.meta = (dims, padding, stride, tuple(x.shape[2:]))
        return F.conv2d(x, _binomial4_kernel(x, dims), padding=padding, stride=stride, groups=x.shape[1])

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        dims, padding, stride, size = ctx.meta
        w = _binomial4_kernel(gy, dims)
        # the input positions past the last full stride get output padding
        extra = tuple(L + 2 * p - k - (n - 1) * s for L, p, k, n, s in zip(size, padding, w.shape[2:], gy.shape[2:], stride))
        gx = F.conv_transpose2d(gy, w, stride=stride, padding=padding, output_padding=extra, groups=gy.shape[1])
        return gx, None, None, None


def binomial4_sum(x: torch.Tensor, dims: tuple[int, ...], pad: tuple[int, ...], down: int = 1) -> torch.Tensor:
    """[1, 3, 3, 1] filter along each of ``dims``, *not* divided by 8 (the caller folds 8^-n
    into a weight): zero-pad ``pad[i]`` (0 to 3) samples on both sides of ``dims[i]``, then keep
    the valid outputs, every ``down``-th one. Output length along an axis:
    ``(L + 2 pad - 4) // down + 1``. Any memory layout.

    Images ([N, C, H, W], filtered along H and/or W) take one depthwise convolution (about 3x
    faster on the CPU than summing shifted views for channels-last input, 1.5x for
    contiguous); other shapes sum a0 + 3 a1 + 3 a2 + a3 over shifted views per axis.
    """
    dims = tuple(d % x.ndim for d in dims)
    for p in pad:
        assert 0 <= p <= 3, f"padding {p} outside 0..3"
    if x.ndim == 4 and set(dims) <= {2, 3} and len(set(dims)) == len(dims) and x.is_floating_point():
        return _Binomial4Depthwise.apply(x, dims, tuple(pad), down)
    for d, p in zip(dims, pad):
        x = _Binomial4.apply(x, d, p, down)
    return x


def temporal_upsample2_valid(x: torch.Tensor, lo: int, dim: int = 2) -> tuple[torch.Tensor, int]:
    """Linear x2 upsampling along ``dim`` without padding, on an absolute time grid.

    Sample j of the input covers output samples 2j and 2j + 1:
    ``y[2j] = x[j-1]/4 + 3 x[j]/4``, ``y[2j+1] = 3 x[j]/4 + x[j+1]/4``.
    x spans absolute indices [lo, lo + L); returns (y, 2 lo + 1) with y of length 2L - 2.
    """
    L = x.shape[dim]
    p, q = x.narrow(dim, 0, L - 1), x.narrow(dim, 1, L - 1)  # pairs (x[j], x[j+1]), j = lo .. lo+L-2
    odd, even = 0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q  # y[2j+1], y[2j+2]
    y = torch.stack([odd, even], dim=dim + 1).flatten(dim, dim + 1)
    return y, 2 * lo + 1


def temporal_downsample2_valid(x: torch.Tensor, lo: int, f: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, int]:
    """Low-pass (even-length FIR ``f``, K taps) and decimate by 2 along ``dim`` without padding.

    Output sample j sits between input samples 2j and 2j + 1 and uses inputs
    2j - K/2 + 1 .. 2j + K/2. x spans absolute indices [lo, lo + L); returns (y, first index).
    """
    K = f.shape[0]
    assert K % 2 == 0, "the decimation filter needs an even number of taps"
    first = -((-(lo + K // 2 - 1)) // 2)  # smallest j with 2j - K/2 + 1 >= lo
    start = 2 * first - K // 2 + 1 - lo
    y = upfirdn1d(x.narrow(dim % x.ndim, start, x.shape[dim] - start), f, down=2, dim=dim)
    return y, first


def crop_range(x: torch.Tensor, lo: int, new_lo: int, new_hi: int, dim: int = 2) -> torch.Tensor:
    """Samples [new_lo, new_hi) of x, which spans absolute indices [lo, lo + L) along ``dim``."""
    assert lo <= new_lo and new_hi <= lo + x.shape[dim], (lo, x.shape[dim], new_lo, new_hi)
    return x.narrow(dim, new_lo - lo, new_hi - new_lo)
