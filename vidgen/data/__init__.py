"""Every input of vidgen: video / frame sources, capture times, dataset preparation,
datasets, sampling, augmentation and the procedural sample data.

Names are imported lazily so that `import vidgen.data.sources` does not pull in torch.
"""

import importlib

_EXPORTS = {
    "open_source": "sources", "FrameSource": "sources", "SourceMeta": "sources",
    "capture_times": "timestamps", "TimeReport": "timestamps", "parse_name": "timestamps",
    "prepare": "prepare", "PrepareConfig": "prepare", "load_manifest": "manifest",
    "open_prepared": "manifest", "crop_resize": "resize",
    "ClipDataset": "datasets", "TimedFrameDataset": "datasets", "all_capture_times": "datasets",
    "InfiniteSampler": "sampler",
    "augment": "augment", "AugmentConfig": "augment",
    "make_drive": "synthetic", "make_timelapse": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vidgen.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vidgen.data' has no attribute '{name}'")
