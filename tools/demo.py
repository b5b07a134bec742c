"""The main job on the embedded sample data (`make demo`).

1. write the procedural *drive* sample (real mp4 files) and prepare it at the low-res and
   super-res sizes, with a contact sheet;
2. train the tiny low-res generator (long clips) and the tiny super-res generator (short
   clips) for a few minutes each, through the shared training engine;
3. render a 1000-frame video at the super-res size, window by window, and a contact sheet of it.

Every step runs the same `vidgen` command a user would type; the commands are printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWRES = "36x64"
HIGHRES = "72x128"


def run(cmd: list[str], log: list) -> float:
    print("\n$ vidgen " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "vidgen", *cmd], check=True, cwd=ROOT)
    dt = time.time() - t0
    log.append({"command": "vidgen " + " ".join(cmd), "seconds": round(dt, 1)})
    return dt


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

    total = time.time() - t_start
    summary = {"total_seconds": round(total, 1), "steps": log, "video": str(video),
               "contact_sheets": [str(out / "data_contact_sheet.png"), str(out / "video_contact_sheet.png")],
               "runs": str(runs)}
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    print(f"\nDone in {total / 60:.1f} min.")
    print(f"  video:          {video}")
    print(f"  low-res video:  {video.with_name(video.stem + '_lowres.mp4')}")
    print(f"  contact sheets: {out / 'data_contact_sheet.png'}, {out / 'video_contact_sheet.png'}")
    print(f"  training runs:  {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
