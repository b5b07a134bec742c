"""Sampler overhead: a Heun sampling run vs the same number of bare network calls, measured
in the same process, interleaved round by round (the order alternates; the overhead is the
median over rounds of sampler time / bare calls time - 1, robust to a busy machine).
``bookkeeping_s`` is the sampler alone with a free stand-in network: what the sampler itself costs.

Prints one JSON line; the bar is ``overhead <= 0.03``. On CPU it runs with ``--threads 1`` by
default: on a shared 2-core machine, two intra-op threads make each network call's time swing
by tens of percent from call to call, which drowns a sub-millisecond sampler cost.

    .venv/bin/python tools/bench_sampler.py
    .venv/bin/python tools/bench_sampler.py --device cuda --preset xs --res 64 --channels 4 --batch 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, edm_schedule, sample
from vidgen.diffusion.unet import UNetConfig, build_denoiser


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    net = build_denoiser(UNetConfig(preset=args.preset, img_resolution=args.res, img_channels=args.channels,
                                    label_dim=10)).to(dev).eval().requires_grad_(False)
    with torch.no_grad():
        net.net.out_gain.fill_(1.0)
    cfg = SamplerConfig(steps=args.steps)
    noise = torch.randn(args.batch, args.channels, args.res, args.res, device=dev)
    labels = torch.arange(args.batch, device=dev) % 10
    t = edm_schedule(args.steps, dtype=noise.dtype).tolist()  # the trajectory runs in the noise's dtype
    sigmas = [t[0]] + [s for i in range(1, args.steps) for s in (t[i], t[i])]  # the sampler's 2N-1 calls
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run_sampler() -> int:
        den = GuidedDenoiser(net, labels=labels)
        sample(den, noise, cfg)
        return den.nfe

    recorded = []  # the exact (x, sigma) inputs of the sampler's calls, replayed as bare calls

    def recorder(x, sigma, *a, **k):
        recorded.append((x.clone(), sigma))
        return net(x, sigma, *a, **k)

    with torch.inference_mode():
        sample(GuidedDenoiser(recorder, labels=labels), noise, cfg)
    assert [float(s) for _, s in recorded] == sigmas

    def run_bare() -> int:
        for x, s in recorded:
            net(x, s, labels)
        return len(recorded)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        n = fn()
        sync()
        return time.perf_counter() - t0, n

    with torch.inference_mode():
        run_sampler(), run_bare()  # warm-up
        ratios, sampler_times, bare_times = [], [], []
        for r in range(args.rounds):
            if r % 2:
                tb, nb = timed(run_bare)
                ts, nfe = timed(run_sampler)
            else:
                ts, nfe = timed(run_sampler)
                tb, nb = timed(run_bare)
            sampler_times.append(ts)
            bare_times.append(tb)
            ratios.append(ts / tb)
        free = lambda x, sigma, *a, **k: x  # noqa: E731  a network that costs nothing
        bookkeeping = min(timed(lambda: (sample(free, noise, cfg), 0)[1])[0] for _ in range(5))
    assert nfe == nb == 2 * args.steps - 1
    overhead = sorted(ratios)[len(ratios) // 2] - 1
    best_s, best_b = min(sampler_times), min(bare_times)
    print(json.dumps({"bench": "sampler", "device": str(dev), "preset": args.preset, "res": args.res,
                      "batch": args.batch, "threads": torch.get_num_threads(), "steps": args.steps, "nfe": nfe, "rounds": args.rounds,
                      "sampler_s": round(best_s, 4), "bare_calls_s": round(best_b, 4),
                      "bookkeeping_s": round(bookkeeping, 5), "overhead": round(overhead, 4), "bar": 0.03, "pass": overhead <= 0.03}))


if __name__ == "__main__":
    main()
