"""Super-resolution networks of the long-video GAN (docs/METHODS.md 1.4).

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

from vidgen.nn import count_parameters
from vidgen.errors import ConfigError
from vidgen.nn.alias_free import SynthesisLayer, layer_specs, upfirdn2d
from vidgen.nn.filters import kaiser_lowpass, linear_filter
from vidgen.nn.stylegan import ResidualDiscriminator, StyleMapping


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

def kaiser_resample_filter(scale: int, taps_per_factor: int = 6) -> torch.Tensor:
    """The conditioning resampler's low-pass (the long-video GAN's): ``taps_per_factor * scale``
    Kaiser taps, cutoff 1 and transition width 6 at a rate of 4 per low-rate sample (i.e. a
    quarter of the low rate, 0.75 wide), whichever way the resampling goes."""
    return torch.as_tensor(kaiser_lowpass(taps_per_factor * scale, 1.0, 6.0, 4.0 * scale), dtype=torch.float32)


def resample_frames(x: torch.Tensor, up: int = 1, down: int = 1, f: torch.Tensor | None = None) -> torch.Tensor:
    """Resample images by an integer factor with :func:`kaiser_resample_filter`; edges replicate.

    x: [N, C, h, w] -> [N, C, h*up/down, w*up/down]; sample centres stay aligned (pixel-area
    convention: output j of a decimation by s sits at input (j + 1/2) s - 1/2). Downsampling
    pads s replicated samples on each side, upsampling one, before filtering (the same
    samples at the borders as the long-video GAN's conditioning).
    """
    assert up == 1 or down == 1
    s = max(up, down)
    if s == 1:
        return x
    f = (kaiser_resample_filter(s) if f is None else f).to(x.device, x.dtype)
    k = f.numel()
    if down > 1:
        x = F.pad(x, (s, s, s, s), mode="replicate")
        lo, hi = (k - s + 1) // 2 - s, (k - s) // 2 - s
        return upfirdn2d(x, f, down=s, padding=(lo, hi, lo, hi))
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    lo, hi = (k + s - 1) // 2 - s, (k - s) // 2 - s
    return upfirdn2d(x, f, up=s, padding=(lo, hi, lo, hi), gain=s * s)


def _crop_or_pad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x: [N, C, h, w] centre-cropped where larger than size (width, height), then
    replicate-padded around its centre where smaller."""
    W, H = size
    x0, y0 = max(0, (x.shape[-1] - W) // 2), max(0, (x.shape[-2] - H) // 2)
    x = x[..., y0:y0 + H, x0:x0 + W]
    dw, dh = W - x.shape[-1], H - x.shape[-2]
    if dw or dh:
        x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")
    return x


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
        self.mapping = StyleMapping(cfg.z_dim, 0, cfg.w_dim, None, cfg.mapping_layers)
        self.mapping.register_load_state_dict_pre_hook(_default_w_avg)
        self.layers = nn.ModuleList(SynthesisLayer(cfg.w_dim, s, conv_clamp=cfg.conv_clamp,
                                                   magnitude_ema_beta=cfg.magnitude_ema_beta) for s in self.specs)
        for r in sorted({s.in_rate for s in self.specs} - {self.lr_rate}):  # the resamplers' filters
            scale = max(r // self.lr_rate, self.lr_rate // r)
            self.register_buffer(f"resample_{r}", kaiser_resample_filter(scale), persistent=False)

    def layer_conditions(self, lowres: torch.Tensor) -> list[torch.Tensor]:
        """lowres: [B, C, T + 2K, h, w] -> per layer [B*T, 9C, in_h, in_w]: the frames padded to a
        square plus the margin (edges replicated), the 2K+1 frames around each output frame
        stacked, resampled to the layer's input rate and cut (or padded) to its size."""
        K, m = self.cfg.context, self.cfg.margin
        h, w = lowres.shape[-2:]
        side = self.lr_rate
        pad = ((side - w) // 2 + m, (side - w + 1) // 2 + m, (side - h) // 2 + m, (side - h + 1) // 2 + m)
        frames = F.pad(lowres, (*pad, 0, 0), mode="replicate")
        frames = rearrange(frames.unfold(2, 2 * K + 1, 1), "b c t h w s -> (b t) (c s) h w")
        by_rate: dict[int, torch.Tensor] = {}
        conds = []
        for spec in self.specs:
            r = spec.in_rate
            if r not in by_rate:
                f = getattr(self, f"resample_{r}", None)
                by_rate[r] = resample_frames(frames, up=max(r // side, 1), down=max(side // r, 1), f=f)
            conds.append(_crop_or_pad(by_rate[r], spec.in_size))
        return conds

    def forward(self, lowres: torch.Tensor, z: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        """lowres: [B, C, T + 2K, h, w] in [-1, 1]; z: [B, z_dim] -> [B, C, T, H, W]."""
        B, T = lowres.shape[0], lowres.shape[2] - 2 * self.cfg.context
        assert T >= 1 and tuple(lowres.shape[3:]) == tuple(self.cfg.lowres), lowres.shape
        w = self.mapping(z, update_emas=update_emas)  # [B, w_dim], one per video
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
    def upsample_window(self, lowres: torch.Tensor, seed: int | None = None, segment: int = 16,
                        z: torch.Tensor | None = None) -> torch.Tensor:
        """Super-resolve one window of a long video (docs/METHODS.md 1.4, inference).

        lowres: [C, T + 2K, h, w] in [-1, 1] (K = context = 4 margin frames each side) ->
        [C, T, H, W]. z comes from ``seed`` (or is given: [1, z_dim]) so every window of one
        video uses the same z; the frames are computed ``segment`` at a time. Because output
        frame t depends only on low-res frames t-K .. t+K and z, windows computed separately
        equal one call over the whole range.
        """
        K = self.cfg.context
        if lowres.ndim != 4 or lowres.shape[1] <= 2 * K:
            raise ValueError(f"lowres must be [C, T + {2 * K}, h, w] with T >= 1, got {tuple(lowres.shape)}")
        z = self.latent(seed) if z is None else z.to(self.layers[0].weight.device)
        T = lowres.shape[1] - 2 * K
        out = []
        for t0 in range(0, T, segment):
            t1 = min(t0 + segment, T)
            chunk = lowres[None, :, t0:t1 + 2 * K].to(self.layers[0].weight.device)
            out.append(self(chunk, z)[0])
        return torch.cat(out, dim=1)


def _default_w_avg(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints written before the generator tracked the average w hold no ``w_avg``:
    it starts at zero (it only matters for truncation)."""
    if prefix + "w_avg" not in state_dict and any(k.startswith(prefix) for k in state_dict):
        state_dict[prefix + "w_avg"] = torch.zeros_like(module.w_avg)


# --- discriminator -------------------------------------------------------------------------

class SuperResDiscriminator(ResidualDiscriminator):
    """The StyleGAN2 residual discriminator on 2 x frames RGB images (low-res upsampled, then
    high-res, stacked along channels), zero-padded to a square; no minibatch std."""

    def __init__(self, cfg: SuperResModelConfig):
        cfg.check()
        super().__init__(max(cfg.highres), 2 * 3 * cfg.frames, cfg.d_channel_base, cfg.d_channel_max,
                         mbstd_channels=0, conv_clamp=cfg.conv_clamp)
        self.cfg = cfg
        self.up = max(cfg.highres) // max(cfg.lowres)
        self.register_buffer("upsample_filter", torch.as_tensor(linear_filter(self.up), dtype=torch.float32),
                             persistent=False)

    def upsample_lowres(self, lowres: torch.Tensor) -> torch.Tensor:
        """[B, C, T, h, w] -> [B, C, T, H, W]: linear interpolation (x ``up``), zeros beyond the edges."""
        B, s = lowres.shape[0], self.up
        f = self.upsample_filter.to(lowres.dtype)
        k = f.numel()
        x = upfirdn2d(rearrange(lowres, "b c t h w -> (b t) c h w"), f, up=s,
                      padding=((k + s - 1) // 2, (k - s) // 2, (k + s - 1) // 2, (k - s) // 2), gain=s * s)
        return rearrange(x, "(b t) c h w -> b c t h w", b=B)

    def forward(self, lowres_up: torch.Tensor, highres: torch.Tensor) -> torch.Tensor:
        """lowres_up, highres: [B, C, T, H, W] (low-res already upsampled) -> logits [B, 1]."""
        x = torch.cat([lowres_up, highres], dim=1)
        x = rearrange(x, "b c t h w -> b (c t) h w")  # 24 channels for 4 RGB frames
        assert x.shape[1] == self.in_channels, x.shape
        ph, pw = self.res - x.shape[2], self.res - x.shape[3]
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # zero-pad to a square
        return super().forward(x)


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
