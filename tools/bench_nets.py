"""Speed of today's networks against those of commit 999248c, in one run; prints one JSON line.

The networks of 999248c come from a git worktree that this benchmark checks out under a
temporary folder (and removes afterwards); the commit must be in the repository's history.
Every measurement runs in its own child process (a fresh allocator, the same thread count,
the host allocator in the same mode through ``vidgen.hostmem``), old and new interleaved,
fp32 on the CPU; each child builds its network from the same seed and config values, runs
``--warmup`` untimed passes and ``--repeats`` timed ones. Figures are medians over every
timed pass of a side; ratios are new / old (lower is faster), peak memory is the child's
resident high-water mark (median over the children of a side).

- ``edm2_fwd``: EDM2-XS U-Net (img512 preset: 64x64x4 latent, 1000 classes), batch 8,
  eval mode, no gradients. ``edm2_fwd_bwd``: training mode, forward and backward of the
  mean square output.
- ``tl_g_fwd``: time-lapse generator at 256, batch 4, eval mode, no gradients.
  ``tl_step``: one G+D training step as the recipe runs it without augmentation: the G phase
  (G -> D -> non-saturating loss, backward with D frozen, w_avg updated), then the D phase
  (fakes made without gradients, D on fakes and reals, backward).

Bars (issue 17): edm2_fwd <= 0.73, edm2_fwd_bwd <= 0.82, tl_g_fwd <= 0.66, tl_step <= 0.78,
every memory ratio <= 1. Ratios from one run only: a loaded machine slows both sides.

    python tools/bench_nets.py [--rounds 2] [--repeats 3] [--warmup 1] [--only edm2_fwd,tl_step]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "999248c"
CASES = ("edm2_fwd", "edm2_fwd_bwd", "tl_g_fwd", "tl_step")
BARS = {"edm2_fwd": 0.73, "edm2_fwd_bwd": 0.82, "tl_g_fwd": 0.66, "tl_step": 0.78}


# --- networks (run in the child, against whichever tree is first on sys.path) ---------------
def _edm2(seed: int):
    import torch

    from vidgen.diffusion.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    net = UNet(UNetConfig(preset="xs", img_resolution=64, img_channels=4, label_dim=1000))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(8, 4, 64, 64, generator=g)
    c_noise = torch.randn(8, generator=g) * 0.3
    labels = torch.nn.functional.one_hot(torch.randint(1000, (8,), generator=g), 1000).float()
    return net, (x, c_noise, labels)


def _timelapse(seed: int):
    import torch

    from timelapse.model import Discriminator, Generator, ModelConfig
    from timelapse.time import TimeAxis

    cfg, axis = ModelConfig(resolution=256), TimeAxis(start=0.0, num_days=1000)
    torch.manual_seed(seed)
    G, D = Generator(cfg, axis), Discriminator(cfg, axis)
    return G, D


def _param_count(*nets) -> int:
    return sum(p.numel() for n in nets for p in n.parameters())


def _case(name: str, seed: int):
    """Returns (parameter count, a callable running one pass)."""
    import torch

    if name.startswith("edm2"):
        net, (x, c_noise, labels) = _edm2(seed)
        if name == "edm2_fwd":
            net.eval()

            def run():
                with torch.no_grad():
                    net(x, c_noise, labels)
        else:
            net.train()

            def run():
                net(x, c_noise, labels).square().mean().backward()
                net.zero_grad(set_to_none=True)
        return _param_count(net), run

    G, D = _timelapse(seed)
    B, R = 4, G.cfg.resolution
    g = torch.Generator().manual_seed(seed + 1)
    if name == "tl_g_fwd":
        G.eval()

        def run():
            with torch.no_grad():
                z, t = torch.randn(B, G.cfg.z_dim, generator=g), torch.rand(B, generator=g)
                G(z, t)
        return _param_count(G), run

    G.train(), D.train()
    real = torch.rand(B, 3, R, R, generator=g) * 2 - 1
    softplus = torch.nn.functional.softplus

    def run():
        t = torch.rand(B, generator=g)
        D.requires_grad_(False)  # G phase
        fake = G.synthesis(G.map(torch.randn(B, G.cfg.z_dim, generator=g), update_w_avg=True), t)
        softplus(-D(fake, t)).mean().backward()
        D.requires_grad_(True)  # D phase
        with torch.no_grad():
            fake = G.synthesis(G.map(torch.randn(B, G.cfg.z_dim, generator=g)), t)
        (softplus(D(fake, t)) + softplus(-D(real, t))).mean().backward()
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
    return _param_count(G, D), run


def _child(tree: str, case: str, threads: int, malloc: str, warmup: int, repeats: int, seed: int) -> None:
    import resource
    import time

    # The allocator mode is applied by today's vidgen.hostmem for both sides, then the
    # measured tree's vidgen is imported in its place.
    sys.path.insert(0, str(ROOT))
    from vidgen.hostmem import tune_host_allocator

    mode = tune_host_allocator(malloc)
    for mod in [m for m in sys.modules if m == "vidgen" or m.startswith("vidgen.")]:
        del sys.modules[mod]
    sys.path.remove(str(ROOT))
    sys.path.insert(0, tree)

    import torch

    torch.set_num_threads(threads)
    params, run = _case(case, seed)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        run()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # GiB (ru_maxrss in KiB)
    print(json.dumps({"times": times, "peak_gb": peak, "params": params, "malloc": mode,
                      "vidgen": sys.modules["vidgen"].__file__}))


def _in_child(tree: Path, case: str, args) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); import bench_nets; "
            f"bench_nets._child({str(tree)!r}, {case!r}, {args.threads}, {args.malloc!r}, {args.warmup}, "
            f"{args.repeats}, {args.seed})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "VIDGEN_HOST_MALLOC"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree, env=env)
    if proc.returncode:
        raise RuntimeError(f"{case} in {tree}: {proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["vidgen"].startswith(str(tree)):
        raise RuntimeError(f"{case}: imported {out['vidgen']}, not the tree under {tree}")
    return out


class _OldTree:
    """A detached git worktree of ``commit`` under a temporary folder, removed on exit."""

    def __init__(self, commit: str):
        self.commit = commit

    def __enter__(self) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_nets_"))
        self.path = self.tmp / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(self.path), self.commit],
                       check=True, capture_output=True, text=True)
        return self.path

    def __exit__(self, *exc) -> None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True, text=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True, text=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="child processes per side and case (old and new alternate)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per child")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes per child before the timed ones")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every child (default: torch's default)")
    ap.add_argument("--malloc", choices=("heap", "system"), default="heap", help="host allocator mode (vidgen/hostmem.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(CASES)}")
    ap.add_argument("--commit", default=BASE_COMMIT, help="the commit to compare against")
    args = ap.parse_args(argv)
    cases = [c for c in args.only.split(",") if c] or list(CASES)
    if unknown := set(cases) - set(CASES):
        ap.error(f"--only: unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    if args.threads <= 0:
        import torch
        args.threads = torch.get_num_threads()

    out = {"bench": "nets", "commit": args.commit, "threads": args.threads, "load_avg": round(os.getloadavg()[0], 2)}
    with _OldTree(args.commit) as old_tree:
        for case in cases:
            runs = {"old": [], "new": []}
            for r in range(args.rounds):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for side in order:
                    runs[side].append(_in_child(old_tree if side == "old" else ROOT, case, args))
            params = {side: runs[side][0]["params"] for side in runs}
            if params["old"] != params["new"]:
                raise RuntimeError(f"{case}: parameter counts differ: {params}")
            t = {side: statistics.median([x for run in runs[side] for x in run["times"]]) for side in runs}
            m = {side: statistics.median([run["peak_gb"] for run in runs[side]]) for side in runs}
            out[case] = round(t["new"] / t["old"], 3)
            out[f"{case}_bar"] = BARS[case]
            out[f"{case}_s"] = {side: round(t[side], 3) for side in t}
            out[f"{case}_mem"] = round(m["new"] / m["old"], 3)
            out[f"{case}_peak_gb"] = {side: round(m[side], 3) for side in m}
            out[f"{case}_params"] = params["new"]
            out["malloc"] = runs["new"][0]["malloc"]
            print(f"{case}: {out[case]} (old {t['old']:.3f} s, new {t['new']:.3f} s, params {params['new']:,})",
                  file=sys.stderr)
    out["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
