"""DINOv2 ViT-L/14 feature network (docs/METHODS.md section 9: FD_DINOv2, 1024-d).

Module names follow the official checkpoint `dinov2_vitl14_pretrain.pth` (cls_token,
pos_embed [1, 1370, 1024] for a 37x37 grid, mask_token, patch_embed.proj, blocks.i.{norm1,
attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm), so it loads with
`strict=True`. Features are the final-norm class token (the hub model's output, its head being
the identity). Input preprocessing (`preprocess.dinov2_input`): the FD_DINOv2 protocol of
dgm-eval (Stein et al. 2023), PIL bicubic resize of the uint8 image to 224 x 224, / 255,
ImageNet mean / std; `resize="torch"` is EDM2's fast variant (antialiased bicubic in torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.metrics.preprocess import dinov2_input


@dataclass(frozen=True)
class ViTConfig:
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    patch: int = 14
    pretrain_size: int = 518   # position embeddings are stored for a 518 / 14 = 37 grid
    mlp_ratio: float = 4.0
    input_size: int = 224      # FD_DINOv2 resize
    resize: Literal["pil", "torch"] = "pil"  # dgm-eval's PIL bicubic, or EDM2's torch variant


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch, stride=cfg.patch)

    def forward(self, x):                                   # x: [B, 3, H, W]
        return rearrange(self.proj(x), "b c h w -> b (h w) c")


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x):                                   # x: [B, N, C]
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(cfg.dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViT(nn.Module):
    """x: [B, 3, H, W] uint8 -> [B, dim] normalised class-token features."""

    def __init__(self, cfg: ViTConfig = ViTConfig()):
        super().__init__()
        self.cfg = cfg
        self.feature_dim = cfg.dim
        grid = cfg.pretrain_size // cfg.patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.dim))  # unused at inference; in the file
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def pos_embedding(self, h: int, w: int) -> torch.Tensor:
        """Resize the stored grid to h x w patches (bicubic, with DINOv2's +0.1 offset)."""
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        n = int(math.sqrt(patch_pos.shape[1]))
        if (h, w) == (n, n):
            return self.pos_embed
        grid = rearrange(patch_pos, "1 (h w) c -> 1 c h w", h=n).float()
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / n, (w + 0.1) / n), mode="bicubic")
        assert grid.shape[-2:] == (h, w)
        patch_pos = rearrange(grid, "1 c h w -> 1 (h w) c").to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.cfg.input_size
        x = dinov2_input(x, size, self.cfg.resize, self.pos_embed.dtype)  # [B, 3, size, size]
        tokens = self.patch_embed(x)                                # [B, N, C]
        g = size // self.cfg.patch
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embedding(g, g)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]                              # [B, C]
