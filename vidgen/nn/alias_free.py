"""Alias-free layers of StyleGAN3 (docs/METHODS.md section 8), in plain PyTorch.

Feature maps are treated as band-limited continuous signals sampled on a grid. A layer is a
modulated convolution followed by the *filtered* leaky ReLU: upsample (windowed-sinc FIR)
-> leaky ReLU (slope 0.2, gain sqrt 2, clamp 256) -> low-pass -> downsample, so that the
nonlinearity's new high frequencies are removed before resampling instead of aliasing.

- :func:`fir_resample_axis` / :func:`upfirdn2d`: "upsample by zero insertion, pad, FIR,
  decimate" with a separable filter, one axis at a time, as polyphase convolutions
  (``conv_transpose2d`` with stride ``up`` skips the inserted zeros, ``conv2d`` with stride
  ``down`` skips the dropped samples).
- :func:`filtered_lrelu`: the filtered nonlinearity. Its autograd saves only the (small)
  input and recomputes the 2x-rate intermediates per channel chunk in the backward pass,
  so memory does not hold the upsampled tensors of every layer.
- :func:`design_lowpass`: separable Kaiser-windowed sinc filters, and the radially symmetric
  jinc filters of config R (2-D, used by :func:`upfirdn2d` as non-separable filters).
- :func:`layer_specs`: the StyleGAN3 schedule (cutoffs rising geometrically, critically
  sampled last layers, margins) and :class:`SynthesisLayer`, :class:`FourierFeatures`.
- :func:`eq_t_psnr`: the EQ-T equivariance metric (PSNR between the output of a translated
  input and the translated output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.autograd.function import once_differentiable

from vidgen.nn.filters import kaiser_lowpass
from vidgen.nn.stats import register_statistic
from vidgen.nn.style import FullyConnected

CHUNK_ELEMENTS = 1 << 23  # upsampled elements per chunk of channels in filtered_lrelu


def design_lowpass(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass filter (StyleGAN3 Appendix C); None for the identity (1 tap).

    Separable (``radial=False``): the 1-D taps of ``scipy.signal.firwin``. Radial: a 2-D
    [numtaps, numtaps] jinc filter (the ideal radially symmetric low-pass,
    ``J1(2 pi f_c r) / (pi r)``) times the outer product of a Kaiser window whose beta comes
    from the same attenuation formula as the 1-D design, normalised to unit DC gain (config R).
    """
    if numtaps <= 1:
        return None
    if not radial:
        return torch.as_tensor(kaiser_lowpass(numtaps, cutoff, width, fs), dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))  # numtaps is even, so r > 0 everywhere
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)


# --- resampling -------------------------------------------------------------------------

def fir_resample_axis(x: torch.Tensor, f: torch.Tensor | None, axis: int, up: int = 1, down: int = 1,
                      pad: tuple[int, int] = (0, 0), gain: float = 1.0) -> torch.Tensor:
    """One axis (-2: height, -1: width) of upfirdn: zero-insert ``up``, pad (negative crops),
    convolve with ``f * gain``, keep every ``down``-th sample. x: [N, C, H, W].

    Output length ``L * up + pad0 + pad1 - len(f) + 1`` before decimation, as in StyleGAN's
    upfirdn2d; inserted zeros follow each input sample.
    """
    assert axis in (-2, -1)
    C = x.shape[1]
    k = 1 if f is None else f.numel()
    f = torch.ones(1, device=x.device, dtype=x.dtype) if f is None else f.to(x.device, x.dtype)
    shape = (1, 1, k, 1) if axis == -2 else (1, 1, 1, k)
    # Depthwise (groups = C) convolutions: much faster on CPU than a 1-channel conv over N*C.
    weight = (f * gain).reshape(shape).expand(C, 1, *shape[2:])
    if up > 1:
        # Full convolution of the zero-inserted signal (polyphase); output_padding keeps the
        # trailing inserted zeros, then shift so that the result equals pad + valid conv.
        y = F.conv_transpose2d(x, weight, stride=(up, 1) if axis == -2 else (1, up), groups=C,
                               output_padding=(up - 1, 0) if axis == -2 else (0, up - 1))
        p0, p1 = pad[0] - (k - 1), pad[1] - (k - 1)
        y = F.pad(y, (0, 0, p0, p1) if axis == -2 else (p0, p1))
        if down > 1:
            y = y[:, :, ::down] if axis == -2 else y[..., ::down]
        return y
    y = x
    if pad != (0, 0):
        y = F.pad(y, (0, 0, pad[0], pad[1]) if axis == -2 else (pad[0], pad[1]))
    if k > 1 or down > 1:
        # conv2d is a correlation: flip f to convolve (our filters are symmetric anyway).
        y = F.conv2d(y, weight.flip(2, 3), stride=(down, 1) if axis == -2 else (1, down), groups=C)
    return y


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """2-D upfirdn. x: [N, C, H, W]; f: 1-D separable taps, a 2-D [kh, kw] filter, or None
    (identity); padding (x0, x1, y0, y1) as in StyleGAN; ``gain`` is the 2-D gain (``up ** 2``
    keeps the mean of an upsampled signal)."""
    if f is not None and f.ndim == 2:
        return _upfirdn2d_full(x, f, up, down, padding, gain)
    g = math.sqrt(gain)
    x = fir_resample_axis(x, f, -2, up, down, (padding[2], padding[3]), g)
    return fir_resample_axis(x, f, -1, up, down, (padding[0], padding[1]), g)


def _upfirdn2d_full(x: torch.Tensor, f: torch.Tensor, up: int, down: int, padding: tuple[int, int, int, int],
                    gain: float) -> torch.Tensor:
    """upfirdn with a non-separable 2-D filter f: [kh, kw] (the radial filters of config R)."""
    N, C, H, W = x.shape
    if up > 1:  # zero insertion: each input sample is followed by up - 1 zeros on both axes
        z = x.new_zeros(N, C, H, up, W, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(N, C, H * up, W * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, (max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)))
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    weight = (f.to(x.device, x.dtype) * gain).flip(0, 1)  # convolution, not correlation
    return F.conv2d(x, weight[None, None].expand(C, 1, *f.shape), stride=down, groups=C)


def _filtered_lrelu_dense(x, fu, fd, up, down, padding, gain, slope, clamp):
    # StyleGAN3 filtered_lrelu reference order: up-FIR (gain up^2, all padding here),
    # leaky ReLU * gain, clamp, then down-FIR and decimate.
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2)
    x = F.leaky_relu(x, slope) * gain if slope != 1 else x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, fd, down=down)


def _chunks(x: torch.Tensor, up: int) -> list[slice]:
    per_channel = x.shape[0] * x.shape[2] * x.shape[3] * up * up
    step = max(1, CHUNK_ELEMENTS // max(per_channel, 1))
    return [slice(c, min(c + step, x.shape[1])) for c in range(0, x.shape[1], step)]


class _FilteredLReLU(torch.autograd.Function):
    """Saves the input only; the backward pass recomputes each channel chunk (the op is
    depthwise, so chunks are independent) and back-propagates through it."""

    @staticmethod
    def forward(ctx, x, fu, fd, args):
        ctx.save_for_backward(x, fu, fd)  # None filters are allowed here
        ctx.args = args
        return torch.cat([_filtered_lrelu_dense(x[:, s], fu, fd, *args) for s in _chunks(x, args[0])], dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, fu, fd = ctx.saved_tensors
        gx = torch.empty_like(x)
        for s in _chunks(x, ctx.args[0]):
            with torch.enable_grad():
                xc = x[:, s].detach().requires_grad_(True)
                y = _filtered_lrelu_dense(xc, fu, fd, *ctx.args)
                (gx[:, s],) = torch.autograd.grad(y, xc, gy[:, s])
        return gx, None, None, None


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor | None = None,
                   up: int = 1, down: int = 1, padding: tuple[int, int, int, int] = (0, 0, 0, 0),
                   gain: float = math.sqrt(2.0), slope: float = 0.2, clamp: float | None = 256.0) -> torch.Tensor:
    """Bias, then upsample -> leaky ReLU -> low-pass -> downsample (StyleGAN3, docs/METHODS.md 8).

    x: [N, C, H, W]; fu, fd: 1-D separable filters (None: identity); b: [C].
    Output [N, C, (H*up + py0 + py1 - len(fu) + 1 - len(fd)) // down + 1, ...].
    Once differentiable (the generator needs no double backward).
    """
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    fu = fu if fu is None else fu.to(x.dtype)
    fd = fd if fd is None else fd.to(x.dtype)
    args = (up, down, tuple(int(p) for p in padding), gain, slope, clamp)
    if fu is None and fd is None and up == 1 and down == 1:  # ToRGB: bias and clamp only
        return _filtered_lrelu_dense(x, None, None, *args)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.cat([_filtered_lrelu_dense(x[:, s], fu, fd, *args) for s in _chunks(x, up)], dim=1)
    return _FilteredLReLU.apply(x, fu, fd, args)


# --- the StyleGAN3 layer schedule ----------------------------------------------------------

@dataclass(frozen=True)
class LayerSpec:
    """Sampling of one synthesis layer; sizes are (width, height) and include the margin."""

    index: int
    is_torgb: bool
    critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    in_rate: int  # samples per unit length of the image's long side
    out_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float


def layer_specs(width: int, height: int, img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512,
                num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2.0,
                first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3, margin: int = 10,
                extra_in_channels: int = 0, fourier_input: bool = True) -> list[LayerSpec]:
    """num_layers + 1 specs (the last is ToRGB), StyleGAN3 section 3.2 / Appendix F.

    Cutoffs f_c and minimum stopbands f_t rise geometrically from the first layer to the
    last critically sampled ones (f_c = res/2); the sampling rate is the smallest power of
    two >= 2 f_t (capped at res); the transition half-width is max(f_t, s/2) - f_c; channels
    are min(channel_base / 2 / f_c, channel_max). Non-square images keep the rate along the
    long side. ``extra_in_channels`` are concatenated to every layer's input (the super-res
    conditioning); without a Fourier input the first layer sees only those.
    """
    res = max(width, height)
    last_cutoff = res / 2
    last_stopband = last_cutoff * last_stopband_rel
    e = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** e
    stopbands = first_stopband * (last_stopband / first_stopband) ** e
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sx = np.ceil(rates * min(1, width / height)) + 2 * margin
    sy = np.ceil(rates * min(1, height / width)) + 2 * margin
    sx[-2:], sy[-2:] = width, height  # the last layers are exactly the image
    channels = np.rint(np.minimum(channel_base / 2 / cutoffs, channel_max))
    channels[-1] = img_channels
    specs = []
    for i in range(num_layers + 1):
        p = max(i - 1, 0)
        in_ch = extra_in_channels + (int(channels[p]) if (i > 0 or fourier_input) else 0)
        specs.append(LayerSpec(
            index=i, is_torgb=i == num_layers, critically_sampled=i >= num_layers - num_critical,
            in_channels=in_ch, out_channels=int(channels[i]),
            in_size=(int(sx[p]), int(sy[p])), out_size=(int(sx[i]), int(sy[i])),
            in_rate=int(rates[p]), out_rate=int(rates[i]), in_cutoff=float(cutoffs[p]),
            out_cutoff=float(cutoffs[i]), in_half_width=float(half_widths[p]), out_half_width=float(half_widths[i])))
    return specs


def modulated_conv2d_shared(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                            padding: int = 0, input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN3 modulated conv where ``T`` consecutive samples share one style vector.

    x: [B*T, I, H, W]; weight: [O, I, k, k]; styles: [B, I]. The modulated weights are
    built once per style (B of them, not B*T), and with B = 1 the conv is a plain conv2d.
    Weights and styles are pre-normalised to unit RMS before demodulation (StyleGAN3 does
    it for fp16 range; demodulation cancels the scale), per sample so that no sample depends
    on the others in its batch.
    """
    B, I = styles.shape
    T = x.shape[0] // B
    assert x.shape[0] == B * T and x.shape[1] == I, (x.shape, styles.shape)
    w = weight
    if demodulate:
        w = w * w.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
    w = w.unsqueeze(0) * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain
    w = w.to(x.dtype)
    if B == 1:
        return F.conv2d(x, w[0], padding=padding)
    x = rearrange(x, "(b t) i h w -> t (b i) h w", b=B)
    y = F.conv2d(x, rearrange(w, "b o i kh kw -> (b o) i kh kw"), padding=padding, groups=B)
    return rearrange(y, "t (b o) h w -> (b t) o h w", b=B)


def fp16_synthesis_layers(layers, img_resolution: int, num_fp16_res: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The alias-free layers StyleGAN3 runs in float16: those whose input sampling rate times
    ``2 ** num_fp16_res`` exceeds the image resolution (vidgen/nn/fp16.py)."""
    return [(layer, (0,)) for layer in layers if num_fp16_res > 0 and layer.spec.in_rate * 2 ** num_fp16_res > img_resolution]


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU + input magnitude EMA (StyleGAN3 layer).

    The running magnitude of the input (``magnitude_ema``, updated only when
    ``update_emas``) scales the weights instead of the activations, so no extra activation
    copy is kept for the backward pass.
    """

    def __init__(self, w_dim: int, spec: LayerSpec, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, conv_clamp: float | None = 256.0, magnitude_ema_beta: float = 0.999,
                 use_radial_filters: bool = False):
        super().__init__()
        self.spec = spec
        self.conv_kernel = 1 if spec.is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1.0)
        k = self.conv_kernel
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        register_statistic(self, "magnitude_ema", torch.ones([]))

        # Upsample to 2x the higher of the two rates for the nonlinearity (not for ToRGB).
        tmp_rate = max(spec.in_rate, spec.out_rate) * (1 if spec.is_torgb else lrelu_upsampling)
        self.up = tmp_rate // spec.in_rate
        self.down = tmp_rate // spec.out_rate
        assert self.up * spec.in_rate == tmp_rate and self.down * spec.out_rate == tmp_rate
        up_taps = filter_size * self.up if self.up > 1 and not spec.is_torgb else 1
        down_taps = filter_size * self.down if self.down > 1 and not spec.is_torgb else 1
        fu = design_lowpass(up_taps, spec.in_cutoff, spec.in_half_width * 2, tmp_rate)
        # Config R: a radially symmetric down filter, except in the critically sampled layers.
        self.down_radial = use_radial_filters and not spec.critically_sampled
        fd = design_lowpass(down_taps, spec.out_cutoff, spec.out_half_width * 2, tmp_rate, radial=self.down_radial)
        self.register_buffer("up_filter", fu if fu is not None else torch.ones(1), persistent=False)
        self.register_buffer("down_filter", fd if fd is not None else torch.ones(1), persistent=False)
        self.has_fu, self.has_fd = fu is not None, fd is not None

        # Padding so the output has exactly out_size samples, centred (StyleGAN3 App. C.3).
        pad = []
        for i_size, o_size in zip(spec.in_size, spec.out_size):
            total = (o_size - 1) * self.down + 1 - (i_size + k - 1) * self.up + up_taps + down_taps - 2
            lo = (total + self.up) // 2
            pad += [lo, total - lo]
        self.padding = tuple(pad)  # (x0, x1, y0, y1)

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        # x: [B*T, in_channels, in_h, in_w]; w: [B, w_dim] -> [B*T, out_channels, out_h, out_w]
        s = self.spec
        assert x.shape[1:] == (s.in_channels, s.in_size[1], s.in_size[0]), (x.shape, s)
        if update_emas:
            with torch.no_grad():
                m = x.detach().float().square().mean()
                self.magnitude_ema.copy_(m.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if s.is_torgb:
            styles = styles / math.sqrt(s.in_channels * self.conv_kernel ** 2)
        x = modulated_conv2d_shared(x, self.weight, styles, demodulate=not s.is_torgb,
                                    padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        x = filtered_lrelu(x, self.up_filter if self.has_fu else None, self.down_filter if self.has_fd else None,
                           self.bias, up=self.up, down=self.down, padding=self.padding,
                           gain=1.0 if s.is_torgb else math.sqrt(2.0), slope=1.0 if s.is_torgb else 0.2,
                           clamp=self.conv_clamp)
        assert x.shape[2:] == (s.out_size[1], s.out_size[0]), (x.shape, s)
        return x

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}->{s.out_channels}, size {s.in_size}->{s.out_size}, rate {s.in_rate}->{s.out_rate}, "
                f"cutoff {s.in_cutoff:.3g}->{s.out_cutoff:.3g}, up {self.up}, down {self.down}")


class FourierFeatures(nn.Module):
    """StyleGAN3 input: ``channels`` sinusoids with random frequencies in a disc of radius
    ``bandwidth``, sampled on a (width, height) grid with a margin, mixed by a learned matrix.

    A per-sample rotation + translation predicted from w (initialised to the identity) and a
    user ``transform`` buffer (3x3, e.g. for camera motion) move the continuous signal, so
    translating it gives sub-pixel motion without aliasing. Output [B, channels, h, w].
    """

    def __init__(self, w_dim: int, channels: int, size: tuple[int, int], sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size = channels, tuple(size)
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)
        self.register_buffer("transform", torch.eye(3))
        self.affine = FullyConnected(w_dim, 4, bias_init=0.0)
        with torch.no_grad():  # start as the identity transform: (cos, sin, tx, ty) = (1, 0, 0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.weight = nn.Parameter(torch.randn(channels, channels))

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """w: [B, w_dim] -> [B, channels, h, w]. ``transform`` ([3, 3] or [B, 3, 3]) replaces
        the ``transform`` buffer for this call: the inverse of the image's transformation
        (a translation by t moves the content by +t when transform holds -t)."""
        B = w.shape[0]
        user = self.transform if transform is None else transform
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # unit rotation
        eye = torch.eye(3, device=w.device, dtype=w.dtype).expand(B, 3, 3)
        rot = eye.clone()
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        tra = eye.clone()
        tra[:, 0, 2], tra[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = rot @ tra @ user.to(w.device, w.dtype)  # [B, 3, 3]: rotate, translate, then the user's
        phases = self.phases.to(w.dtype) + torch.einsum("cd,bd->bc", self.freqs.to(w.dtype), m[:, :2, 2])
        freqs = torch.einsum("cd,bde->bce", self.freqs.to(w.dtype), m[:, :2, :2])
        # Fade out frequencies between the bandwidth and the Nyquist rate.
        amp = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        W, H = self.size
        xs = (torch.arange(W, device=w.device, dtype=w.dtype) + 0.5 - W / 2) / self.sampling_rate
        ys = (torch.arange(H, device=w.device, dtype=w.dtype) + 0.5 - H / 2) / self.sampling_rate
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] (x, y)
        x = torch.einsum("hwd,bcd->bchw", grid, freqs) + phases[:, :, None, None]
        x = torch.sin(x * (2 * math.pi)) * amp[:, :, None, None]
        return torch.einsum("bchw,kc->bkhw", x, self.weight.to(w.dtype) / math.sqrt(self.channels))


# --- equivariance ----------------------------------------------------------------------

def fourier_shift(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Translate a periodic band-limited image by (dx, dy) samples (any fraction). x: [..., H, W]."""
    H, W = x.shape[-2:]
    fy = torch.fft.fftfreq(H, device=x.device, dtype=torch.float64)
    fx = torch.fft.fftfreq(W, device=x.device, dtype=torch.float64)
    phase = torch.exp(-2j * math.pi * (fy[:, None] * dy + fx[None, :] * dx))
    return torch.fft.ifft2(torch.fft.fft2(x.double()) * phase).real.to(x.dtype)


def eq_t_psnr(fn, x: torch.Tensor, dx: float, dy: float, scale: float = 1.0, crop: int = 0,
              peak: float = 2.0) -> float:
    """EQ-T (StyleGAN3 section 3.1): PSNR in dB between fn(translate(x)) and translate(fn(x)).

    x: [N, C, H, W], a periodic band-limited input; fn maps it to an image whose sampling
    rate is ``scale`` times the input's; ``crop`` border samples are left out (edges of
    non-circular convolutions); ``peak`` is the signal range (2 for [-1, 1]).
    """
    a = fn(fourier_shift(x, dx, dy))
    b = fourier_shift(fn(x), dx * scale, dy * scale)
    if crop:
        a, b = a[..., crop:-crop, crop:-crop], b[..., crop:-crop, crop:-crop]
    mse = (a.double() - b.double()).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)
