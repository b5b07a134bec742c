"""StyleGAN2/3 building blocks shared by the image and super-res GANs (docs/METHODS.md 8).

- :class:`StyleMapping`: z (and an optional class label c) -> w, the tracked average of w
  and the truncation trick ``w_avg + psi (w - w_avg)`` (Karras et al. 2019, section 4).
- The StyleGAN2 residual discriminator (Karras et al. 2020, Fig. 7c): :class:`DConv`
  (equalised conv, optional [1, 3, 3, 1] low-pass + decimation, bias, leaky ReLU, clamp),
  :class:`DBlock`, :class:`MinibatchStd` and :class:`ResidualDiscriminator` with the
  projection conditioning of StyleGAN2-ADA (logit = <features, cmap(c)> / sqrt(dim)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vidgen.nn.alias_free import upfirdn2d
from vidgen.nn.fp16 import fp16_octave
from vidgen.nn.stats import register_statistic
from vidgen.nn.style import FullyConnected, lrelu_gain, normalize_2nd_moment

SQRT_HALF = math.sqrt(0.5)
BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8  # StyleGAN2 resampling filter, per axis


class StyleMapping(nn.Module):
    """z: [B, z_dim], c: [B, c_dim] -> ws: [B, num_ws, w_dim] (or [B, w_dim] if num_ws is None).

    z and the embedded label are each normalised to unit RMS and concatenated, then
    ``num_layers`` equalised FC layers with leaky ReLU and learning-rate multiplier 0.01.
    ``w_avg`` (when ``w_avg_beta`` is set) is a running mean of w, updated with
    ``update_emas``; ``psi`` < 1 pulls the first ``cutoff`` ws towards it.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.embed = FullyConnected(c_dim, w_dim) if c_dim > 0 else None
        dims = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnected(dims[i], dims[i + 1], activation="lrelu",
                                                   lr_multiplier=lr_multiplier) for i in range(num_layers))
        if w_avg_beta is not None:
            register_statistic(self, "w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, psi: float = 1.0,
                cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            assert c is not None and c.shape[-1] == self.c_dim, "a class label c: [B, c_dim] is required"
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = repeat(x, "b d -> b n d", n=self.num_ws)
        if psi != 1:
            assert self.w_avg_beta is not None, "truncation needs the tracked w_avg"
            if self.num_ws is None or cutoff is None:
                x = self.w_avg.lerp(x, psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :cutoff], psi), x[:, cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# --- discriminator -------------------------------------------------------------------------

class DConv(nn.Module):
    """Equalised conv2d, optionally low-passed ([1, 3, 3, 1]) and decimated by 2, then bias,
    activation (leaky ReLU x sqrt 2, or linear) and clamp; ``gain`` scales the result and the
    clamp together, as StyleGAN2's bias_act does."""

    def __init__(self, cin: int, cout: int, k: int, down: bool = False, bias: bool = True, act: bool = True,
                 clamp: float | None = 256.0):
        super().__init__()
        self.k, self.down, self.act, self.clamp = k, down, act, clamp
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1 / math.sqrt(cin * k * k)
        self.register_buffer("blur", BLUR.clone(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        # x: [B, cin, H, W] -> [B, cout, H or H/2, W or W/2]
        w = (self.weight * self.gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if not self.down:
            x = F.conv2d(x, w, b, padding=self.k // 2)
        elif self.k == 1:  # low-pass and decimate, then the 1x1 conv
            x = F.conv2d(upfirdn2d(x, self.blur, down=2, padding=(1, 1, 1, 1)), w, b)
        else:  # low-pass with (k - 1) / 2 + 1 padding, then a strided valid conv (StyleGAN2 conv2d_resample)
            p = self.k // 2 + 1
            x = F.conv2d(upfirdn2d(x, self.blur, padding=(p, p, p, p)), w, b, stride=2)
        if self.act:
            x = lrelu_gain(x, gain=math.sqrt(2.0) * gain)
        elif gain != 1:
            x = x * gain
        if self.clamp is not None:
            x = x.clamp(-self.clamp * gain, self.clamp * gain)
        return x


class DBlock(nn.Module):
    """Residual block: two 3x3 convs (the second halves the size) + a 1x1 downsampling skip,
    summed with weights sqrt(1/2)."""

    def __init__(self, cin: int, cout: int, clamp: float | None):
        super().__init__()
        self.conv0 = DConv(cin, cin, 3, clamp=clamp)
        self.conv1 = DConv(cin, cout, 3, down=True, clamp=clamp)
        self.skip = DConv(cin, cout, 1, down=True, bias=False, act=False, clamp=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x, gain=SQRT_HALF) + self.conv1(self.conv0(x), gain=SQRT_HALF)


class MinibatchStd(nn.Module):
    """Appends the standard deviation over groups of ``group_size`` samples (StyleGAN, 4.1):
    x: [N, C, H, W] -> [N, C + num_channels, H, W]. Sample i belongs to group i % (N / G)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        G = min(self.group_size, N)
        assert N % G == 0, f"batch {N} is not a multiple of the minibatch-std group size {G}"
        y = rearrange(x, "(g n) (f c) h w -> g n f c h w", g=G, f=self.num_channels)
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over each group
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [n, F]
        y = repeat(y, "n f -> (g n) f h w", g=G, h=H, w=W)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


def d_channels(res: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // res, channel_max)


class ResidualDiscriminator(nn.Module):
    """StyleGAN2 'resnet' discriminator on square ``res`` x ``res`` inputs.

    x: [B, in_channels, res, res] (c: [B, c_dim] when conditional) -> logits [B, 1].
    fromrgb (1x1) at full resolution, one :class:`DBlock` per octave down to 4x4, then the
    epilogue: minibatch std, 3x3 conv, FC to ``ch(4)``, FC out. With labels, the out layer
    has ``cmap_dim`` outputs projected on the label's embedding (an 8-layer mapping of c).
    """

    def __init__(self, res: int, in_channels: int, channel_base: int = 32768, channel_max: int = 512,
                 c_dim: int = 0, cmap_dim: int | None = None, mbstd_group: int = 4, mbstd_channels: int = 1,
                 mapping_layers: int = 8, conv_clamp: float | None = 256.0):
        super().__init__()
        log2 = int(math.log2(res))
        assert 2 ** log2 == res and res >= 4, f"resolution {res} is not a power of two >= 4"
        self.res, self.in_channels, self.c_dim = res, in_channels, c_dim
        ch = {r: d_channels(r, channel_base, channel_max) for r in (2 ** i for i in range(2, log2 + 1))}
        self.cmap_dim = 0 if c_dim == 0 else (cmap_dim or ch[4])
        self.fromrgb = DConv(in_channels, ch[res], 1, clamp=conv_clamp)
        self.blocks = nn.ModuleList(DBlock(ch[r], ch[r // 2], conv_clamp) for r in (2 ** i for i in range(log2, 2, -1)))
        self.mbstd = MinibatchStd(mbstd_group, mbstd_channels) if mbstd_channels > 0 else None
        self.conv = DConv(ch[4] + mbstd_channels, ch[4], 3, clamp=conv_clamp)
        self.fc = FullyConnected(ch[4] * 16, ch[4], activation="lrelu")
        self.out = FullyConnected(ch[4], self.cmap_dim or 1)
        self.mapping = StyleMapping(0, c_dim, self.cmap_dim, None, mapping_layers, w_avg_beta=None) \
            if c_dim > 0 else None

    def fp16_layers(self, num_fp16_res: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
        """fromrgb and the blocks of the ``num_fp16_res`` highest resolutions, which StyleGAN2
        runs in float16 (vidgen/nn/fp16.py); the epilogue stays float32."""
        res = [self.res >> i for i in range(len(self.blocks))]  # each block's input resolution
        out = [(self.fromrgb, (0,))] if fp16_octave(self.res, self.res, num_fp16_res) else []
        return out + [(b, (0,)) for b, r in zip(self.blocks, res) if fp16_octave(r, self.res, num_fp16_res)]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        assert x.shape[1:] == (self.in_channels, self.res, self.res), x.shape
        x = self.fromrgb(x)
        for block in self.blocks:
            x = block(x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.mapping is not None:
            cmap = self.mapping(None, c)
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x
