"""Report files: report.json (everything), report.md (a table a person reads), colour-change
PNG plots (real vs generated) and the pictures of the report (FID heatmaps), all written
atomically."""

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
        + (f", family {report['fake']['sampler']['family']}" if report["fake"].get("sampler") else "")
        + (f", checkpoint step {step}" if step is not None else "")
        + (" (images)" if report["fake"].get("content") == "image" else ""),
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
              "real sampling policy, detector checksum, covariance).", ""]
    lines += _class_matched_md(report) + _heatmaps_md(report)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _class_matched_md(report: dict) -> list[str]:
    rows = [e for e in report["metrics"].values() if "drop" in e]
    if not rows:
        return []
    lines = ["## ImageNet-class check (Kynkaanniemi et al. 2023)", "",
             "FID again after resampling the generated frames (with replacement, none changed) so that "
             "their Inception top-1 class histogram matches the real frames'. A relative drop of "
             f"{rows[0]['flag_threshold']:.0%} or more means the FID is driven by ImageNet-class statistics "
             "rather than by the images (docs/METRICS.md).", "",
             "| metric | FID | class-matched FID | drop | real mass matched | verdict |", "|---|---|---|---|---|---|"]
    for e in rows:
        before = sum(e["fid_before"]) / len(e["fid_before"])
        drop = sum(e["drop"]) / len(e["drop"])
        mass = sum(e["matched_mass"]) / len(e["matched_mass"])
        verdict = f"**{e['verdict']}**" if e["flagged"] else e["verdict"]
        lines.append(f"| {e['name']} | {_fmt(before)} | {_fmt(e['value'])} | {drop:+.1%} | {mass:.1%} | {verdict} |")
    return lines + [""]


def _heatmaps_md(report: dict) -> list[str]:
    h = report.get("fid_heatmaps")
    if not h:
        return []
    lines = [f"## FID sensitivity heatmaps ({h['metric']})", "",
             f"The {len(h['images'])} of {h['num_generated']} generated frames whose weight changes FID most "
             "(|dFID/dweight|; removing a frame changes FID by about minus its influence). Each tile: the frame, "
             "and Grad-CAM of the FID gradient on Inception's mixed_10 activations over it (bright: where "
             "FID would rise if the features there grew).", "",
             f"![FID heatmaps]({h['png']})", "", "| rank | frame | influence | top-1 class |", "|---|---|---|---|"]
    for e in h["images"]:
        where = ", ".join(f"{k} {e[k]}" for k in ("seed", "video", "image", "frame") if k in e)
        lines.append(f"| {e['rank']} | {where} | {e['influence']:+.4g} | {e.get('top1_class', '-')} |")
    return lines + [""]


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
    for name, picture in report.pop("_images", {}).items():
        from vidgen.render.writer import save_png

        files[name] = str(save_png(out / name, picture, {"report": "vidgen eval", "picture": name}))
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
