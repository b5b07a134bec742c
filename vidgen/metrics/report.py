"""Report files: report.json (everything), report.md (a table a person reads), colour-change
PNG plots (real vs generated), all written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from vidgen.fileio import write_bytes

# Fields every metric entry carries (tests check them; the Markdown table shows most).
ENTRY_FIELDS = ("name", "value", "std", "values", "runs", "protocol", "num_real", "num_fake",
                "real_sampling", "seeds", "detector", "real_stats_cached")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.1f}"


def markdown(report: dict) -> str:
    step = report["fake"].get("checkpoint_step")
    lines = [
        f"# Evaluation: {report['fake']['path'] or report['fake']['kind']}",
        "",
        f"- real: `{report['real']['path']}` ({report['real']['videos']} videos, "
        f"manifest sha256 `{report['real']['manifest_sha256'][:16]}`)",
        f"- generated: {report['fake']['kind']} `{report['fake']['path']}`"
        + (f", checkpoint step {step}" if step is not None else ""),
        f"- runs: {report['runs']}, base seed {report['seed']}",
        "",
        "| metric | value | ± std (runs) | real | generated | frames | real sampling | detector (sha256) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in report["metrics"].values():
        proto = e["protocol"]
        frames = (f"{proto['frames_per_clip']} @ stride {proto['stride']}" if "frames_per_clip" in proto
                  else f"{proto.get('num_frames', 1)} from frame 0" if "num_clips" in proto else "single")
        det = e["detector"]
        det_s = f"{det['name']} (`{det['sha256'][:12]}`)" if det else "-"
        lines.append(f"| {e['name']} | {_fmt(e['value'])} | {_fmt(e['std'])} ({e['runs']}) | "
                     f"{e['num_real'][0]} | {e['num_fake'][0]} | {frames} | {e['real_sampling']} | {det_s} |")
    lines += ["", "Numbers are comparable only under the same protocol (name, counts, frames, "
              "real sampling policy, detector checksum).", ""]
    return "\n".join(lines)


def plot_curves(name: str, curves: dict, path: Path) -> str | None:
    """Colour-change curves as a PNG via vidgen.render.layout; returns a reason if skipped."""
    try:
        from vidgen.render.layout import line_plot
    except ImportError:
        return "vidgen.render.layout is not available: curves are in report.json only"
    t = list(range(len(curves["real"])))
    line_plot({"real": (t, curves["real"]), "generated": (t, curves["fake"])}, path,
              title=f"{name}: RGB histogram intersection with frame 0", xlabel="frame t",
              ylabel="intersection")
    return None


def write_report(report: dict, out: str | Path) -> dict[str, str]:
    """Write report.json, report.md and one PNG per colour-change metric into `out`."""
    out = Path(out)
    files = {}
    for name, e in report["metrics"].items():
        if "curves" in e:
            png = out / f"{name}.png"
            skipped = plot_curves(name, e["curves"], png)
            e["plot"] = png.name if skipped is None else None
            if skipped:
                e["plot_skipped"] = skipped
            else:
                files[name] = str(png)
    write_bytes(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    write_bytes(out / "report.md", markdown(report).encode())
    files["json"], files["md"] = str(out / "report.json"), str(out / "report.md")
    return files
