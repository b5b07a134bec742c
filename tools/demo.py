"""The main jobs on the embedded sample data (`make demo`).

1. write the procedural *drive* sample (real mp4 files) and prepare it at the low-res and
   super-res sizes, with a contact sheet;
2. train the tiny low-res generator (long clips) and the tiny super-res generator (short
   clips) for a few minutes each, through the shared training engine;
3. render a 1000-frame video at the super-res size, window by window, and a contact sheet of it;
4. the time-lapse GAN: write the procedural time-lapse (a garden over 400 days, with its day,
   seasons, weather and a growing plant), train the tiny time-lapse preset for about two
   minutes, and re-render it stabilised (one weather, noon, every day of the span), as a day
   sweep, and as a grid of times of day x weathers.

Every step runs the same `vidgen` / `timelapse` command a user would type; the commands are
printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWRES = "36x64"
HIGHRES = "72x128"


TIMELAPSE_SIZE = "32x32"
TIMELAPSE_STEPS = 600  # the tiny preset: about 2 minutes on a 2-core CPU


def run(cmd: list[str], log: list, tool: str = "vidgen") -> float:
    print(f"\n$ {tool} " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0, cpu0 = time.time(), _children_cpu()
    module = {"vidgen": "vidgen", "timelapse": "timelapse.cli"}[tool]
    subprocess.run([sys.executable, "-m", module, *cmd], check=True, cwd=ROOT)
    dt = time.time() - t0
    # CPU seconds too: on a busy machine the wall time says more about the load than the work
    log.append({"command": f"{tool} " + " ".join(cmd), "seconds": round(dt, 1),
                "cpu_seconds": round(_children_cpu() - cpu0, 1)})
    return dt


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def newest_run(runs: Path, family: str) -> Path:
    found = sorted(p for p in runs.iterdir() if p.is_dir() and f"-{family}-" in p.name + "-")
    if not found:
        raise SystemExit(f"no {family} run folder under {runs}")
    return found[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo", help="folder for everything the demo writes")
    ap.add_argument("--frames", type=int, default=1000, help="length of the rendered video")
    ap.add_argument("--lowres-steps", type=int, default=None, help="override the tiny preset's steps")
    ap.add_argument("--superres-steps", type=int, default=500,
                    help="super-res steps (the tiny preset has 200; the demo has time for more)")
    ap.add_argument("--timelapse-steps", type=int, default=TIMELAPSE_STEPS, help="time-lapse GAN training steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw, data, runs = out / "raw" / "drive", out / "data" / "drive", out / "runs"
    log: list = []
    t_start = time.time()

    if not raw.is_dir():
        run(["data", "synth", "drive", str(raw), "--size", HIGHRES, "--frames", "600", "--videos", "4"], log)
    if not (data / "manifest.json").is_file():
        run(["data", "prepare", str(raw), "--out", str(data), "--resolution", LOWRES, "--resolution", HIGHRES], log)
    run(["data", "inspect", str(data), "--png", str(out / "data_contact_sheet.png")], log)

    lowres = ["train", "lvg-lowres", "--config", "configs/lvg/lowres-tiny.yaml", "--data", str(data),
              "--out", str(runs)]
    if args.lowres_steps:
        lowres += ["--set", f"engine.steps={args.lowres_steps}"]
    run(lowres, log)
    superres = ["train", "lvg-superres", "--config", "configs/lvg/superres-tiny.yaml", "--data", str(data),
                "--out", str(runs)]
    if args.superres_steps:
        superres += ["--set", f"engine.steps={args.superres_steps}"]
    run(superres, log)

    video = out / "drive_1000f.mp4"
    run(["generate", "--lowres", str(newest_run(runs, "lvg-lowres")), "--superres",
         str(newest_run(runs, "lvg-superres")), "--frames", str(args.frames), "--seed", str(args.seed),
         "--out", str(video), "--save-lowres"], log)
    run(["data", "inspect", str(video), "--png", str(out / "video_contact_sheet.png")], log)

    tl = timelapse_job(out, args, log)

    total = time.time() - t_start
    summary = {"total_seconds": round(total, 1), "cpu_seconds": round(sum(s["cpu_seconds"] for s in log), 1),
               "steps": log, "video": str(video),
               "contact_sheets": [str(out / "data_contact_sheet.png"), str(out / "video_contact_sheet.png")],
               "runs": str(runs), "timelapse": tl}
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    print(f"\nDone in {total / 60:.1f} min.")
    print(f"  video:          {video}")
    print(f"  low-res video:  {video.with_name(video.stem + '_lowres.mp4')}")
    print(f"  contact sheets: {out / 'data_contact_sheet.png'}, {out / 'video_contact_sheet.png'}")
    print(f"  time-lapse:     {tl['stabilized']} (stabilised: one weather at noon, every day)")
    print(f"                  {tl['day_sweep']} (one day), {tl['day_grid']} (hours x weathers)")
    print(f"                  {tl['real_frames']} (the training frames)")
    print(f"  training runs:  {runs}")
    return 0


def timelapse_job(out: Path, args: argparse.Namespace, log: list) -> dict:
    """Train the time-lapse GAN on the procedural time-lapse and re-render it (docs/METHODS.md 2)."""
    raw, runs = out / "raw" / "timelapse", out / "runs"
    if not raw.is_dir():
        run(["data", "synth", "timelapse", str(raw), "--size", TIMELAPSE_SIZE, "--days", "400",
             "--seed", str(args.seed)], log)
    run(["train", "--data", str(raw), "--config", "configs/timelapse/tiny.yaml", "--out", str(runs),
         "--set", f"engine.steps={args.timelapse_steps}"], log, tool="timelapse")
    run_dir = newest_run(runs, "timelapse")
    files = {"stabilized": out / "timelapse_stabilized.mp4", "day_sweep": out / "timelapse_day.mp4",
             "day_grid": out / "timelapse_day_grid.png", "real_frames": out / "timelapse_real.png"}
    run(["render", "stabilize", "-c", str(run_dir), "--hour", "12", "--seed", str(args.seed),
         "--out", str(files["stabilized"])], log, tool="timelapse")
    run(["render", "sweep", "-c", str(run_dir), "--factor", "day", "--frames", "48", "--seed", str(args.seed),
         "--out", str(files["day_sweep"])], log, tool="timelapse")
    run(["render", "grid", "-c", str(run_dir), "--factor", "day", "--frames", "8", "--seeds", "0,1,2,3",
         "--out", str(files["day_grid"])], log, tool="timelapse")
    run(["data", "inspect", str(raw), "--png", str(files["real_frames"])], log)
    return {k: str(v) for k, v in files.items()} | {"run": str(run_dir)}


if __name__ == "__main__":
    sys.exit(main())
