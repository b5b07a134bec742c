"""Which samples of every level of the low-res generator a range of frames depends on.

The generator's function is defined on whole videos (docs/METHODS.md 1.2): a video of N frames has,
at the input of temporal block k, ``a_k = ceil(N / 2^l_k) + 2 * temporal_padding`` samples
(l_k: the number of x2 temporal upsamplings from block k on), the latent w has
``L0 = 2^levels * a_0`` samples at the frame rate and ``L0 / 2^l`` at level l, and every
crop between two of them is centred. All signals are zero beyond their samples (the
convolutions' and filters' zero padding). :func:`make_plan` walks back from frames
[start, stop) to the samples each block and each latent level must compute; positions
outside a signal's samples are zero and are only there to keep every operation 'valid'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RenderPlan:
    frames: int  # N, the length of the video
    start: int  # frames [start, stop) are rendered; frame i is sample crops[-1] + i of the last block
    stop: int
    lengths: list[int]  # samples of the input of each temporal block, then N
    crops: list[int]  # output sample i of block k is sample crops[k] + i after its upsampling
    block_in: list[tuple[int, int]]  # input samples each temporal block computes from
    block_level: list[int]  # latent level of each temporal block (rate 1 / 2^level)
    ws_offset: list[int]  # input sample i of block k takes w sample ws_offset[k] + i of its level
    frame_offset: int  # frame i takes w sample frame_offset + i at the frame rate
    level_len: list[int]  # samples of the latent at each level
    level_range: list[tuple[int, int]]  # latent samples computed at each level

    @property
    def latent_range(self) -> tuple[int, int]:
        return self.level_range[0]


def make_plan(frames: int, start: int, stop: int, blocks: list[tuple[bool, int]], padding: int,
              taps: int) -> RenderPlan:
    """blocks: (x2 temporal upsampling?, margin of each of its two convolutions) per temporal
    block; ``taps``: length of the (even) decimation filter of w."""
    if frames < 1 or stop <= start:
        raise ValueError(f"need frames >= 1 and start < stop; got {frames}, [{start}, {stop})")
    rev, scale = [], 1
    for t_up, _ in reversed(blocks):  # the reference's lengths, from the last block back
        scale *= 2 if t_up else 1
        rev.append(math.ceil(frames / scale) + 2 * padding)
    lengths = rev[::-1] + [frames]
    levels = [sum(t for t, _ in blocks[i:]) for i in range(len(blocks))]
    n_levels = levels[0]
    level_len = [lengths[0] * scale // 2 ** k for k in range(n_levels + 1)]
    ws_offset = [(level_len[levels[i]] - lengths[i]) // 2 for i in range(len(blocks))]
    frame_offset = (level_len[0] - frames) // 2
    crops = [((2 if t else 1) * lengths[i] - lengths[i + 1]) // 2 for i, (t, _) in enumerate(blocks)]
    last_lo, last_hi = -crops[-1], ((2 if blocks[-1][0] else 1) * lengths[-2]) - crops[-1]
    if start < last_lo or stop > last_hi:
        raise ValueError(f"frames [{start}, {stop}) of a {frames}-frame video: the generator defines "
                         f"frames {last_lo} .. {last_hi - 1} only")
    block_in: list[tuple[int, int]] = [(0, 0)] * len(blocks)
    need = (start, stop)
    for i in range(len(blocks) - 1, -1, -1):
        t_up, r = blocks[i]
        a, b = need[0] + crops[i], need[1] + crops[i]
        p, q = ((a - 1) // 2, b // 2 + 1) if t_up else (a, b)  # x2 linear: out m <- in (m -+ 1) // 2
        block_in[i] = need = (p - 2 * r, q + 2 * r)
    needs: dict[int, list[tuple[int, int]]] = {k: [] for k in range(n_levels + 1)}
    for i, (lo, hi) in enumerate(block_in):
        needs[levels[i]].append((ws_offset[i] + lo, ws_offset[i] + hi))
    needs[0].append((frame_offset + start, frame_offset + stop))
    level_range: list[tuple[int, int]] = [(0, 0)] * (n_levels + 1)
    half = taps // 2
    for k in range(n_levels, -1, -1):
        spans = list(needs[k])
        if k < n_levels:  # decimation: level k + 1 sample j <- level k samples 2j - K/2 + 1 .. 2j + K/2
            a, b = level_range[k + 1]
            spans.append((2 * a - half + 1, 2 * (b - 1) + half + 1))
        level_range[k] = (min(s[0] for s in spans), max(s[1] for s in spans))
    return RenderPlan(frames, start, stop, lengths, crops, block_in, levels, ws_offset, frame_offset, level_len,
                      level_range)


def _pad_dim(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    dim %= x.ndim
    return F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [before, after])


def zero_outside(x: torch.Tensor, lo: int, length: int, dim: int = 2) -> torch.Tensor:
    """x holds samples [lo, lo + n) along ``dim`` of a signal of ``length`` samples: the
    positions outside [0, length) set to zero (x itself when there are none)."""
    n = x.shape[dim]
    a = min(max(0, -lo), n)
    b = max(min(n, length - lo), a)
    if a == 0 and b == n:
        return x
    return _pad_dim(x.narrow(dim, a, b - a), dim, a, n - b)


def take(x: torch.Tensor, lo: int, want_lo: int, want_hi: int, length: int, dim: int = 2) -> torch.Tensor:
    """Samples [want_lo, want_hi) of a signal of ``length`` samples (zero outside [0, length)),
    from x holding its samples [lo, lo + n) along ``dim`` (those that exist must be in x)."""
    a, b = max(want_lo, 0), min(want_hi, length)
    if b <= a:
        shape = list(x.shape)
        shape[dim] = want_hi - want_lo
        return x.new_zeros(shape)
    assert lo <= a and b <= lo + x.shape[dim], (lo, x.shape[dim], want_lo, want_hi, length)
    return _pad_dim(x.narrow(dim, a - lo, b - a), dim, a - want_lo, want_hi - b)
