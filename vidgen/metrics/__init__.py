"""Evaluation suite (docs/METHODS.md section 9): feature statistics, detectors, protocols, reports.

    frechet.py     FeatureStats (streaming, mergeable), Frechet distance, KID, precision/recall
    detectors.py   Detector interface; Inception / I3D / DINOv2 / CLIP from SHA-256-verified files
    preprocess.py  what each detector is fed (TF1 resize for Inception, PIL bicubic for DINOv2, ...)
    inception.py   FID Inception-v3          dinov2.py   DINOv2 ViT-L/14
    video.py       FVD protocols, real clip sampling, colour-change curves
    image.py       frame protocols (fid50k_full, fd_dinov2, clip_fd, kid, pr, fid_class_matched)
    class_match.py FID with the Inception top-1 class histogram matched (ImageNet-classes study)
    sensitivity.py gradient and per-image influence of FID, Grad-CAM heatmaps
    extract.py     streaming detector passes     inputs.py   real data, generated samples (any family)
    evaluate.py    metrics x runs -> report      report.py   report.json / report.md / pictures
    cli.py         `vidgen eval` (benchmark definitions: vidgen.data.benchmarks)
"""

from vidgen.metrics.frechet import (FeatureStats, frechet_distance, kernel_inception_distance,
                                    precision_recall)

__all__ = ["FeatureStats", "frechet_distance", "kernel_inception_distance", "precision_recall"]
