"""Super-resolution networks of the long-video GAN (METHODS.md 1.4).

Generator: a StyleGAN3-T synthesis network (14 layers + ToRGB, channel base 32768, max 512,
sampling rate 16 -> 256, 10-sample margin) without the Fourier-feature input. Every layer
receives the 9 low-res frames t-4 .. t+4 stacked (27 channels) resampled to that layer's
input sampling rate and **concatenated** to its input features (the reference design: it
gives the published 27.2M parameters; adding through a 1x1 projection would lose ~0.5M).
One z per video, shared by all frames: the style of every layer is the same for all frames
of a video, and there is no temporal operation, so frame t depends only on the low-res
frames t-4 .. t+4 and z. That makes windows of a long video exactly consistent.

Discriminator: a 2-D StyleGAN2 residual discriminator on the 4 high-res frames stacked with
the 4 matching low-res frames upsampled (24 channels), zero-padded to a square; channels
min(16384 / res, 512); no minibatch-stddev.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.errors import ConfigError
from vidgen.nn.alias_free import SynthesisLayer, design_lowpass, layer_specs, upfirdn2d
from vidgen.nn.style import FullyConnected, MappingNetwork, lrelu_gain


@dataclass
class SuperResModelConfig:
    """Sizes of the super-res generator and discriminator (``model`` section of the config)."""

    lowres: tuple[int, int] = (36, 64)  # (H, W) of the low-res input
    highres: tuple[int, int] = (144, 256)  # (H, W) of the output
    context: int = 4  # low-res frames on each side of an output frame (9 in all)
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    margin: int = 10
    conv_clamp: float = 256.0
    magnitude_ema_beta: float = 0.999
    output_scale: float = 0.25
    d_channel_base: int = 16384
    d_channel_max: int = 512
    frames: int = 4  # high-res frames the discriminator sees (clip length of the super-res phase)

    def check(self) -> None:
        (h, w), (H, W) = self.lowres, self.highres
        if H * w != W * h or H % h:
            raise ConfigError(f"model.highres {self.highres} must be an integer multiple of model.lowres "
                              f"{self.lowres} with the same aspect ratio")
        s, res = H // h, max(H, W)
        if s & (s - 1):
            raise ConfigError(f"model.highres / model.lowres = {s}; use a power of two (e.g. 2 or 4)")
        if res & (res - 1) or res < 16:
            raise ConfigError(f"the long side of model.highres ({res}) must be a power of two >= 16")


# --- conditioning --------------------------------------------------------------------------

def resample_frames(x: torch.Tensor, up: int = 1, down: int = 1, taps_per_factor: int = 6) -> torch.Tensor:
    """Resample images by an integer factor with a Kaiser low-pass; edges replicate.

    x: [N, C, h, w] -> [N, C, h*up/down, w*up/down]; sample centres stay aligned (pixel-area
    convention). The filter stops at the Nyquist rate of the lower of the two rates
    (cutoff 0.35, transition 0.3 of it), 6 taps per unit of factor, as StyleGAN3 resamples.
    """
    assert up == 1 or down == 1
    s = max(up, down)
    if s == 1:
        return x
    k = taps_per_factor * s
    f = design_lowpass(k, cutoff=0.35, width=0.3, fs=s).to(x.device, x.dtype)  # rates in units of the low rate
    if down > 1:
        p = (k - s) // 2  # centres output j on input (j + 1/2) s - 1/2
        return upfirdn2d(F.pad(x, (p, p, p, p), mode="replicate"), f, down=s)
    # Each polyphase component gets unit DC gain, so constants are reproduced exactly.
    f = rearrange(f, "(n s) -> n s", s=s)
    f = rearrange(f / f.sum(dim=0, keepdim=True), "n s -> (n s)")
    e = taps_per_factor // 2  # input samples under half the filter
    x = F.pad(x, (e, e, e, e), mode="replicate")
    p0, p1 = k // 2 - 1 + s // 2, k - 1 - (k // 2 - 1 + s // 2)  # centres output j on input (j + 1/2)/s - 1/2
    y = upfirdn2d(x, f, up=s, padding=(p0, p1, p0, p1))
    return y[..., e * s:y.shape[-2] - e * s, e * s:y.shape[-1] - e * s]


def _centre_pad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Replicate-pad x: [N, C, h, w] around its centre to size (width, height)."""
    dw, dh = size[0] - x.shape[-1], size[1] - x.shape[-2]
    assert dw >= 0 and dh >= 0, (x.shape, size)
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")


# --- generator -----------------------------------------------------------------------------

class SuperResGenerator(nn.Module):
    def __init__(self, cfg: SuperResModelConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        (H, W), (h, w) = cfg.highres, cfg.lowres
        self.cond_channels = 3 * (2 * cfg.context + 1)
        self.lr_rate = max(h, w)  # samples along the long side
        self.specs = layer_specs(W, H, 3, cfg.channel_base, cfg.channel_max, cfg.num_layers, cfg.num_critical,
                                 margin=cfg.margin, extra_in_channels=self.cond_channels, fourier_input=False)
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, num_layers=cfg.mapping_layers, lr_multiplier=0.01)
        self.layers = nn.ModuleList(SynthesisLayer(cfg.w_dim, s, conv_clamp=cfg.conv_clamp,
                                                   magnitude_ema_beta=cfg.magnitude_ema_beta) for s in self.specs)

    def layer_conditions(self, lowres: torch.Tensor) -> list[torch.Tensor]:
        """lowres: [B, C, T + 2K, h, w] -> per layer [B*T, 9C, in_h, in_w]: the 2K+1 frames
        around each output frame stacked, resampled to the layer's input rate, padded to its
        size (margin) by replicating the edges."""
        K = self.cfg.context
        frames = lowres.unfold(2, 2 * K + 1, 1)  # [B, C, T, h, w, 2K+1]
        frames = rearrange(frames, "b c t h w s -> (b t) (c s) h w")
        by_rate: dict[int, torch.Tensor] = {}
        conds = []
        for spec in self.specs:
            r = spec.in_rate
            if r not in by_rate:
                up, down = max(r // self.lr_rate, 1), max(self.lr_rate // r, 1)
                by_rate[r] = resample_frames(frames, up=up, down=down)
            conds.append(_centre_pad(by_rate[r], spec.in_size))
        return conds

    def forward(self, lowres: torch.Tensor, z: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        """lowres: [B, C, T + 2K, h, w] in [-1, 1]; z: [B, z_dim] -> [B, C, T, H, W]."""
        B, T = lowres.shape[0], lowres.shape[2] - 2 * self.cfg.context
        assert T >= 1 and tuple(lowres.shape[3:]) == tuple(self.cfg.lowres), lowres.shape
        w = self.mapping(z)  # [B, w_dim], one per video
        x = None
        for layer, cond in zip(self.layers, self.layer_conditions(lowres)):
            x = cond if x is None else torch.cat([x, cond.to(x.dtype)], dim=1)
            x = layer(x, w, update_emas=update_emas)
        x = x * self.cfg.output_scale
        return rearrange(x, "(b t) c h w -> b c t h w", b=B, t=T)

    def latent(self, seed: int, batch: int = 1) -> torch.Tensor:
        """The video's z: [batch, z_dim], a pure function of the seed (drawn on the CPU)."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(batch, self.cfg.z_dim, generator=g).to(self.layers[0].weight.device)

    @torch.no_grad()
    def upsample_window(self, lowres: torch.Tensor, seed: int, segment: int = 16) -> torch.Tensor:
        """Super-resolve one window of a long video (METHODS.md 1.4, inference).

        lowres: [C, T + 2K, h, w] in [-1, 1] (K = context = 4 margin frames each side) ->
        [C, T, H, W]. z comes from ``seed`` so every window of one video uses the same z; the
        frames are computed ``segment`` at a time. Because output frame t depends only on
        low-res frames t-K .. t+K and z, windows computed separately equal one call over
        the whole range.
        """
        K = self.cfg.context
        if lowres.ndim != 4 or lowres.shape[1] <= 2 * K:
            raise ValueError(f"lowres must be [C, T + {2 * K}, h, w] with T >= 1, got {tuple(lowres.shape)}")
        z = self.latent(seed)
        T = lowres.shape[1] - 2 * K
        out = []
        for t0 in range(0, T, segment):
            t1 = min(t0 + segment, T)
            chunk = lowres[None, :, t0:t1 + 2 * K].to(self.layers[0].weight.device)
            out.append(self(chunk, z)[0])
        return torch.cat(out, dim=1)


# --- discriminator -------------------------------------------------------------------------

BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8  # StyleGAN2 resampling filter (separable)


class DConv(nn.Module):
    """Equalised conv2d (+ optional blur-then-stride-2 downsampling) + leaky ReLU, clamped."""

    def __init__(self, cin: int, cout: int, k: int, down: bool = False, bias: bool = True, act: bool = True,
                 clamp: float | None = 256.0):
        super().__init__()
        self.k, self.down, self.act, self.clamp = k, down, act, clamp
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1 / math.sqrt(cin * k * k)
        self.register_buffer("blur", BLUR.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, cin, H, W] -> [B, cout, H or H/2, W or W/2]
        w = (self.weight * self.gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if not self.down:
            x = F.conv2d(x, w, b, padding=self.k // 2)
        elif self.k == 1:
            x = F.conv2d(upfirdn2d(x, self.blur, down=2, padding=(1, 1, 1, 1)), w, b)
        else:  # blur with (k - 1) / 2 + 1 padding, then a strided valid conv (StyleGAN2 conv2d_resample)
            p = self.k // 2 + 1
            x = F.conv2d(upfirdn2d(x, self.blur, padding=(p, p, p, p)), w, b, stride=2)
        if self.act:
            x = lrelu_gain(x, clamp=self.clamp)
        elif self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        return x


class DBlock(nn.Module):
    """Residual block: two 3x3 convs (the second halves the size) + a 1x1 downsampling skip."""

    def __init__(self, cin: int, cout: int, clamp: float | None):
        super().__init__()
        self.conv0 = DConv(cin, cin, 3, clamp=clamp)
        self.conv1 = DConv(cin, cout, 3, down=True, clamp=clamp)
        self.skip = DConv(cin, cout, 1, down=True, bias=False, act=False, clamp=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv1(self.conv0(x)) + self.skip(x)) * math.sqrt(0.5)


class SuperResDiscriminator(nn.Module):
    def __init__(self, cfg: SuperResModelConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.res = max(cfg.highres)
        log2 = int(math.log2(self.res))
        ch = {r: min(cfg.d_channel_base // r, cfg.d_channel_max) for r in [2 ** i for i in range(2, log2 + 1)]}
        self.in_channels = 2 * 3 * cfg.frames
        self.fromrgb = DConv(self.in_channels, ch[self.res], 1, clamp=cfg.conv_clamp)
        self.blocks = nn.ModuleList(DBlock(ch[r], ch[r // 2], cfg.conv_clamp) for r in [2 ** i for i in range(log2, 2, -1)])
        self.conv = DConv(ch[4], ch[4], 3, clamp=cfg.conv_clamp)
        self.fc = FullyConnected(ch[4] * 16, ch[4], activation="lrelu")
        self.out = FullyConnected(ch[4], 1)

    def upsample_lowres(self, lowres: torch.Tensor) -> torch.Tensor:
        """[B, C, T, h, w] -> [B, C, T, H, W], bilinear."""
        B = lowres.shape[0]
        x = F.interpolate(rearrange(lowres, "b c t h w -> (b t) c h w"), size=tuple(self.cfg.highres),
                          mode="bilinear", align_corners=False)
        return rearrange(x, "(b t) c h w -> b c t h w", b=B)

    def forward(self, lowres_up: torch.Tensor, highres: torch.Tensor) -> torch.Tensor:
        """lowres_up, highres: [B, C, T, H, W] (low-res already upsampled) -> logits [B, 1]."""
        x = torch.cat([lowres_up, highres], dim=1)
        x = rearrange(x, "b c t h w -> b (c t) h w")  # 24 channels for 4 RGB frames
        assert x.shape[1] == self.in_channels, x.shape
        ph, pw = self.res - x.shape[2], self.res - x.shape[3]
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # zero-pad to a square
        x = self.fromrgb(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- memory benchmark ----------------------------------------------------------------------

def _fwd_bwd_child() -> None:
    """One G + D forward and backward of the paper config at batch 1; prints one JSON line."""
    torch.manual_seed(0)
    cfg = SuperResModelConfig()
    G, D = SuperResGenerator(cfg), SuperResDiscriminator(cfg)
    K, T = cfg.context, cfg.frames
    lowres = torch.rand(1, 3, T + 2 * K, *cfg.lowres) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    fake = G(lowres, torch.randn(1, cfg.z_dim), update_emas=True)
    logits = D(D.upsample_lowres(lowres[:, :, K:K + T]), fake)
    F.softplus(-logits).sum().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_gb": peak / 2 ** 20, "model_rss_gb": base / 2 ** 20, "seconds": seconds,
                      "G_params": count_parameters(G), "D_params": count_parameters(D)}))


def bench_fwd_bwd_peak_memory(timeout: float = 1800.0) -> dict:
    """Peak resident memory (GiB) of a paper-config super-res G + D forward + backward at
    batch 1 (4 frames at 144x256 from 12 at 36x64), fp32 on the CPU, measured in a fresh
    subprocess (ru_maxrss: what the OS saw, torch's allocator included).
    Returns {"peak_rss_gb", "model_rss_gb" (after building the nets), "seconds", "G_params",
    "D_params", "bar_gb": 8.0}."""
    code = "from vidgen.lvg.superres import _fwd_bwd_child; _fwd_bwd_child()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"super-res memory benchmark failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["bar_gb"] = 8.0
    return out
