"""Streaming feature extraction: chunks of pixels -> fixed-size batches -> detector -> stats.

Batches are assembled in a background thread (decoding / generating the next batch while
the detector runs on the current one), so evaluation runs at the detector's speed and
memory stays bounded by a few batches whatever the number of samples.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from vidgen.metrics.detectors import Detector
from vidgen.metrics.frechet import FeatureStats

# A chunk: (pixels uint8 [N, H, W, 3] frames or [N, T, H, W, 3] clips, weights float [N]).
# Chunks are produced (decoded / generated) and batched in the prefetch thread.
Chunk = tuple[np.ndarray, np.ndarray]


def _layout(x: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> view [N, 3, H, W];  [N, T, H, W, 3] -> view [N, 3, T, H, W]."""
    t = torch.from_numpy(x)
    return rearrange(t, "n h w c -> n c h w") if t.ndim == 4 else rearrange(t, "n t h w c -> n c t h w")


def batches(chunks: Iterable[Chunk], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Re-cut chunks into contiguous detector batches (uint8 [B, 3, (T,) H, W], weights
    float64 [B]) of `batch_size` items; a change of frame size flushes early. Each item is
    copied once, straight into its batch."""
    buf = wbuf = None
    n = 0
    for x, w in chunks:
        assert len(x) == len(w)
        xt, wt = _layout(np.asarray(x)), torch.as_tensor(np.asarray(w, dtype=np.float64))
        while len(xt):
            if buf is not None and buf.shape[1:] != xt.shape[1:]:
                yield buf[:n], wbuf[:n]
                buf = None
            if buf is None:
                buf = torch.empty((batch_size, *xt.shape[1:]), dtype=torch.uint8)
                wbuf = torch.empty(batch_size, dtype=torch.float64)
                n = 0
            take = min(batch_size - n, len(xt))
            buf[n:n + take].copy_(xt[:take])
            wbuf[n:n + take] = wt[:take]
            xt, wt, n = xt[take:], wt[take:], n + take
            if n == batch_size:
                yield buf, wbuf
                buf = None
    if buf is not None and n:
        yield buf[:n], wbuf[:n]


def prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run iterator `it` in a background thread, `depth` items ahead; re-raises its errors."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put((False, exc))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()


def extract(detector: Detector, chunks: Iterable[Chunk], stats: FeatureStats, batch_size: int,
            total: int | None = None, desc: str = "features", progress: bool = True,
            on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> FeatureStats:
    """Feed every chunk through `detector` into `stats` (weighted); `on_batch(features [B, D],
    weights [B])` sees every batch in order."""
    bar = tqdm(total=total, desc=desc, unit="item", disable=not progress, leave=False)
    for x, weights in prefetch(batches(chunks, batch_size)):
        feats = detector(x)
        stats.add(feats, weights)
        if on_batch is not None:
            on_batch(feats, weights)
        bar.update(len(x))
    bar.close()
    return stats
