"""Evaluation suite (METHODS.md section 9): feature statistics, detectors, protocols, reports.

    frechet.py     FeatureStats (streaming, mergeable), Frechet distance, KID, precision/recall
    detectors.py   Detector interface; Inception / I3D / DINOv2 / CLIP from SHA-256-verified files
    inception.py   FID Inception-v3          dinov2.py   DINOv2 ViT-L/14
    video.py       FVD protocols, real clip sampling, colour-change curves
    image.py       frame protocols (fid50k_full, fd_dinov2, kid, pr)
    extract.py     streaming detector passes     inputs.py   real / generated inputs
    evaluate.py    metrics x runs -> report      report.py   report.json / report.md / plots
    cli.py         `vidgen eval` (benchmark definitions: vidgen.data.benchmarks)
"""

from vidgen.metrics.frechet import (FeatureStats, frechet_distance, kernel_inception_distance,
                                    precision_recall)

__all__ = ["FeatureStats", "frechet_distance", "kernel_inception_distance", "precision_recall"]
