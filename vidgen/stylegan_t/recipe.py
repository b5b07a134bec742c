"""Training recipe of StyleGAN-T for vidgen's engine (docs/STYLEGAN_T.md).

One step, as the reference: a D phase, then a G phase, both on the captions of the real
batch. D sees real and generated images through DiffAugment (``augment:``) and an optional
blur that fades out (``loss.blur_sigma`` over ``loss.blur_fade_kimg``), conditioned on the
frozen text embedding. Losses: non-saturating logistic (``loss.gan: ns``) or hinge (the
reference release), averaged over every token logit of every head; G adds the CLIP guidance
loss ``clip_weight * arccos(<f_img, f_text>)^2`` (the squared spherical distance between the
CLIP embeddings of the generated image, cropped to 64 and resized to CLIP's input, and of its
caption). No R1, no path length, no style mixing (StyleGAN-T has none).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.data.augment import AugmentConfig, augment
from vidgen.data.captions import CaptionedImages
from vidgen.errors import ConfigError
from vidgen.nn.text import build_text_encoder
from vidgen.stylegan_t.config import (StyleGANTConfig, build_discriminator, build_generator, check_config)
from vidgen.train.recipe import EMASpec, OptimizerSpec, Phase, Recipe

MAX_STORED_PROMPTS = 256  # captions kept in the checkpoint for `vidgen eval` / samples


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable blur of D's input with taps ``2^(-(t / sigma)^2)``, |t| <= 3 sigma, zero
    padded to the same size (the reference's fading blur). img: [B, C, H, W]."""
    size = int(math.floor(3 * sigma))
    if size <= 0:
        return img
    t = torch.arange(-size, size + 1, device=img.device, dtype=img.dtype)
    f = torch.exp2(-(t / sigma).square())
    f = f / f.sum()
    C = img.shape[1]
    img = F.conv2d(img, f.reshape(1, 1, 1, -1).expand(C, 1, 1, -1), padding=(0, size), groups=C)
    return F.conv2d(img, f.reshape(1, 1, -1, 1).expand(C, 1, -1, 1), padding=(size, 0), groups=C)


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance ``arccos(<x, y>)^2`` of normalised rows -> [B]."""
    cos = (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)
    return cos.clamp(-1 + 1e-7, 1 - 1e-7).arccos().square()


class StyleGANTRecipe(Recipe):
    family = "stylegan-t"
    config_class = StyleGANTConfig
    mixed_precision = "bf16"  # bfloat16 autocast (not the reference's float16 layers)
    count_on_meta = True  # `train --dry-run` builds the paper sizes without memory or weight files

    def __init__(self, cfg: StyleGANTConfig, device: torch.device):
        super().__init__(cfg, device)
        check_config(cfg)
        meta = device.type == "meta"  # parameter counts (train --dry-run): nothing allocated or read
        self.G = build_generator(cfg, "meta" if meta else device)
        self.D, self.dino_sha256 = build_discriminator(cfg, self.G.c_dim, "meta" if meta else device)
        self.clip = None  # the CLIP with an image tower, for the guidance loss
        if cfg.loss.clip_weight > 0 and not meta:
            self.clip = build_text_encoder(cfg.text, device, keep_image_tower=True)
        # D's conditioning comes from a frozen encoder; a copy when G's own is trained
        self.text = self.G.text if cfg.G.train_mode == "all" or meta else \
            copy.deepcopy(self.G.text).requires_grad_(False)
        a = cfg.augment
        self._augment = None if a.kind == "none" else AugmentConfig(
            xflip=a.xflip, color=a.color, translation=a.translation, cutout=a.cutout, time_stretch=0.0, p=a.p)
        self.data: CaptionedImages | None = None
        self._embeddings: dict[int, torch.Tensor] = {}  # caption index -> frozen embedding
        self.nimg = 0

    # --- what the engine trains ---------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        L = self.cfg.loss
        lr_g = L.lr_text if self.cfg.G.train_mode == "text_encoder" else L.lr_G
        return {"G": OptimizerSpec(("G",), lr_g, tuple(L.betas)), "D": OptimizerSpec(("D",), L.lr_D, tuple(L.betas))}

    def phases(self) -> list[Phase]:
        return [Phase("D", "D", self.loss_d, ("D",)), Phase("G", "G", self.loss_g, ("G",))]

    def ema(self) -> dict[str, EMASpec]:
        return {"G": self.cfg.ema}

    def dataset(self) -> torch.utils.data.Dataset:
        if not self.cfg.data.path:
            raise ConfigError("data.path: give a folder of images with .txt captions, a JSONL file or a prepared "
                              "dataset (--data DIR)")
        self.data = CaptionedImages(self.cfg.data.path, self.cfg.data.resolution, self.cfg.data.xflip)
        if self.device.type != "meta":
            self.embed(torch.zeros(1, dtype=torch.long))  # an encoder that cannot read the captions fails here
        return self.data

    # --- pieces ----------------------------------------------------------------------------
    def embed(self, captions: torch.Tensor) -> torch.Tensor:
        """Caption indices [B] -> frozen unit-norm text embeddings [B, c_dim] (cached)."""
        idx = captions.tolist()
        todo = sorted({i for i in idx if i not in self._embeddings})
        if todo:
            with torch.no_grad():
                emb = self.text([self.data.texts[i] for i in todo]).float()
            if len(self._embeddings) + len(todo) > 65536:
                self._embeddings.clear()
            self._embeddings.update(zip(todo, emb))
        return torch.stack([self._embeddings[i] for i in idx]).to(self.device)

    def generate(self, captions: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(captions), self.G.z_dim, device=self.device)
        if self.cfg.G.train_mode == "text_encoder":  # G encodes the strings with its trained encoder
            return self.G(z, [self.data.texts[i] for i in captions.tolist()])
        return self.G(z, c)

    def blur_sigma(self) -> float:
        L = self.cfg.loss
        if L.blur_fade_kimg <= 0:
            return 0.0
        return max(1.0 - self.nimg / (L.blur_fade_kimg * 1e3), 0.0) * L.blur_sigma

    def run_d(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        img = gaussian_blur(img, self.blur_sigma())
        if self._augment is not None:
            img = augment(img, self._augment)
        return self.D(img, c)

    def clip_loss(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """CLIP guidance: squared spherical distance of image and text embeddings -> [B]."""
        crop = self.cfg.loss.clip_crop
        if img.shape[-1] > crop:
            i, j = (int(torch.randint(0, s - crop + 1, ()).item()) for s in img.shape[-2:])
            img = img[..., i:i + crop, j:j + crop]
        size = self.clip.image_size
        x = F.interpolate((img + 1) / 2, size=(size, size), mode="area")
        return spherical_distance(self.clip.encode_image(x), c)

    # --- phases --------------------------------------------------------------------------
    def loss_d(self, micro, step: int):
        real, captions = micro["img"], micro["caption"]
        c = self.embed(captions)
        with torch.no_grad():
            fake = self.generate(captions, c)
        logits_fake = self.run_d(fake, c)
        logits_real = self.run_d(real, c)
        if self.cfg.loss.gan == "hinge":
            loss = F.relu(1 + logits_fake).mean() + F.relu(1 - logits_real).mean()
        else:
            loss = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        return loss, {"logits/real": logits_real.detach().mean(), "logits/fake": logits_fake.detach().mean(),
                      "signs/real": logits_real.detach().sign().mean(), "blur_sigma": self.blur_sigma()}

    def loss_g(self, micro, step: int):
        captions = micro["caption"]
        c = self.embed(captions)
        fake = self.generate(captions, c)
        logits = self.run_d(fake, c)
        loss = -logits.mean() if self.cfg.loss.gan == "hinge" else F.softplus(-logits).mean()
        stats = {"logits/fake_g": logits.detach().mean()}
        if self.clip is not None:
            dist = self.clip_loss(fake, c).mean()
            loss = loss + self.cfg.loss.clip_weight * dist
            stats["clip_distance"] = dist.detach()
        return loss, stats

    def end_step(self, step: int, stats: dict[str, float]) -> None:
        self.nimg += self.cfg.engine.batch

    # --- state, samples --------------------------------------------------------------------
    def prompts(self) -> list[str]:
        """Prompts of the run's samples: sample.prompts, else captions spread over the data."""
        if self.cfg.sample.prompts:
            return list(self.cfg.sample.prompts)
        if self.data is None:
            return []
        texts = self.data.texts
        step = max(len(texts) // MAX_STORED_PROMPTS, 1)
        return texts[::step][:MAX_STORED_PROMPTS]

    def state_dict(self) -> dict:
        return {"nimg": self.nimg, "prompts": self.prompts(), "dino_sha256": self.dino_sha256}

    def load_state_dict(self, state: dict) -> None:
        self.nimg = int(state.get("nimg", 0))

    @torch.no_grad()
    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor | None:
        G = nets.get("G_ema", nets["G"])
        prompts = self.prompts()
        if not prompts:
            return None
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num, G.z_dim, generator=gen).to(self.device)
        texts = [prompts[i % len(prompts)] for i in range(num)]
        return G(z, texts, psi=self.cfg.sample.psi, noise="const").clamp(-1, 1)

    def run_name(self) -> str:
        name = Path(self.cfg.data.path.rstrip("/")).stem or "data"
        r = self.cfg.data.resolution
        return f"stylegan-t-{name}-{r}x{r}-b{self.cfg.engine.batch}"
