"""Low-res generator of the long-video GAN (METHODS.md 1.2); the discriminator (1.3) is in
:mod:`vidgen.lvg.lowres_d`.

The generator is fully convolutional in time and works on an absolute time grid: a sample j
at temporal level k (rate 1 / 2^k) covers frames [j 2^k, (j + 1) 2^k). Temporal convolutions
are *valid* (no padding in time) and every resampling keeps absolute indices, so frames
[a, b) come out the same whether they are rendered alone or as part of a longer video:
:meth:`LowResGenerator.plan` works backwards from the requested frames to the range each
level must compute, which is the "ceil(T / scale) + margin, then centre-crop" of the paper
made exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.lvg.latent import LatentConfig, TemporalLatent
from vidgen.nn.filters import (crop_range, kaiser_lowpass, temporal_downsample2_valid, temporal_upsample2_valid,
                               upsample2d_bilinear)
from vidgen.nn.style import LRELU_GAIN, LRELU_SLOPE, FullyConnected, MagnitudeEMA, clamp_symmetric, mean_square

NoiseFn = Callable[[int, int], torch.Tensor]  # (first frame, end frame) -> noise [B, C, end - first]


@dataclass
class LowResGConfig:
    """Generator settings; the output size (H, W) is the data resolution."""

    # Temporal blocks: block i maps temporal_channels[i] -> temporal_channels[i + 1].
    temporal_channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 256)
    # Spatial-only blocks: spatial_channels[i] -> spatial_channels[i + 1]; [0] = last temporal.
    spatial_channels: tuple[int, ...] = (256, 128, 128, 64, 64)
    temporal_ksize: int = 3
    spatial_ksize: int = 3
    w_downsample_taps: int = 12  # Kaiser low-pass before each temporal decimation of w
    output_scale: float = 0.25
    conv_clamp: float = 256.0
    magnitude_beta: float = 0.999
    latent: LatentConfig = field(default_factory=LatentConfig)


def spatial_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes of the 5 spatial levels: (3, 4), (5, 8), (9, 16), (18, 32), (36, 64) for 36x64."""
    long_edge = max(height, width)
    scales = [max(1, long_edge // 2 ** (2 + i)) for i in range(5)]
    return [(math.ceil(height / s), math.ceil(width / s)) for s in scales]


class MagnitudeGain(MagnitudeEMA):
    """:class:`MagnitudeEMA` that returns the scalar gain 1 / sqrt(running magnitude) instead
    of the scaled tensor, so the scaling can be folded into the styles (one pass fewer).

    ``init``: starting magnitude. Inputs that come from a leaky ReLU without its sqrt(2) gain
    start at 1/2, which makes the network behave exactly like one with the gain and magnitudes
    starting at 1 (the running magnitude is then always half of that one's).
    """

    def __init__(self, beta: float = 0.999, init: float = 1.0):
        super().__init__(beta)
        self.magnitude.fill_(init)

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.magnitude.copy_(mean_square(x).lerp(self.magnitude, self.beta))
        return self.magnitude.rsqrt().to(x.dtype)


class SynthesisBlock(nn.Module):
    """Residual block of two modulated convs (kt x k x k) and a 1x1x1 skip; optional x2
    linear upsampling in time and x2 bilinear upsampling in space (METHODS.md 1.2)."""

    def __init__(self, w_dim: int, cin: int, cout: int, kt: int, ks: int, t_up: bool, s_up: bool,
                 out_size: tuple[int, int], clamp: float, beta: float, first: bool = False):
        super().__init__()
        self.kt, self.ks, self.t_up, self.s_up, self.out_size, self.clamp = kt, ks, t_up, s_up, out_size, clamp
        self.affine0 = FullyConnected(w_dim, cin, bias_init=1.0)
        self.affine1 = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight0 = nn.Parameter(torch.randn(cin, cin, kt, ks, ks))
        self.weight1 = nn.Parameter(torch.randn(cout, cin, kt, ks, ks))
        self.weight_skip = nn.Parameter(torch.randn(cout, cin, 1, 1, 1))
        self.bias0 = nn.Parameter(torch.zeros(cin))
        self.bias1 = nn.Parameter(torch.zeros(cout))
        half = 1 / LRELU_GAIN ** 2  # inputs from an un-gained leaky ReLU (the first block's is not)
        self.mag0, self.mag1 = MagnitudeGain(beta, 1.0 if first else half), MagnitudeGain(beta, half)
        self.gain = 1 / math.sqrt(cin * kt * ks * ks)

    @property
    def shrink(self) -> int:
        """Time steps lost on each side by the two valid convolutions."""
        return 2 * (self.kt // 2)

    def styles(self, w: torch.Tensor, affine: FullyConnected) -> torch.Tensor:
        # w: [B, w_dim, T] -> styles [B, C, T]
        return rearrange(affine(rearrange(w, "b c t -> b t c")), "b t c -> b c t")

    def forward(self, x: torch.Tensor, w: torch.Tensor, lo: int, out_lo: int, out_hi: int) -> torch.Tensor:
        """x: [B, cin, T, h, w] at level indices [lo, lo + T); w: [B, w_dim, T] on the same steps.
        Returns [B, cout, out_hi - out_lo, H', W'] at the output level's indices [out_lo, out_hi).

        Same maths as ``modulated_conv3d`` (style per input step, demodulation per output step)
        with the scalar factors folded together to save passes over the activations: the
        magnitude normalisation (StyleGAN3's input gain, which acts after the demodulation)
        goes into the styles that scale x and into the skip weight, the bias into the
        demodulation (addcmul), sqrt(0.5) into both branches. The sqrt(2) gain of the leaky
        ReLU is left out (the clamp moves to 256 / sqrt(2)): every consumer of an activation
        normalises it by its running magnitude first, which cancels a constant gain exactly.
        The equalised-lr weight gain is a scalar too and goes into the styles (conv(x s g, W) =
        conv(x s, g W), and the demodulation sums the same W^2 g^2 s^2), so no scaled copy of
        the 512 x 512 x 3 x 3 x 3 weights is made in either pass.
        """
        p, pad = self.kt // 2, (0, self.ks // 2, self.ks // 2)
        g0 = self.mag0.gain(x)
        h = _modulated_demodulated(x, self.weight0, self.styles(w, self.affine0) * self.gain, pad, self.bias0, g0)
        h = _lrelu_clamp(h, self.clamp)
        s1 = self.styles(w[:, :, p:w.shape[2] - p], self.affine1) * self.gain
        skip_w = self.weight_skip * (g0 * math.sqrt(0.5) / math.sqrt(x.shape[1]))
        skip = F.conv3d(x[:, :, self.shrink:x.shape[2] - self.shrink], skip_w.to(x.dtype))
        y = _modulated_demodulated(h, self.weight1, s1, pad, skip, self.mag1.gain(h), out_gain=math.sqrt(0.5))
        y_lo = lo + self.shrink
        if self.t_up:
            y, y_lo = temporal_upsample2_valid(y, y_lo, dim=2)
        y = crop_range(y, y_lo, out_lo, out_hi, dim=2)
        if self.s_up:
            y = upsample2d_bilinear(y)
        H, W = self.out_size
        top, left = (y.shape[3] - H) // 2, (y.shape[4] - W) // 2
        y = y[:, :, :, top:top + H, left:left + W]  # centre crop (6x8 -> 5x8, 10x16 -> 9x16)
        return _lrelu_clamp(y + self.bias1.to(y.dtype)[:, None, None, None], self.clamp)


    def forward_frames(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Spatial-only blocks (kt = 1) on frames: x: [N, cin, h, w] (N = B * T, channels-last
        is kept), w: [N, w_dim] -> [N, cout, H', W']. Same maths as :meth:`forward`."""
        assert self.kt == 1
        g0 = self.mag0.gain(x)
        h = _modulated_demodulated_2d(x, self.weight0[:, :, 0], self.affine0(w) * self.gain, self.bias0, g0)
        h = _lrelu_clamp(h, self.clamp)
        skip_w = self.weight_skip[:, :, 0] * (g0 * math.sqrt(0.5) / math.sqrt(x.shape[1]))
        H, W = self.out_size
        resize = self.s_up or (x.shape[2], x.shape[3]) != (H, W)
        # Without resampling or crop the output bias goes into the skip conv (one pass fewer).
        skip = F.conv2d(x, skip_w.to(x.dtype), None if resize else self.bias1.to(x.dtype))
        s1 = self.affine1(w) * self.gain
        y = _modulated_demodulated_2d(h, self.weight1[:, :, 0], s1, skip, self.mag1.gain(h), out_gain=math.sqrt(0.5))
        if not resize:
            return _lrelu_clamp(y, self.clamp)
        if self.s_up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        top, left = (y.shape[2] - H) // 2, (y.shape[3] - W) // 2
        y = y[:, :, top:top + H, left:left + W]
        return _lrelu_clamp(y + self.bias1.to(y.dtype)[:, None, None], self.clamp)

def _modulated_demodulated(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, pad: tuple[int, int, int],
                           add: torch.Tensor, in_gain: torch.Tensor, out_gain: float = 1.0) -> torch.Tensor:
    """``add + out_gain * modulated_conv3d(x * in_gain, weight, styles)`` (valid in time;
    METHODS.md 1.2).

    x: [B, I, T, h, w]; weight: [O, I, kt, k, k]; styles: [B, I, T]; in_gain: a scalar (the
    magnitude normalisation of x, StyleGAN3's input gain: applied after the demodulation, so it
    goes into the styles that scale x but not into the ones the demodulation sums); add: [O]
    (a bias) or a tensor shaped like the output. The demodulation of output step t uses the
    styles at the input step its window is centred on.
    """
    scale = (styles * in_gain)[:, :, :, None, None].to(x.dtype)
    y = F.conv3d(x * scale, weight.to(x.dtype), padding=pad)
    c = (styles.shape[2] - y.shape[2]) // 2
    s = styles[:, :, c:c + y.shape[2]]
    # sum_k W[o, i, k]^2 as a squared norm: no squared copy of the weight, one pass backward
    w2 = torch.linalg.vector_norm(weight, dim=(2, 3, 4)).square()  # [O, I]
    d = torch.einsum("oi,bit->bot", w2.to(s.dtype), s.square())
    d = ((d + 1e-8).rsqrt() * out_gain).to(y.dtype)[:, :, :, None, None]
    if add.ndim == 1:
        add = add.to(y.dtype)[:, None, None, None]
    return torch.addcmul(add, y, d)



def _modulated_demodulated_2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, add: torch.Tensor,
                              in_gain: torch.Tensor, out_gain: float = 1.0) -> torch.Tensor:
    """Frame-wise :func:`_modulated_demodulated`: x: [N, I, h, w]; weight: [O, I, k, k];
    styles: [N, I]; add: [O] or shaped like the output [N, O, h, w]."""
    scale = (styles * in_gain)[:, :, None, None].to(x.dtype)
    y = F.conv2d(x * scale, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    d = styles.square() @ torch.linalg.vector_norm(weight, dim=(2, 3)).square().t().to(styles.dtype)  # [N, O]
    d = ((d + 1e-8).rsqrt() * out_gain).to(y.dtype)[:, :, None, None]
    if add.ndim == 1:
        add = add.to(y.dtype)[:, None, None]
    return torch.addcmul(add, y, d)

def _lrelu_clamp(x: torch.Tensor, clamp: float) -> torch.Tensor:
    """Leaky ReLU (0.2) without the sqrt(2) gain, clamped to +-clamp / sqrt(2) (see SynthesisBlock)."""
    return clamp_symmetric(F.leaky_relu(x, LRELU_SLOPE, inplace=True), clamp / LRELU_GAIN)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, on frames (METHODS.md 1.2)."""

    def __init__(self, w_dim: int, cin: int, clamp: float, beta: float):
        super().__init__()
        self.affine = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, cin, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.mag = MagnitudeGain(beta, 1 / LRELU_GAIN ** 2)
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # x: [N, cin, h, w] frames, w: [N, w_dim] -> [N, 3, h, w]
        # The 1x1 conv of x * s is a per-frame matrix (W diag(s[n])) times x[n]: one batched
        # matmul over [N, h*w, cin] (a view of channels-last x), no modulated copy of x.
        s = self.affine(w) * (self.mag.gain(x) / math.sqrt(x.shape[1]))  # [N, cin]
        wn = (self.weight[:, :, 0, 0, 0][None] * s[:, None, :]).to(x.dtype)  # [N, 3, cin]
        N, C, H, W = x.shape
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(N, H * W, C), wn.transpose(1, 2))  # [N, h*w, 3]
        y = y.view(N, H, W, 3).permute(0, 3, 1, 2)  # [N, 3, h, w], channels-last
        return clamp_symmetric(y + self.bias.to(y.dtype)[:, None, None], self.clamp)


@dataclass
class RenderPlan:
    """Absolute index ranges, per temporal level k (rate 1/2^k), for frames [start, stop)."""

    start: int
    stop: int
    block_in: list[tuple[int, int]]  # input range of each temporal block, at its level
    block_level: list[int]
    w_range: list[tuple[int, int]]  # range of w computed at each level 0..num_levels

    @property
    def latent_range(self) -> tuple[int, int]:
        return self.w_range[0]


class LowResGenerator(nn.Module):
    """w(t) at every temporal level -> video [B, 3, T, H, W] (METHODS.md 1.2)."""

    def __init__(self, cfg: LowResGConfig, height: int = 36, width: int = 64):
        super().__init__()
        self.cfg, self.height, self.width = cfg, height, width
        wd, tc, sc = cfg.latent.w_dim, cfg.temporal_channels, cfg.spatial_channels
        assert len(tc) == 7 and len(sc) == 5 and sc[0] == tc[-1], "6 temporal and 4 spatial blocks"
        sizes = spatial_sizes(height, width)
        kw = dict(clamp=cfg.conv_clamp, beta=cfg.magnitude_beta)
        kt, ks = cfg.temporal_ksize, cfg.spatial_ksize
        # (t_up, s_up, out size): five temporal x2, spatial x2 in blocks 1 and 3 (3x4 -> 5x8 -> 9x16).
        t_spec = [(True, False, sizes[0]), (True, True, sizes[1]), (True, False, sizes[1]),
                  (True, True, sizes[2]), (True, False, sizes[2]), (False, False, sizes[2])]
        self.temporal_blocks = nn.ModuleList(
            SynthesisBlock(wd, tc[i], tc[i + 1], kt, ks, tu, su, size, first=i == 0, **kw)
            for i, (tu, su, size) in enumerate(t_spec))
        s_spec = [(True, sizes[3]), (False, sizes[3]), (sizes[4] != sizes[3], sizes[4]), (False, sizes[4])]
        self.spatial_blocks = nn.ModuleList(
            SynthesisBlock(wd, sc[i], sc[i + 1], 1, ks, False, su, size, **kw) for i, (su, size) in enumerate(s_spec))
        self.to_rgb = ToRGB(wd, sc[-1], **kw)
        self.const = nn.Parameter(torch.randn(tc[0], *sizes[0]))  # learned 512 x 3 x 4 input
        self.w_to_input = FullyConnected(wd, tc[0])
        self.latent = TemporalLatent(cfg.latent)
        self.register_buffer("w_filter", torch.tensor(kaiser_lowpass(cfg.w_downsample_taps, 1.0, 6.0, 8.0),
                                                      dtype=torch.float32), persistent=False)
        self.num_levels = sum(b.t_up for b in self.temporal_blocks)

    # --- planning ---------------------------------------------------------------------
    def plan(self, start: int, stop: int) -> RenderPlan:
        """Work backwards from output frames [start, stop) to what every level must compute."""
        need = (start, stop)  # output range of the current block, at its output level
        level = 0
        block_in, block_level = [], []
        for block in reversed(self.temporal_blocks):
            lo, hi = need
            if block.t_up:  # the valid x2 upsampling of [c, d) gives [2c + 1, 2d - 1)
                level += 1
                lo, hi = (lo - 1) // 2, -(-(hi + 1) // 2)
            block_in.append((lo - block.shrink, hi + block.shrink))
            block_level.append(level)
            need = block_in[-1]
        block_in.reverse()
        block_level.reverse()
        half = self.cfg.w_downsample_taps // 2
        w_range = [None] * (self.num_levels + 1)
        for k in range(self.num_levels, -1, -1):
            lo = min([r[0] for r, l in zip(block_in, block_level) if l == k] + ([start] if k == 0 else []))
            hi = max([r[1] for r, l in zip(block_in, block_level) if l == k] + ([stop] if k == 0 else []))
            if k < self.num_levels:  # level k + 1 sample j uses level k samples 2j - K/2 + 1 .. 2j + K/2
                up_lo, up_hi = w_range[k + 1]
                lo, hi = min(lo, 2 * up_lo - half + 1), max(hi, 2 * (up_hi - 1) + half + 1)
            w_range[k] = (lo, hi)
        return RenderPlan(start, stop, block_in, block_level, w_range)

    def noise_range(self, start: int, stop: int) -> tuple[int, int]:
        """Frames of latent noise that frames [start, stop) depend on."""
        return self.latent.noise_range(*self.plan(start, stop).latent_range)

    # --- synthesis --------------------------------------------------------------------
    def level_ws(self, w0: torch.Tensor, plan: RenderPlan) -> list[torch.Tensor]:
        """w at the full rate over plan.w_range[0] -> w at every level, low-passed and decimated
        by 2 per level with a 12-tap Kaiser filter (METHODS.md 1.2), each over plan.w_range[k]."""
        ws, (lo, _) = [w0], plan.w_range[0]
        for k in range(1, self.num_levels + 1):
            w, lo = temporal_downsample2_valid(ws[-1], lo, self.w_filter.to(w0.dtype), dim=2)
            ws.append(crop_range(w, lo, *plan.w_range[k]))
            lo = plan.w_range[k][0]
        return ws

    def synthesize(self, w0: torch.Tensor, plan: RenderPlan, offsets: list[int] | None = None,
                   length: int | None = None) -> torch.Tensor:
        """w0: [B, w_dim, T0] over plan.latent_range -> video [B, 3, stop - start, H, W].

        With ``offsets`` (one per sample) only frames [start + o, start + o + length) of each
        sample are kept -> [B, 3, length, H, W]. The crop happens before the spatial blocks,
        which work frame by frame, so the frames dropped in training are never computed there.
        """
        ws = self.level_ws(w0, plan)

        def w_at(level: int, lo: int, hi: int) -> torch.Tensor:
            return crop_range(ws[level], plan.w_range[level][0], lo, hi)

        lo, hi = plan.block_in[0]
        w_in = w_at(self.num_levels, lo, hi)
        temporal = self.w_to_input(rearrange(w_in, "b c t -> b t c"))  # FC(w at rate 1/32)
        x = (rearrange(temporal, "b t c -> b c t 1 1") + self.const[:, None]) * math.sqrt(0.5)
        for i, block in enumerate(self.temporal_blocks):
            lo, hi = plan.block_in[i]
            out = plan.block_in[i + 1] if i + 1 < len(self.temporal_blocks) else (plan.start, plan.stop)
            x = block(x, w_at(plan.block_level[i], lo, hi), lo, *out)
        w_frames = w_at(0, plan.start, plan.stop)
        if offsets is not None:  # x: [B, C, T, h, w] -> [B, C, length, h, w]
            x = torch.stack([x[i, :, o:o + length] for i, o in enumerate(offsets)])
            w_frames = torch.stack([w_frames[i, :, o:o + length] for i, o in enumerate(offsets)])
        # The spatial blocks work frame by frame: fold time into the batch, channels-last.
        B, T = x.shape[0], x.shape[2]
        x = rearrange(x, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
        w_frames = rearrange(w_frames, "b c t -> (b t) c")
        for block in self.spatial_blocks:
            x = block.forward_frames(x, w_frames)
        rgb = self.to_rgb(x, w_frames) * self.cfg.output_scale
        return rearrange(rgb, "(b t) c h w -> b c t h w", b=B, t=T).contiguous()

    def forward(self, noise_fn: NoiseFn, start: int, stop: int, offsets: list[int] | None = None,
                length: int | None = None) -> torch.Tensor:
        """Frames [start, stop) -> [B, 3, stop - start, H, W]; ``noise_fn(a, b)`` gives the latent
        noise of frames [a, b) as [B, 8, b - a] (seeded, or fresh random noise in training).
        ``offsets`` / ``length``: keep one window per sample (see :meth:`synthesize`)."""
        plan = self.plan(start, stop)
        noise = noise_fn(*self.latent.noise_range(*plan.latent_range))
        return self.synthesize(self.latent(noise), plan, offsets, length)

    def render_seeds(self, seeds: list[int], start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of the videos with these seeds: [B, 3, T, H, W], any window."""
        plan = self.plan(start, stop)
        noise = self.latent.seeded_noise(seeds, *plan.latent_range)
        return self.synthesize(self.latent(noise.to(self.const.dtype)), plan)
