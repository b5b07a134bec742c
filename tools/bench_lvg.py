"""Long-video GAN benchmarks; prints one JSON line.

- ``render_peak_ratio``: peak resident memory of rendering 3000 frames divided by that of
  300 frames, tiny low-res model (configs/lvg/lowres-tiny.yaml, random weights), written to
  an mp4 window by window, each in a fresh process with the host allocator as ``vidgen
  generate`` sets it (bar: <= 1.2).
- ``lowres_fwd_bwd_s``: paper-config low-res G (T = 128, batch 1) -> D -> loss, backward
  through both with gradients for both networks' weights, fp32 on the CPU, median of the timed
  passes after two untimed ones, with the host allocator as the vidgen commands set it
  (vidgen/hostmem.py, ``heap``); bar: <= 14 s. Compare with another code base only by
  ratios measured in one run (tools/bench_nets.py does so), never by a remembered figure.
  ``lowres_fwd_bwd_system_malloc_s``: the same under glibc's default allocator settings.
  ``lowres_g_phase_s``: with D frozen, as in the G phase of training. Each in a fresh process.
- ``load_avg``: the machine's 1-minute load average before the timing (others' jobs slow it).
- ``superres_peak_gb``: paper-config super-res G + D forward and backward at batch 1, from
  ``vidgen.lvg.superres.bench_fwd_bwd_peak_memory`` (bar: <= 8 GB).

    .venv/bin/python tools/bench_lvg.py [--skip-superres] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _render_child(frames: int, out: str) -> None:
    import torch

    from vidgen.config import load_config
    from vidgen.lvg.recipe import LowResConfig, build_generator
    from vidgen.hostmem import tune_host_allocator
    from vidgen.lvg.family import LowResVideo
    from vidgen.render.stream import render_to_file

    tune_host_allocator()  # as `vidgen generate` runs
    torch.manual_seed(0)
    cfg = load_config(LowResConfig, ROOT / "configs/lvg/lowres-tiny.yaml")
    gen = LowResVideo(build_generator(cfg), frames)
    t0 = time.perf_counter()
    render_to_file(gen, 0, frames, out, fps=30, window=64, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # GiB (ru_maxrss in KiB)
    print(json.dumps({"peak_gb": peak, "seconds": time.perf_counter() - t0}))


def _in_child(call: str, env: dict | None = None) -> dict:
    """Run ``bench_lvg.<call>`` in a fresh Python process; its last stdout line is JSON."""
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); import bench_lvg; bench_lvg.{call}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ) if env is None else env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render_peak(frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return _in_child(f"_render_child({frames}, {str(Path(tmp) / 'v.mp4')!r})")


def lowres_fwd_bwd(repeats: int, train_d: bool = True, warmup: int = 2) -> list[float]:
    """Seconds per G -> D -> loss -> backward, after ``warmup`` untimed passes (a training run
    is many such steps; the first ones also fill the allocator's pools). ``train_d=False``
    freezes D as the engine's G phase does (gradients flow through D to G, none are kept for
    D's weights)."""
    import torch

    from vidgen.config import load_config
    from vidgen.lvg.recipe import LowResConfig, build_discriminator, build_generator

    torch.manual_seed(0)
    cfg = load_config(LowResConfig, ROOT / "configs/lvg/lowres-paper.yaml")
    G, D = build_generator(cfg), build_discriminator(cfg)
    D.requires_grad_(train_d)
    T = cfg.data.clip_len
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        video = G(lambda a, b: torch.randn(1, 8, b - a), T)  # [1, 3, 128, 36, 64]
        torch.nn.functional.softplus(-D(video)).sum().backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
    return times


def _lowres_child(malloc: str, repeats: int, train_d: bool, warmup: int) -> None:
    from vidgen.hostmem import tune_host_allocator

    mode = tune_host_allocator(malloc)
    times = lowres_fwd_bwd(repeats, train_d, warmup)
    print(json.dumps({"malloc": mode, "times": times}))


def lowres_in_child(malloc: str, repeats: int, train_d: bool = True, warmup: int = 2) -> dict:
    """:func:`lowres_fwd_bwd` in a fresh process with the host allocator in ``malloc`` mode
    (vidgen/hostmem.py: ``heap`` is what the vidgen commands use, ``system`` is glibc's default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "VIDGEN_HOST_MALLOC"}
    return _in_child(f"_lowres_child({malloc!r}, {repeats}, {train_d}, {warmup})", env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed low-res G+D passes after 2 untimed ones (the median is reported)")
    ap.add_argument("--skip-superres", action="store_true")
    args = ap.parse_args(argv)

    short, long = render_peak(300), render_peak(3000)
    load = os.getloadavg()[0]
    heap = lowres_in_child("heap", args.repeats)
    system = lowres_in_child("system", max(1, args.repeats - 1), warmup=1)
    g_phase = lowres_in_child("heap", max(1, args.repeats - 1), train_d=False)
    out = {"bench": "lvg", "render_peak_gb_300": round(short["peak_gb"], 3),
           "render_peak_gb_3000": round(long["peak_gb"], 3),
           "render_peak_ratio": round(long["peak_gb"] / short["peak_gb"], 3), "render_peak_ratio_bar": 1.2,
           "render_s_3000": round(long["seconds"], 1),
           "lowres_fwd_bwd_s": round(statistics.median(heap["times"]), 2), "lowres_fwd_bwd_bar_s": 14.0,
           "lowres_fwd_bwd_runs_s": [round(t, 2) for t in heap["times"]], "lowres_malloc": heap["malloc"],
           "lowres_fwd_bwd_system_malloc_s": round(statistics.median(system["times"]), 2),
           "lowres_g_phase_s": round(statistics.median(g_phase["times"]), 2),
           "torch_threads": __import__("torch").get_num_threads(),
           "load_avg": round(load, 2)}
    if not args.skip_superres:
        try:
            from vidgen.lvg.superres import bench_fwd_bwd_peak_memory
        except ImportError:
            out["superres_peak_gb"] = None
        else:
            sr = bench_fwd_bwd_peak_memory()
            out.update(superres_peak_gb=round(sr["peak_rss_gb"], 2), superres_peak_bar_gb=sr.get("bar_gb", 8.0))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
