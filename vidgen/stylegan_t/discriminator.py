"""The StyleGAN-T projected discriminator (Sauer et al. 2023, section 3.2; Projected GAN,
Sauer et al. 2021; docs/STYLEGAN_T.md).

A frozen feature network, DINO ViT-S/16 (timm's VisionTransformer; Caron et al. 2021),
sees the image resized to 224x224 (area) and normalised with the ImageNet statistics. The
tokens after the patch embedding and after blocks 2, 5, 8 and 11 feed five trainable heads;
each token gets the class token added ("readout"), giving ``[B, C, N]`` sequences. A head is
a 1-D conv network over the tokens: a kernel-1 conv, then a residual kernel-9 circular conv,
each spectrally normalised and followed by batch normalisation over virtual batches of 8
and a leaky ReLU; a kernel-1 conv to 64 channels is projected onto an embedding of the text
(``<h, cmap(c)> / sqrt(64)``), one logit per token. The logits of all heads are concatenated:
``[B, 5 N]``. Images larger than the ViT's input are randomly cropped to it (probability
``p_crop``) in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.errors import VidgenError
from vidgen.nn.stats import register_statistic
from vidgen.nn.style import FullyConnected
from vidgen.nn.weights import WeightFile, read_state_dict, verified_file
from vidgen.optional import require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The DINO ViT-S/16 release (Caron et al. 2021); no SHA-256 is published for it, so the digest
# of the file used is reported (and stored with the run) instead of checked.
DINO_WEIGHTS = WeightFile(
    "dino_deitsmall16_pretrain.pth", "",
    "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth")


@dataclass
class DinoConfig:
    """The frozen ViT of the discriminator (default: DINO ViT-S/16)."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 16
    img_size: int = 224
    hooks: tuple[int, ...] = (2, 5, 8, 11)  # blocks whose output feeds a head
    hook_patch: bool = True  # and the tokens right after the patch embedding
    pretrained: bool = True  # False: seeded random weights (tests, CPU-sized runs)
    weights: str = ""  # "" = $VIDGEN_CACHE/detectors/dino_deitsmall16_pretrain.pth
    seed: int = 0


@dataclass
class DiscriminatorConfig:
    """The ``D`` section of a StyleGAN-T config."""

    dino: DinoConfig = field(default_factory=DinoConfig)
    cmap_dim: int = 64
    kernel_size: int = 9
    virtual_batch: int = 8  # batch-norm statistics over groups of this many samples
    p_crop: float = 0.5  # training: random 224 crop of larger images with this probability


class SpectralConv1d(nn.Module):
    """Conv1d (circular padding) whose weight is divided by its largest singular value,
    estimated by one power iteration per training forward (Miyato et al. 2018; the
    ``weight_orig`` / ``weight_u`` / ``weight_v`` layout of torch's spectral norm)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, eps: float = 1e-12):
        super().__init__()
        self.padding, self.eps = kernel_size // 2, eps
        conv = nn.Conv1d(cin, cout, kernel_size)  # PyTorch's default initialisation
        self.weight_orig = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        # running statistics (vidgen/nn/stats.py): every group of a multi-process batch makes the
        # same iteration, so the engine's group average leaves them as one process has them
        register_statistic(self, "weight_u", F.normalize(torch.randn(cout), dim=0, eps=eps))
        register_statistic(self, "weight_v", F.normalize(torch.randn(cin * kernel_size), dim=0, eps=eps))

    def weight(self) -> torch.Tensor:
        w = self.weight_orig
        mat = w.reshape(w.shape[0], -1)
        u, v = self.weight_u, self.weight_v
        if self.training:  # one power iteration, kept in the buffers
            with torch.no_grad():
                v = F.normalize(mat.t() @ u, dim=0, eps=self.eps)
                u = F.normalize(mat @ v, dim=0, eps=self.eps)
                self.weight_v.copy_(v)  # u, v stay separate tensors: a later forward updates
                self.weight_u.copy_(u)  # the buffers in place while this graph still needs them
        return w / torch.dot(u, mat @ v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, cin, N] -> [B, cout, N]
        if self.padding:
            x = F.pad(x, (self.padding, self.padding), mode="circular")
        return F.conv1d(x, self.weight().to(x.dtype), self.bias.to(x.dtype))


class BatchNormLocal(nn.Module):
    """Batch normalisation with the statistics of groups of ``virtual_batch`` samples (over the
    samples of a group and all tokens), in training and evaluation alike."""

    def __init__(self, channels: int, virtual_batch: int = 8, eps: float = 1e-5):
        super().__init__()
        self.virtual_batch, self.eps = virtual_batch, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, N]
        groups = -(-x.shape[0] // self.virtual_batch)
        if x.shape[0] % groups:  # uneven groups: normalise each part on its own
            return torch.cat([self(part) for part in x.tensor_split(groups)])
        g = rearrange(x, "(g b) c n -> g b c n", g=groups)
        mean = g.mean(dim=(1, 3), keepdim=True)
        var = g.var(dim=(1, 3), keepdim=True, unbiased=False)
        g = (g - mean) / torch.sqrt(var + self.eps)
        return rearrange(g, "g b c n -> (g b) c n") * self.weight[:, None] + self.bias[:, None]


class DiscHead(nn.Module):
    """Logits [B, N] for token features [B, C, N] and a text embedding [B, c_dim]."""

    def __init__(self, channels: int, c_dim: int, cfg: DiscriminatorConfig):
        super().__init__()
        self.conv0 = SpectralConv1d(channels, channels, 1)
        self.norm0 = BatchNormLocal(channels, cfg.virtual_batch)
        self.conv1 = SpectralConv1d(channels, channels, cfg.kernel_size)
        self.norm1 = BatchNormLocal(channels, cfg.virtual_batch)
        self.cmap_dim = cfg.cmap_dim if c_dim else 1
        self.cls = SpectralConv1d(channels, self.cmap_dim, 1)
        self.cmapper = FullyConnected(c_dim, cfg.cmap_dim) if c_dim else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = F.leaky_relu(self.norm0(self.conv0(x)), 0.2)
        h = (F.leaky_relu(self.norm1(self.conv1(h)), 0.2) + h) / math.sqrt(2)
        out = self.cls(h)  # [B, cmap_dim, N]
        if self.cmapper is not None:  # projection onto the text embedding
            out = (out * self.cmapper(c.to(out.dtype))[:, :, None]).sum(1) / math.sqrt(self.cmap_dim)
        return out.reshape(x.shape[0], -1)


class DinoFeatures(nn.Module):
    """The frozen ViT: images [B, 3, H, W] in [0, 1] -> token features ``[B, C, N]`` at the
    patch embedding and the hooked blocks (order: the hooked blocks, then the patch tokens)."""

    def __init__(self, cfg: DinoConfig):
        super().__init__()
        timm = require("timm", "text", "the DINO feature network of the StyleGAN-T discriminator")
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # random weights (pretrained: false) depend on cfg.seed alone
            torch.manual_seed(cfg.seed)
            self.vit = timm.models.vision_transformer.VisionTransformer(
                img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                num_heads=cfg.num_heads, num_classes=0)
        self.vit.eval().requires_grad_(False)
        self.num_features = len(cfg.hooks) + int(cfg.hook_patch)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def train(self, mode: bool = True):  # frozen: stays in eval mode
        return super().train(False)

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.vit.pos_embed  # [1, 1 + g * g, C]
        g = int(math.sqrt(pos.shape[1] - 1))
        if (gh, gw) == (g, g):
            return pos
        grid = rearrange(pos[:, 1:], "1 (h w) c -> 1 c h w", h=g)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([pos[:, :1], rearrange(grid, "1 c h w -> 1 (h w) c")], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(x, self.cfg.img_size, mode="area")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        v = self.vit
        t = rearrange(v.patch_embed.proj(x), "b c h w -> b (h w) c")
        gh, gw = x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size
        t = torch.cat([v.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self._pos_embed(gh, gw)
        t = v.norm_pre(v.patch_drop(v.pos_drop(t)))
        feats: dict[int, torch.Tensor] = {}
        if self.cfg.hook_patch:
            feats[len(self.cfg.hooks)] = t
        for i, block in enumerate(v.blocks[: max(self.cfg.hooks) + 1]):
            t = block(t)
            if i in self.cfg.hooks:
                feats[self.cfg.hooks.index(i)] = t
        # readout: every patch token plus the class token, channels first
        return [rearrange(f[:, 1:] + f[:, :1], "b n c -> b c n") for _, f in sorted(feats.items())]

    def load_weights(self) -> str:
        """Load the published weights (see DINO_WEIGHTS); returns the file's SHA-256."""
        file, digest = verified_file(DINO_WEIGHTS, self.cfg.weights or None, "DINO ViT-S/16 of the discriminator",
                                     key="D.dino.weights")
        state = read_state_dict(file)
        own = self.vit.state_dict()
        missing = [k for k in own if k not in state]
        bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or bad:
            raise VidgenError(f"{file} does not fit the ViT of D.dino (missing {missing[:3]}, "
                              f"wrong shape {bad[:3]}); it must be the DINO ViT-S/16 release")
        self.vit.load_state_dict({k: state[k].to(own[k].dtype) for k in own})
        return digest


class ProjectedDiscriminator(nn.Module):
    """D(images [B, 3, H, W] in [-1, 1], text embeddings [B, c_dim]) -> logits [B, heads * N].

    Augmentation (DiffAugment) is applied by the caller, before D."""

    def __init__(self, cfg: DiscriminatorConfig, c_dim: int):
        super().__init__()
        self.cfg, self.c_dim = cfg, c_dim
        self.dino = DinoFeatures(cfg.dino)
        self.heads = nn.ModuleList(DiscHead(cfg.dino.embed_dim, c_dim, cfg) for _ in range(self.dino.num_features))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        x = (x + 1) / 2
        size = self.cfg.dino.img_size
        if self.training and x.shape[-1] > size and torch.rand(()).item() < self.cfg.p_crop:
            i, j = (int(torch.randint(0, s - size + 1, ()).item()) for s in x.shape[-2:])
            x = x[..., i:i + size, j:j + size]
        feats = self.dino(x)
        return torch.cat([head(f, c) for head, f in zip(self.heads, feats)], dim=1)
