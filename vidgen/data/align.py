"""Frame registration for time-lapses (docs/METHODS.md section 12): the translation of every
frame against a reference.

Webcams shake and drift; a frame shifted by a few pixels moves every edge of the scene, which
a time-conditioned generator would have to learn as "weather". Each frame is registered to a
reference frame by phase correlation (Kuglin and Hines 1975): with F and G the spectra of the
reference and of a frame whose content moved by s, the normalised cross-power spectrum
G conj(F) / |G conj(F)| = exp(-2 pi i <u, s>) transforms back to a peak at s. The integer
peak is refined to 1/UPSAMPLE pixel with the matrix-multiply DFT of Guizar-Sicairos, Thurman
and Fienup ("Efficient subpixel image registration algorithms", Opt. Lett. 33(2), 2008): the
inverse transform evaluated only on a fine grid around the peak. The whitened spectrum is
weighted by a Gaussian low-pass (sigma LOWPASS cycles/pixel): the highest frequencies carry
sensor noise, JPEG blocks and resampling error rather than the scene, and biased the
sub-pixel estimate by 0.1-0.2 px on real frames with an interpolated jitter (0.03 px with it).

Conventions: a shift (dx, dy) says that the reference's point p is seen at p + (dx, dy) in
the frame; the aligned frame samples the frame at p + shift. The valid rectangle is the part
of the reference's frame that every aligned frame covers (vidgen/data/resize.py crops it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from einops import reduce

from vidgen.data.resize import Box

WORK_SIDE = 1024       # frames are registered at most this large (longest side)
UPSAMPLE = 20          # sub-pixel precision 1/UPSAMPLE pixel
MAX_SHIFT = 0.25       # a shift beyond this fraction of the frame size is not believed
MIN_CONFIDENCE = 0.08  # a weaker peak is not believed (night, fog, blank frames: all below 0.065
                       # on the real webcam frames, where good day frames peak at 0.1 to 0.9)
LOWPASS = 0.15         # Gaussian weight on the cross-power spectrum, sigma in cycles per pixel


def to_gray(frame: np.ndarray, factor: int = 1) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [H / factor, W / factor] luma, box-averaged by ``factor``."""
    g = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if factor > 1:
        h, w = (g.shape[0] // factor) * factor, (g.shape[1] // factor) * factor
        g = reduce(g[:h, :w], "(h a) (w b) -> h w", "mean", a=factor, b=factor)
    return g


def work_factor(height: int, width: int) -> int:
    """Integer reduction that brings the longest side to at most WORK_SIDE."""
    return max(1, -(-max(height, width) // WORK_SIDE))


def smooth_len(n: int) -> int:
    """The largest length <= n whose only prime factors are 2, 3 and 5 (a fast FFT size)."""
    while n > 1:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n -= 1
    return max(n, 1)


def _window(h: int, w: int) -> np.ndarray:
    """Separable Hann window: the frame's edges do not correlate as a zero-shift peak."""
    return np.outer(np.hanning(h), np.hanning(w))


class Registrar:
    """Registers frames to one reference frame. ``reference``: uint8 [H, W, 3]."""

    def __init__(self, reference: np.ndarray, factor: int | None = None):
        h, w = reference.shape[:2]
        self.size = (h, w)
        self.factor = factor or work_factor(h, w)
        g = to_gray(reference, self.factor)
        # the centre of the working image, cut to fast FFT lengths
        gh, gw = smooth_len(g.shape[0]), smooth_len(g.shape[1])
        self.cut = ((g.shape[0] - gh) // 2, (g.shape[1] - gw) // 2, gh, gw)
        self.window = _window(gh, gw).astype(np.float32)
        fy, fx = np.fft.fftfreq(gh)[:, None], np.fft.fftfreq(gw)[None, :]
        self.weight = np.exp(-(fy ** 2 + fx ** 2) / (2 * LOWPASS ** 2)).astype(np.float32)
        self.weight /= self.weight.mean()  # a perfect match peaks at 1
        self.ref_spectrum = np.conj(self._spectrum(g))

    def _spectrum(self, g: np.ndarray) -> np.ndarray:
        y, x, h, w = self.cut
        g = g[y:y + h, x:x + w].astype(np.float32)
        return scipy.fft.fft2((g - g.mean()) * self.window, workers=-1)

    def shift(self, frame: np.ndarray) -> tuple[float, float, float]:
        """frame: uint8 [H, W, 3] of the reference's size -> (dx, dy, confidence): the frame
        shows the reference's point p at p + (dx, dy); confidence is the correlation peak of
        the whitened spectra (1 for a pure translation, near 0 for unrelated frames)."""
        assert frame.shape[:2] == self.size, (frame.shape, self.size)
        cross = self._spectrum(to_gray(frame, self.factor)) * self.ref_spectrum
        cross *= self.weight / np.maximum(np.abs(cross), 1e-12)
        corr = scipy.fft.ifft2(cross, workers=-1).real
        iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
        h, w = corr.shape
        y0 = iy - h if iy > h // 2 else iy  # wrap to signed shifts
        x0 = ix - w if ix > w // 2 else ix
        dy, dx, peak = _refine(cross, float(y0), float(x0))
        return dx * self.factor, dy * self.factor, peak


def _refine(cross: np.ndarray, y0: float, x0: float) -> tuple[float, float, float]:
    """Peak of the inverse DFT of ``cross`` on a 1.5-pixel grid around (y0, x0), step
    1/UPSAMPLE (Guizar-Sicairos et al. 2008: the DFT on a small grid as two matrix products)."""
    h, w = cross.shape
    n = int(np.ceil(1.5 * UPSAMPLE))
    offsets = (np.arange(n) - n // 2) / UPSAMPLE
    ys, xs = y0 + offsets, x0 + offsets
    ky = np.exp(2j * np.pi * np.outer(ys, np.fft.fftfreq(h))).astype(cross.dtype)   # [n, H]
    kx = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(w), xs)).astype(cross.dtype)   # [W, n]
    fine = ((ky @ cross) @ kx).real / (h * w)                                        # [n, n]
    j, i = np.unravel_index(int(np.argmax(fine)), fine.shape)
    return float(ys[j]), float(xs[i]), float(fine[j, i])


@dataclass
class Alignment:
    """The registration of one clip: per kept frame its shift and whether it was believed."""

    reference: int              # index (into the kept frames) of the reference frame
    shifts: np.ndarray          # [N, 2] float (dx, dy), pixels of the source frame
    confidence: np.ndarray      # [N] correlation peak
    unreliable: list[int]       # frames whose estimate was replaced by a neighbour's
    size: tuple[int, int]       # (H, W) of the source frames

    @property
    def valid_rect(self) -> Box:
        """(x0, y0, x1, y1) of the reference frame that every aligned frame covers."""
        h, w = self.size
        dx, dy = self.shifts[:, 0], self.shifts[:, 1]
        return (max(0.0, -float(dx.min())), max(0.0, -float(dy.min())),
                min(float(w), w - float(dx.max())), min(float(h), h - float(dy.max())))

    def box(self, k: int, rect: Box) -> Box:
        """``rect`` (reference coordinates) moved onto frame k, kept inside the frame."""
        h, w = self.size
        dx, dy = (float(v) for v in self.shifts[k])
        x0, y0, x1, y1 = rect
        return (min(max(x0 + dx, 0.0), w), min(max(y0 + dy, 0.0), h),
                min(max(x1 + dx, 0.0), w), min(max(y1 + dy, 0.0), h))

    def to_json(self) -> dict:
        return {"method": "phase correlation, 1/%d px" % UPSAMPLE, "reference": self.reference,
                "shifts_xy": np.round(self.shifts, 3).tolist(),
                "confidence": np.round(self.confidence, 4).tolist(),
                "unreliable": self.unreliable, "valid_rect_xyxy": [round(v, 3) for v in self.valid_rect]}


def settle(shifts: np.ndarray, confidence: np.ndarray, size: tuple[int, int], reference: int) -> Alignment:
    """Shifts estimated per frame -> an Alignment: an estimate with a weak peak or a shift
    beyond MAX_SHIFT of the frame is replaced by the nearest believed frame's (a camera
    drifts slowly), so one failed frame cannot empty the valid rectangle."""
    h, w = size
    shifts = np.round(np.asarray(shifts, dtype=np.float64).reshape(-1, 2), 3)
    confidence = np.asarray(confidence, dtype=np.float64)
    ok = (confidence >= MIN_CONFIDENCE) & (np.abs(shifts[:, 0]) <= MAX_SHIFT * w) \
        & (np.abs(shifts[:, 1]) <= MAX_SHIFT * h)
    ok[reference] = True
    good = np.flatnonzero(ok)
    bad = np.flatnonzero(~ok)
    for k in bad:
        shifts[k] = shifts[good[np.argmin(np.abs(good - k))]]
    return Alignment(reference=reference, shifts=shifts, confidence=confidence,
                     unreliable=[int(k) for k in bad], size=size)


def register(frames_in_chunks, reference: np.ndarray, reference_index: int) -> Alignment:
    """Register every frame (an iterable of uint8 [T, H, W, 3] chunks, in order) to
    ``reference``; memory holds one chunk and the reference's spectrum."""
    reg = Registrar(reference)
    shifts, conf = [], []
    for chunk in frames_in_chunks:
        for frame in chunk:
            dx, dy, c = reg.shift(frame)
            shifts.append((dx, dy))
            conf.append(c)
        chunk = frame = None  # released before the next chunk is read
    return settle(np.array(shifts), np.array(conf), reg.size, reference_index)
