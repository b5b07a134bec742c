"""Benchmark of StyleGAN-T on the captioned shapes sample (docs/STYLEGAN_T.md).

1. ``vidgen data synth shapes``: coloured shapes (circle, square, triangle; red, green,
   blue, yellow) on a background of another colour, with captions "a red circle on a blue
   background" (36 prompts).
2. A small attribute classifier (a CNN with three heads: shape colour, shape, background
   colour) is trained on the sample itself; its accuracy on held-out images is reported.
3. For each seed, configs/stylegan-t/tiny.yaml is trained through the shared engine for a
   fixed budget of process CPU time (``--cpu-min``, one torch thread, each seed in its own
   process), so the figures depend on the code and the budget, not on how loaded the
   machine is. The tiny config needs no weight files: its text encoder is the hashed-words
   encoder (text.kind: words) and D's ViT is a small random one (D.dino.pretrained: false).
4. With the EMA generator, ``--per-prompt`` images of every prompt at psi 1.0, 0.7, 0.5:
   - accuracy: share of images whose three predicted attributes all match the prompt
     (chance, for images that ignore the prompt: 1 / (4 * 3 * 3) = 0.028);
   - diversity: mean pairwise L1 distance (pixels in [0, 1]) between images of one prompt,
     averaged over prompts.

Bar (median over the seeds): accuracy at psi 0.7 >= 3x chance; accuracy rises as psi falls
(1.0 -> 0.7 -> 0.5) while diversity falls.

5. Paint-with-words (eDiff-I; vidgen diffusion sample --region): configs/diffusion/tiny-text.yaml
   (an EDM2 U-Net with cross-attention to the caption tokens) is trained for ``--pww-cpu-min``
   on shapes with one or two objects ("a red circle and a blue square on a green background":
   the first object in the left half). Every two-object prompt of a fixed set is sampled for
   the same seeds without regions and with the two phrases painted at swapped places (the
   first object's shape in the right half, the second's in the left). Figure: the share of
   each region's pixels whose nearest palette colour is the colour its phrase names, averaged
   over regions, prompts and seeds; bar: it rises with the regions.

Prints one JSON line.

    python tools/bench_t2i.py [--cpu-min 6] [--seeds 0,1,2] [--jobs 2] [--pww-cpu-min 6] [--set loss.lr_G=0.002]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidgen.config import load_config  # noqa: E402
from vidgen.data.captions import CaptionedImages  # noqa: E402
from vidgen.data.synthetic import SHAPE_COLORS, SHAPE_KINDS, make_shapes, shape_caption  # noqa: E402

PSIS = (1.0, 0.7, 0.5)
COLORS = list(SHAPE_COLORS)


def prompts() -> list[tuple[str, tuple[int, int, int]]]:
    """Every (caption, (shape colour, shape, background)) of the one-object sample."""
    out = []
    for c, color in enumerate(COLORS):
        for k, kind in enumerate(SHAPE_KINDS):
            for b, bg in enumerate(COLORS):
                if b != c:
                    out.append((shape_caption([(color, kind)], bg), (c, k, b)))
    return out


CHANCE = 1.0 / (len(COLORS) * len(SHAPE_KINDS) * (len(COLORS) - 1))


class AttributeNet(nn.Module):
    """images [B, 3, 32, 32] in [-1, 1] -> logits of (shape colour, shape, background)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(128, n) for n in (len(COLORS), len(SHAPE_KINDS), len(COLORS)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([out.argmax(1) for out in self(x)], dim=1)  # [B, 3]


def labelled(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the sample ([N, 3, R, R]) and its attributes ([N, 3])."""
    ds = CaptionedImages(data, 32)
    rows = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines()]
    by_file = {r["file"]: r for r in rows}
    x = torch.stack([ds.image(i) for i in range(len(ds))])
    y = []
    for f in ds.files:
        r = by_file[f.name]
        o = r["objects"][0]
        y.append([COLORS.index(o["color"]), SHAPE_KINDS.index(o["shape"]), COLORS.index(r["background"])])
    return x, torch.tensor(y)


def train_classifier(data: Path, steps: int = 800, seed: int = 0) -> tuple[dict, float]:
    """(state dict, held-out accuracy of all three attributes) of an AttributeNet."""
    torch.manual_seed(seed)
    x, y = labelled(data)
    n_test = len(x) // 5
    xt, yt, xv, yv = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    net = AttributeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        i = torch.randint(0, len(xt), (64,))
        xb = xt[i] + 0.03 * torch.randn_like(xt[i])  # a little noise: generated images are not clean
        loss = sum(F.cross_entropy(o, yt[i, k]) for k, o in enumerate(net(xb)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = float((net.eval().predict(xv) == yv).all(1).float().mean())
    return net.state_dict(), acc


def evaluate(G, classifier: AttributeNet, per_prompt: int, seed: int) -> dict:
    """Accuracy and diversity of ``per_prompt`` images of every prompt at each psi."""
    out = {}
    ps = prompts()
    texts = [p for p, _ in ps for _ in range(per_prompt)]
    target = torch.tensor([a for _, a in ps for _ in range(per_prompt)])
    z = torch.randn(len(texts), G.z_dim, generator=torch.Generator().manual_seed(10_000 + seed))
    for psi in PSIS:
        with torch.no_grad():
            imgs = torch.cat([G(z[i:i + 64], texts[i:i + 64], psi=psi, noise="const")
                              for i in range(0, len(texts), 64)]).clamp(-1, 1)
        pred = classifier.predict(imgs)
        x = ((imgs + 1) / 2).reshape(len(ps), per_prompt, -1)
        pair = (x[:, :, None] - x[:, None]).abs().mean(-1)  # [P, K, K]
        k = per_prompt
        div = float((pair.sum((1, 2)) / (k * (k - 1))).mean())
        out[str(psi)] = {"accuracy": round(float((pred == target).all(1).float().mean()), 4),
                         "attributes": [round(float(v), 4) for v in (pred == target).float().mean(0)],
                         "diversity": round(div, 4)}
    return out


def run_seed(seed: int, data: str, cpu_s: float, classifier_state: dict, per_prompt: int,
             overrides: list[str], out_dir: str) -> dict:
    """Train the tiny config for ``cpu_s`` seconds of process CPU time, then evaluate."""
    torch.set_num_threads(1)
    from vidgen.stylegan_t.config import StyleGANTConfig
    from vidgen.stylegan_t.recipe import StyleGANTRecipe
    from vidgen.train.dist import DistInfo
    from vidgen.train.engine import Trainer, make_loader, to_device

    cfg = load_config(StyleGANTConfig, ROOT / "configs/stylegan-t/tiny.yaml",
                      [f"data.path={data}", f"engine.seed={seed}", f"engine.out_dir={out_dir}", "engine.workers=0",
                       "engine.steps=1000000", *overrides])
    tr = Trainer(StyleGANTRecipe, cfg, DistInfo(device=torch.device("cpu")))
    loader = make_loader(tr.recipe.dataset(), cfg.engine, tr.info, consumed=0)
    t0, w0 = time.process_time(), time.perf_counter()
    while time.process_time() - t0 < cpu_s:
        tr.train_step(to_device(next(loader), tr.info.device))
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    classifier = AttributeNet()
    classifier.load_state_dict(classifier_state)
    G = tr.emas["G"].copies()["G_ema"].eval()
    return {"seed": seed, "steps": tr.step, "kimg": tr.nimg / 1000, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            **evaluate(G, classifier.eval(), per_prompt, seed)}


def pww_regions(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Painted regions of the first and second object: a disc in the right half and a square in
    the left half (the training layout swapped), each about the size of a drawn shape."""
    t = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(t, t, indexing="ij")
    right = (((x - 0.75 * size) ** 2 + (y - size / 2) ** 2) <= (0.22 * size) ** 2).float()
    left = (((x - 0.25 * size).abs() <= 0.2 * size) & ((y - size / 2).abs() <= 0.2 * size)).float()
    return right, left


def pww_prompts(n: int = 12, seed: int = 0) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(prompt, first object, second object) of ``n`` two-object scenes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        bg, c1, c2 = (COLORS[i] for i in rng.choice(len(COLORS), 3, replace=False))
        k1, k2 = (SHAPE_KINDS[i] for i in rng.integers(len(SHAPE_KINDS), size=2))
        out.append((shape_caption([(c1, k1), (c2, k2)], bg), (c1, k1), (c2, k2)))
    return out


def colour_share(images: np.ndarray, region: torch.Tensor, color: str) -> float:
    """Share of the pixels of ``region`` ([H, W] in {0, 1}) whose nearest palette colour is
    ``color``, over uint8 ``images`` [N, H, W, 3]."""
    palette = np.asarray([SHAPE_COLORS[c] for c in COLORS], np.float64)
    dist = ((images[..., None, :].astype(np.float64) - palette) ** 2).sum(-1)  # [N, H, W, 4]
    hit = dist.argmin(-1) == COLORS.index(color)
    m = region.numpy() > 0.5
    return float(hit[:, m].mean())


def run_pww(data: str, cpu_s: float, per_prompt: int, weight: float, out_dir: str) -> dict:
    """Train the text-conditioned tiny EDM2 for ``cpu_s`` CPU seconds, then measure."""
    torch.set_num_threads(1)
    from vidgen.data.vae import LatentCodec
    from vidgen.diffusion.config import DiffusionConfig
    from vidgen.diffusion.generate import generate_images
    from vidgen.diffusion.recipe import DiffusionRecipe
    from vidgen.diffusion.sample import SamplerConfig
    from vidgen.diffusion.text import paint_with_words
    from vidgen.train.dist import DistInfo
    from vidgen.train.engine import Trainer, make_loader, to_device

    cfg = load_config(DiffusionConfig, ROOT / "configs/diffusion/tiny-text.yaml",
                      [f"data.path={data}", f"engine.out_dir={out_dir}", "engine.workers=0", "engine.steps=1000000"])
    tr = Trainer(DiffusionRecipe, cfg, DistInfo(device=torch.device("cpu")))
    loader = make_loader(tr.recipe.dataset(), cfg.engine, tr.info, consumed=0)
    t0 = time.process_time()
    while time.process_time() - t0 < cpu_s:
        tr.train_step(to_device(next(loader), tr.info.device))
    cpu = time.process_time() - t0
    net = tr.emas["net"].copies()["net_ema"].eval()
    text, codec = tr.recipe.text, LatentCodec(cfg.encoder, "cpu")
    right, left = pww_regions(cfg.data.resolution)
    scfg = SamplerConfig(steps=16)
    seeds = list(range(per_prompt))
    shares = {"without": [], "with": []}
    for prompt, (c1, k1), (c2, k2) in pww_prompts():
        paint = paint_with_words(text, prompt, [(right, f"{c1} {k1}"), (left, f"{c2} {k2}")], weight)
        for key, p in (("without", None), ("with", paint)):
            imgs = generate_images(net, cfg, seeds, scfg, prompts=[prompt] * len(seeds), text=text, paint=p,
                                   codec=codec).images
            shares[key].append((colour_share(imgs, right, c1) + colour_share(imgs, left, c2)) / 2)
    return {"steps": tr.step, "kimg": tr.nimg / 1000, "cpu_s": round(cpu, 1), "prompts": len(shares["with"]),
            "per_prompt": per_prompt, "pww_weight": weight,
            "share_without_regions": round(float(np.mean(shares["without"])), 4),
            "share_with_regions": round(float(np.mean(shares["with"])), 4),
            "prompts_where_it_rises": int(sum(w > o for w, o in zip(shares["with"], shares["without"])))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-min", type=float, default=6.0, help="training budget per seed, in process CPU minutes")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="seeds trained at once (one process each)")
    ap.add_argument("--count", type=int, default=4000, help="images in the shapes sample")
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override of the tiny config")
    ap.add_argument("--pww-cpu-min", type=float, default=6.0, help="paint-with-words: training budget (0: skip)")
    ap.add_argument("--pww-per-prompt", type=int, default=4)
    ap.add_argument("--pww-weight", type=float, default=1.0)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        make_shapes(data, seed=1234, size=32, count=args.count)
        state, clf_acc = train_classifier(data)
        jobs = [(run_seed, s, str(data), args.cpu_min * 60, state, args.per_prompt, args.overrides, f"{tmp}/runs{s}")
                for s in seeds]
        if args.pww_cpu_min > 0:
            data2 = Path(tmp) / "shapes2"
            make_shapes(data2, seed=4321, size=32, count=args.count, objects=(1, 2))
            jobs.append((run_pww, str(data2), args.pww_cpu_min * 60, args.pww_per_prompt, args.pww_weight,
                         f"{tmp}/pww"))
        results = []
        if args.jobs > 1:
            with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
                for fut in cf.as_completed([pool.submit(*j) for j in jobs]):
                    results.append(fut.result())
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        else:
            for fn, *a in jobs:
                results.append(fn(*a))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        runs = sorted((r for r in results if "seed" in r), key=lambda r: r["seed"])
        pww = next((r for r in results if "share_with_regions" in r), None)

    med = {str(p): {k: statistics.median(r[str(p)][k] for r in runs) for k in ("accuracy", "diversity")} for p in PSIS}
    acc = [med[str(p)]["accuracy"] for p in PSIS]
    div = [med[str(p)]["diversity"] for p in PSIS]
    checks = {"accuracy_psi0.7_vs_3x_chance": acc[1] >= 3 * CHANCE,
              "accuracy_rises_as_psi_falls": acc[0] < acc[1] < acc[2],
              "diversity_falls_as_psi_falls": div[0] > div[1] > div[2]}
    print(json.dumps({
        "bench": "t2i", "config": "configs/stylegan-t/tiny.yaml", "overrides": args.overrides,
        "text_encoder": "hashed words (text.kind: words)", "cpu_min_per_seed": args.cpu_min,
        "classifier_heldout_accuracy": round(clf_acc, 4), "chance": round(CHANCE, 4),
        "prompts": len(prompts()), "per_prompt": args.per_prompt, "runs": runs, "median": med,
        "bars": {"accuracy_psi0.7": f">= {3 * CHANCE:.4f} (3x chance)", "trend": "accuracy up, diversity down as psi falls"},
        "checks": checks, "paint_with_words": pww,
        "pww_check": None if pww is None else pww["share_with_regions"] > pww["share_without_regions"],
        "pass": all(checks.values()) and (pww is None or pww["share_with_regions"] > pww["share_without_regions"]),
        "wall_s": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
