"""Low-res generator of the long-video GAN (docs/METHODS.md 1.2); the discriminator (1.3) is in
:mod:`vidgen.lvg.lowres_d`, the range bookkeeping in :mod:`vidgen.lvg.lowres_plan`.

The function is the reference implementation's (LVG code, ``VideoGenerator``): a video of N
frames is made from one temporal latent over ``L0 = 32 a0`` samples; every temporal level
works on a fixed number of samples (``ceil(N / scale) + 2 * temporal_padding``), its
convolutions and resampling filters see zeros beyond those samples, and each level is
centre-cropped to the next one's length. Nothing of that needs the whole video in memory:
:meth:`LowResGenerator.plan` works out which samples of every level the frames [a, b)
depend on, the synthesis computes just those, with zeros exactly where the whole-video
computation has its zero padding, so a window equals the same frames of a one-shot render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.lvg.latent import LatentConfig, TemporalLatent, frame_noise
from vidgen.lvg.lowres_plan import RenderPlan, make_plan, take, zero_outside
from vidgen.nn.filters import (crop_range, kaiser_lowpass, temporal_downsample2_valid, temporal_upsample2_valid,
                               upsample2x_zero)
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
    temporal_padding: int = 8  # extra samples on each side of every temporal level
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
    """:class:`MagnitudeEMA` that returns the scalar input gain 1 / sqrt(running mean square)
    instead of the scaled tensor, so it can be folded into the styles (one pass fewer).

    ``scale``: the activations this sees are ``scale`` times smaller than the ones whose
    magnitude the buffer tracks (the leaky ReLUs here leave out their sqrt(2) gain, see
    :class:`SynthesisBlock`); the buffer keeps the meaning of the reference's
    ``magnitude_ema`` and the gain makes up the factor.
    """

    def __init__(self, beta: float = 0.999, scale: float = 1.0):
        super().__init__(beta)
        self.scale = scale

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        # x: the samples whose magnitude counts (the level's own samples, no margins)
        if self.training:
            with torch.no_grad():
                self.magnitude.copy_((mean_square(x) * self.scale ** 2).lerp(self.magnitude, self.beta))
        return (self.magnitude.rsqrt() * self.scale).to(x.dtype)


class SynthesisBlock(nn.Module):
    """Residual block of two modulated convs (kt x k x k) and a 1x1x1 skip; optional x2
    linear upsampling in time and x2 bilinear upsampling in space (docs/METHODS.md 1.2)."""

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
        # the first block's input is not a leaky ReLU output (no left-out gain)
        self.mag0 = MagnitudeGain(beta, 1.0 if first else LRELU_GAIN)
        self.mag1 = MagnitudeGain(beta, LRELU_GAIN)
        self.gain = 1 / math.sqrt(cin * kt * ks * ks)

    @property
    def margin(self) -> int:
        """Samples each of the two temporal convolutions needs on each side."""
        return self.kt // 2

    def styles(self, w: torch.Tensor, affine: FullyConnected) -> torch.Tensor:
        # w: [B, w_dim, T] -> styles [B, C, T]
        return rearrange(affine(rearrange(w, "b c t -> b t c")), "b t c -> b c t")

    def forward(self, x: torch.Tensor, w: torch.Tensor, lo: int, length: int, out_lo: int, out_hi: int,
                crop: int) -> torch.Tensor:
        """x: [B, cin, T, h, w], the block's input samples [lo, lo + T) of its ``length`` (zero
        outside [0, length)); w: [B, w_dim, T] on the same samples. Returns the output samples
        [out_lo, out_hi): [B, cout, out_hi - out_lo, H', W'], where output sample i is sample
        ``crop + i`` after the (optional) x2 upsampling in time.

        Same maths as the textbook form (modulated_conv3d with 'same' zero padding in time, the
        magnitude normalisation as StyleGAN3's input gain after the demodulation, leaky ReLU
        with gain sqrt(2) and clamp 256) with the scalar factors folded together to save
        passes over the activations: the input gains go into the styles that scale x and into
        the skip weight, the bias into the demodulation (addcmul), sqrt(0.5) into both
        branches, the equalised-lr gain into the styles. The sqrt(2) gain of the leaky ReLU
        is left out (the clamp becomes 256 / sqrt(2)) and made up by the next input gain.
        Convolutions are valid in time; the zero padding of the whole-video computation is
        applied by zeroing the samples outside [0, length) after each convolution.
        """
        r = self.margin
        T = x.shape[2]
        valid = slice(max(0, -lo), max(0, min(T, length - lo)))  # this level's own samples
        pad = (0, self.ks // 2, self.ks // 2)
        g0 = self.mag0.gain(x[:, :, valid])
        h = _modulated_demodulated(x, self.weight0, self.styles(w, self.affine0) * self.gain, pad, self.bias0, g0)
        h = zero_outside(_lrelu_clamp(h, self.clamp), lo + r, length)
        s1 = self.styles(w[:, :, r:T - r], self.affine1) * self.gain
        skip_w = self.weight_skip * (g0 * math.sqrt(0.5) / math.sqrt(x.shape[1]))
        skip = F.conv3d(x[:, :, 2 * r:T - 2 * r], skip_w.to(x.dtype))
        hv = h[:, :, max(0, -(lo + r)):max(0, min(h.shape[2], length - lo - r))]
        y = _modulated_demodulated(h, self.weight1, s1, pad, skip, self.mag1.gain(hv), out_gain=math.sqrt(0.5))
        y_lo = lo + 2 * r
        y = zero_outside(y, y_lo, length)
        if self.t_up:
            y, y_lo = temporal_upsample2_valid(y, y_lo, dim=2)
        y = crop_range(y, y_lo, crop + out_lo, crop + out_hi, dim=2)
        if self.s_up:
            y = upsample2x_zero(y)
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
            y = upsample2x_zero(y)
        top, left = (y.shape[2] - H) // 2, (y.shape[3] - W) // 2
        y = y[:, :, top:top + H, left:left + W]
        return _lrelu_clamp(y + self.bias1.to(y.dtype)[:, None, None], self.clamp)


def _modulated_demodulated(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, pad: tuple[int, int, int],
                           add: torch.Tensor, in_gain: torch.Tensor, out_gain: float = 1.0) -> torch.Tensor:
    """``add + out_gain * modulated_conv3d(x * in_gain, weight, styles)`` (valid in time;
    docs/METHODS.md 1.2).

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
    """1x1 modulated conv without demodulation, on frames (docs/METHODS.md 1.2)."""

    def __init__(self, w_dim: int, cin: int, clamp: float, beta: float):
        super().__init__()
        self.affine = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, cin, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.mag = MagnitudeGain(beta, LRELU_GAIN)
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


class LowResGenerator(nn.Module):
    """w(t) at every temporal level -> video [B, 3, T, H, W] (docs/METHODS.md 1.2)."""

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
    def plan(self, frames: int, start: int = 0, stop: int | None = None) -> RenderPlan:
        """What every level computes for frames [start, stop) of a video of ``frames`` frames."""
        blocks = [(b.t_up, b.margin) for b in self.temporal_blocks]
        return make_plan(frames, start, frames if stop is None else stop, blocks, self.cfg.temporal_padding,
                         self.cfg.w_downsample_taps)

    def noise_range(self, plan: RenderPlan) -> tuple[int, int]:
        """Noise frames the plan's frames depend on."""
        lo, hi = plan.latent_range
        return self.latent.noise_range(lo - plan.frame_offset, hi - plan.frame_offset)

    # --- synthesis --------------------------------------------------------------------
    def level_ws(self, w0: torch.Tensor, plan: RenderPlan) -> list[torch.Tensor]:
        """w over plan.level_range[0] (zeros outside the latent) -> w at every level, low-passed
        and decimated by 2 per level with a 12-tap Kaiser filter (docs/METHODS.md 1.2), each over
        plan.level_range[k] and zero outside that level's length (the filter's zero padding)."""
        ws = [w0]
        f = self.w_filter.to(w0.dtype)
        for k in range(1, self.num_levels + 1):
            w, lo = temporal_downsample2_valid(ws[-1], plan.level_range[k - 1][0], f, dim=2)
            a, b = plan.level_range[k]
            ws.append(zero_outside(crop_range(w, lo, a, b), a, plan.level_len[k]))
        return ws

    def synthesize(self, w0: torch.Tensor, plan: RenderPlan, offsets: list[int] | None = None,
                   length: int | None = None) -> torch.Tensor:
        """w0: [B, w_dim, T0] over plan.level_range[0] -> frames [B, 3, stop - start, H, W].

        With ``offsets`` (one per sample) only frames [start + o, start + o + length) of each
        sample are kept -> [B, 3, length, H, W]. The crop happens before the spatial blocks,
        which work frame by frame, so the frames dropped in training are never computed there.
        """
        ws = self.level_ws(w0, plan)

        def w_at(level: int, offset: int, lo: int, hi: int) -> torch.Tensor:
            return take(ws[level], plan.level_range[level][0], offset + lo, offset + hi, plan.level_len[level])

        lo, hi = plan.block_in[0]
        w_in = w_at(plan.block_level[0], plan.ws_offset[0], lo, hi)
        temporal = self.w_to_input(rearrange(w_in, "b c t -> b t c"))  # FC(w at rate 1/32)
        x = (rearrange(temporal, "b t c -> b c t 1 1") + self.const[:, None]) * math.sqrt(0.5)
        x = zero_outside(x, lo, plan.lengths[0])
        last = len(self.temporal_blocks) - 1
        for i, block in enumerate(self.temporal_blocks):
            lo, hi = plan.block_in[i]
            out = plan.block_in[i + 1] if i < last else (plan.start, plan.stop)
            x = block(x, w_at(plan.block_level[i], plan.ws_offset[i], lo, hi), lo, plan.lengths[i], *out,
                      crop=plan.crops[i])
            if i < last:  # the next block's input is zero beyond its length
                x = zero_outside(x, out[0], plan.lengths[i + 1])
        w_frames = w_at(0, plan.frame_offset, plan.start, plan.stop)
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

    def latent_w(self, noise_fn: NoiseFn, plan: RenderPlan, dtype: torch.dtype) -> torch.Tensor:
        """w at the frame rate over plan.level_range[0], zeros outside the latent's samples."""
        a, b = plan.level_range[0]
        ca, cb = max(a, 0), min(b, plan.level_len[0])
        lo, hi = self.latent.noise_range(ca - plan.frame_offset, cb - plan.frame_offset)
        w = self.latent(noise_fn(lo, hi).to(dtype))  # [B, w_dim, cb - ca]
        return take(w, ca, a, b, plan.level_len[0])

    def render(self, noise_fn: NoiseFn, frames: int, start: int = 0, stop: int | None = None,
               offsets: list[int] | None = None, length: int | None = None) -> torch.Tensor:
        """Frames [start, stop) of the video of ``frames`` frames -> [B, 3, stop - start, H, W];
        ``noise_fn(a, b)`` gives the latent noise of frames [a, b) as [B, C, b - a] (seeded, the
        recorded draws of another implementation, or fresh random noise in training).
        ``offsets`` / ``length``: keep one window per sample (see :meth:`synthesize`)."""
        plan = self.plan(frames, start, stop)
        return self.synthesize(self.latent_w(noise_fn, plan, self.const.dtype), plan, offsets, length)

    def forward(self, noise_fn: NoiseFn, frames: int, offsets: list[int] | None = None,
                length: int | None = None) -> torch.Tensor:
        """The whole video of ``frames`` frames (training): [B, 3, frames, H, W], or one window of
        ``length`` frames per sample at ``offsets``."""
        return self.render(noise_fn, frames, 0, frames, offsets, length)

    def render_seeds(self, seeds: list[int], frames: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Frames [start, stop) of the ``frames``-frame videos with these seeds: [B, 3, T, H, W].
        The noise of frame t is a function of (seed, t) only (vidgen.lvg.latent.frame_noise)."""
        dev, C = self.const.device, self.cfg.latent.noise_channels

        def noise(a: int, b: int) -> torch.Tensor:
            return torch.stack([frame_noise(s, a, b, C, device=dev) for s in seeds])

        return self.render(noise, frames, start, stop)
