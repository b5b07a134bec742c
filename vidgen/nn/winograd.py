"""3x3 convolutions with fewer multiplications on the CPU: Winograd's F(4x4, 3x3).

A stride-1, padding-1 3x3 convolution computes every 4x4 block of outputs from the 6x6 block of
inputs around it. Winograd's minimal filtering writes that as ``Y = A^T [(G g G^T) * (B^T d B)] A``:
the 3x3 kernel ``g`` and the 6x6 input tile ``d`` are taken to a 6x6 transformed domain, where
the sum over input channels is 36 independent matrix products (tiles x in @ in x out), and the
result is taken back to 4x4 outputs. That is 36 products per 16 outputs instead of 144: 4x fewer
multiplications, at the cost of the transforms, which read and write memory once per tile.
On a CPU whose direct convolution already runs at the matrix-product peak, this is the way to
make float32 convolutions faster.

The transforms are a small C kernel (below), compiled on first use with the system's C compiler
(``cc``, OpenMP, ``-march=native``) into a per-user cache and loaded with ctypes; the matrix
products are ``torch.bmm``. Tiles are processed in chunks whose transformed inputs stay in
the cache, so the extra memory is a few megabytes. Without a C compiler (or with
``VIDGEN_WINOGRAD=0``) every call is ``F.conv2d``. A bias, and per-sample factors on the
input and output channels (a modulated, demodulated convolution), are applied inside the
transforms, so they cost no pass of their own.

Accuracy: the transforms multiply by constants up to 8 and divide by 24, so the float32 result
differs from a direct convolution by up to about 1e-4 of the output's RMS (the direct one by
about 1e-6 from the exact value); PyTorch's default TF32 convolutions on recent GPUs are
coarser still (about 1e-3). ``conv3x3`` uses it only where it pays: float32 CPU tensors
stored channels-last, channel counts that are multiples of 16, at least 128 output tiles
(batch 8 at 16x16, batch 2 at 32x32, one 64x64 image); ``winograd_conv3x3`` also takes
contiguous tensors (strided loads and stores, slower than channels-last). The gradient with
respect to the input is the same kind of convolution (the flipped, transposed kernel) and
takes the same path; the gradient with respect to the kernel is the transpose of the forward
(``dU = sum over tiles of (B^T x B) (A dy A^T)``, then ``G^T dU G``), except while the backward
is itself being differentiated (``create_graph``, as R1 does), where it is aten's direct one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from vidgen.nn import is_channels_last

# --- the transforms ------------------------------------------------------------------------
# B^T (input), G (kernel) and A^T (output) of F(4x4, 3x3) with the points 0, +-1, +-2.
_SOURCE = r"""
/* Winograd F(4x4, 3x3) transforms for float32 NHWC tensors; channels in blocks of 16. */
#include <string.h>
#define CB 16

/* CB channels at src (element stride sc) into dst; zeros where src is NULL (outside the image). */
static inline void load_block(float *dst, const float *src, long sc)
{
    if (!src)
        for (int k = 0; k < CB; k++) dst[k] = 0.f;
    else if (sc == 1)
        for (int k = 0; k < CB; k++) dst[k] = src[k];
    else
        for (int k = 0; k < CB; k++) dst[k] = src[k * sc];
}

/* Input tiles t0 <= t < t1 of x [N, C, H, W] (element strides sn, sc, sh, sw: sc = 1 for
   channels-last, the fast layout; zero padding of 1) -> V [36, t1 - t0, C], times scale [N, C]
   unless it is NULL (the transform is linear: scaling V scales x). */
void wino43_input(const float *x, long N, long H, long W, long C, long t0, long t1, float *V,
                  int nthreads, const float *scale, long sn, long sc, long sh, long sw)
{
    long th = (H + 3) / 4, tw = (W + 3) / 4, nt = t1 - t0;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long t = t0; t < t1; t++) {
        long n = t / (th * tw), r = t % (th * tw), i = r / tw, j = r % tw;
        long y0 = 4 * i - 1, x0 = 4 * j - 1;
        for (long c0 = 0; c0 < C; c0 += CB) {
            float d[6][6][CB], m[6][6][CB], sv[CB];
            for (int k = 0; k < CB; k++) sv[k] = scale ? scale[n * C + c0 + k] : 1.f;
            for (int p = 0; p < 6; p++)
                for (int q = 0; q < 6; q++) {
                    long yy = y0 + p, xx = x0 + q;
                    load_block(d[p][q], yy >= 0 && yy < H && xx >= 0 && xx < W
                               ? x + n * sn + yy * sh + xx * sw + c0 * sc : 0, sc);
                }
            for (int q = 0; q < 6; q++)          /* m = B^T d */
                for (int k = 0; k < CB; k++) {
                    float d0 = d[0][q][k], d1 = d[1][q][k], d2 = d[2][q][k];
                    float d3 = d[3][q][k], d4 = d[4][q][k], d5 = d[5][q][k];
                    m[0][q][k] = 4.f * d0 - 5.f * d2 + d4;
                    m[1][q][k] = -4.f * (d1 + d2) + d3 + d4;
                    m[2][q][k] = 4.f * (d1 - d2) - d3 + d4;
                    m[3][q][k] = 2.f * (d3 - d1) - d2 + d4;
                    m[4][q][k] = 2.f * (d1 - d3) - d2 + d4;
                    m[5][q][k] = 4.f * d1 - 5.f * d3 + d5;
                }
            for (int a = 0; a < 6; a++) {        /* V = m B */
                float o[6][CB];
                for (int k = 0; k < CB; k++) {
                    float d0 = m[a][0][k], d1 = m[a][1][k], d2 = m[a][2][k];
                    float d3 = m[a][3][k], d4 = m[a][4][k], d5 = m[a][5][k];
                    o[0][k] = 4.f * d0 - 5.f * d2 + d4;
                    o[1][k] = -4.f * (d1 + d2) + d3 + d4;
                    o[2][k] = 4.f * (d1 - d2) - d3 + d4;
                    o[3][k] = 2.f * (d3 - d1) - d2 + d4;
                    o[4][k] = 2.f * (d1 - d3) - d2 + d4;
                    o[5][k] = 4.f * d1 - 5.f * d3 + d5;
                }
                for (int b = 0; b < 6; b++) {
                    float *dst = V + ((long)(a * 6 + b) * nt + (t - t0)) * C + c0;
                    for (int k = 0; k < CB; k++) dst[k] = o[b][k] * sv[k];
                }
            }
        }
    }
}

/* Kernel w [O, I, 3, 3] -> U = G w G^T as [36, I, O]. */
void wino43_kernel(const float *w, long O, long I, float *U, int nthreads)
{
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long o0 = 0; o0 < O; o0 += CB)
        for (long i = 0; i < I; i++) {
            float g[9][CB], m[6][3][CB];
            for (int k = 0; k < CB; k++)
                for (int e = 0; e < 9; e++) g[e][k] = w[((o0 + k) * I + i) * 9 + e];
            for (int q = 0; q < 3; q++)          /* m = G g */
                for (int k = 0; k < CB; k++) {
                    float g0 = g[q][k], g1 = g[3 + q][k], g2 = g[6 + q][k];
                    m[0][q][k] = g0 * 0.25f;
                    m[1][q][k] = (g0 + g1 + g2) * (-1.f / 6.f);
                    m[2][q][k] = (g0 - g1 + g2) * (-1.f / 6.f);
                    m[3][q][k] = g0 * (1.f / 24.f) + g1 * (1.f / 12.f) + g2 * (1.f / 6.f);
                    m[4][q][k] = g0 * (1.f / 24.f) - g1 * (1.f / 12.f) + g2 * (1.f / 6.f);
                    m[5][q][k] = g2;
                }
            for (int a = 0; a < 6; a++) {        /* U = m G^T */
                float u[6][CB];
                for (int k = 0; k < CB; k++) {
                    float g0 = m[a][0][k], g1 = m[a][1][k], g2 = m[a][2][k];
                    u[0][k] = g0 * 0.25f;
                    u[1][k] = (g0 + g1 + g2) * (-1.f / 6.f);
                    u[2][k] = (g0 - g1 + g2) * (-1.f / 6.f);
                    u[3][k] = g0 * (1.f / 24.f) + g1 * (1.f / 12.f) + g2 * (1.f / 6.f);
                    u[4][k] = g0 * (1.f / 24.f) - g1 * (1.f / 12.f) + g2 * (1.f / 6.f);
                    u[5][k] = g2;
                }
                for (int b = 0; b < 6; b++) {
                    float *dst = U + ((long)(a * 6 + b) * I + i) * O + o0;
                    for (int k = 0; k < CB; k++) dst[k] = u[b][k];
                }
            }
        }
}

/* M [36, t1 - t0, O] of tiles t0 <= t < t1 -> their 4x4 outputs in y [N, O, H, W] (element
   strides sn, sc, sh, sw), times scale [N, O] and plus bias [O], each unless it is NULL. */
void wino43_output(const float *M, long N, long H, long W, long O, long t0, long t1, float *y,
                   int nthreads, const float *bias, const float *scale, long sn, long sc, long sh, long sw)
{
    long th = (H + 3) / 4, tw = (W + 3) / 4, nt = t1 - t0;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long t = t0; t < t1; t++) {
        long n = t / (th * tw), r = t % (th * tw), i = r / tw, j = r % tw;
        for (long o0 = 0; o0 < O; o0 += CB) {
            float m[6][6][CB], s[4][6][CB], bv[CB], sv[CB];
            for (int k = 0; k < CB; k++) {
                bv[k] = bias ? bias[o0 + k] : 0.f;
                sv[k] = scale ? scale[n * O + o0 + k] : 1.f;
            }
            for (int a = 0; a < 36; a++) {
                const float *src = M + ((long)a * nt + (t - t0)) * O + o0;
                for (int k = 0; k < CB; k++) m[a / 6][a % 6][k] = src[k];
            }
            for (int b = 0; b < 6; b++)          /* s = A^T m */
                for (int k = 0; k < CB; k++) {
                    float m0 = m[0][b][k], m1 = m[1][b][k], m2 = m[2][b][k];
                    float m3 = m[3][b][k], m4 = m[4][b][k], m5 = m[5][b][k];
                    float p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
                    s[0][b][k] = m0 + p12 + p34;
                    s[1][b][k] = n12 + 2.f * n34;
                    s[2][b][k] = p12 + 4.f * p34;
                    s[3][b][k] = n12 + 8.f * n34 + m5;
                }
            for (int rr = 0; rr < 4 && 4 * i + rr < H; rr++) {   /* y = s A */
                float o[4][CB];
                for (int k = 0; k < CB; k++) {
                    float m0 = s[rr][0][k], m1 = s[rr][1][k], m2 = s[rr][2][k];
                    float m3 = s[rr][3][k], m4 = s[rr][4][k], m5 = s[rr][5][k];
                    float p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
                    o[0][k] = (m0 + p12 + p34) * sv[k] + bv[k];
                    o[1][k] = (n12 + 2.f * n34) * sv[k] + bv[k];
                    o[2][k] = (p12 + 4.f * p34) * sv[k] + bv[k];
                    o[3][k] = (n12 + 8.f * n34 + m5) * sv[k] + bv[k];
                }
                if (sc != 1 && sw == 1 && 4 * j + 4 <= W) {
                    /* contiguous rows: four outputs of a channel are adjacent */
                    float *dst = y + n * sn + (4 * i + rr) * sh + 4 * j + o0 * sc;
                    for (int k = 0; k < CB; k++) {
                        float q[4] = {o[0][k], o[1][k], o[2][k], o[3][k]};
                        memcpy(dst + k * sc, q, sizeof q);
                    }
                    continue;
                }
                for (int ss = 0; ss < 4 && 4 * j + ss < W; ss++) {
                    float *dst = y + n * sn + (4 * i + rr) * sh + (4 * j + ss) * sw + o0 * sc;
                    if (sc == 1)
                        for (int k = 0; k < CB; k++) dst[k] = o[ss][k];
                    else
                        for (int k = 0; k < CB; k++) dst[k * sc] = o[ss][k];
                }
            }
        }
    }
}
/* Kernel gradient, the transpose of the output and kernel transforms: dy [N, O, H, W]
   (strides sn, sc, sh, sw) of tiles t0 <= t < t1 -> dM = A dy A^T as [36, t1 - t0, O]
   (outside the image dy counts as zero). */
void wino43_grad_output(const float *dy, long N, long H, long W, long O, long t0, long t1, float *dM,
                        int nthreads, long sn, long sc, long sh, long sw)
{
    long th = (H + 3) / 4, tw = (W + 3) / 4, nt = t1 - t0;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long t = t0; t < t1; t++) {
        long n = t / (th * tw), r = t % (th * tw), i = r / tw, j = r % tw;
        for (long o0 = 0; o0 < O; o0 += CB) {
            float g[4][4][CB], m[6][4][CB];
            for (int rr = 0; rr < 4; rr++)
                for (int ss = 0; ss < 4; ss++) {
                    long yy = 4 * i + rr, xx = 4 * j + ss;
                    load_block(g[rr][ss], yy < H && xx < W ? dy + n * sn + yy * sh + xx * sw + o0 * sc : 0, sc);
                }
            for (int ss = 0; ss < 4; ss++)       /* m = A g */
                for (int k = 0; k < CB; k++) {
                    float u0 = g[0][ss][k], u1 = g[1][ss][k], u2 = g[2][ss][k], u3 = g[3][ss][k];
                    m[0][ss][k] = u0;
                    m[1][ss][k] = u0 + u1 + u2 + u3;
                    m[2][ss][k] = u0 - u1 + u2 - u3;
                    m[3][ss][k] = u0 + 2.f * u1 + 4.f * u2 + 8.f * u3;
                    m[4][ss][k] = u0 - 2.f * u1 + 4.f * u2 - 8.f * u3;
                    m[5][ss][k] = u3;
                }
            for (int a = 0; a < 6; a++) {        /* dM = m A^T */
                float o[6][CB];
                for (int k = 0; k < CB; k++) {
                    float u0 = m[a][0][k], u1 = m[a][1][k], u2 = m[a][2][k], u3 = m[a][3][k];
                    o[0][k] = u0;
                    o[1][k] = u0 + u1 + u2 + u3;
                    o[2][k] = u0 - u1 + u2 - u3;
                    o[3][k] = u0 + 2.f * u1 + 4.f * u2 + 8.f * u3;
                    o[4][k] = u0 - 2.f * u1 + 4.f * u2 - 8.f * u3;
                    o[5][k] = u3;
                }
                for (int b = 0; b < 6; b++) {
                    float *dst = dM + ((long)(a * 6 + b) * nt + (t - t0)) * O + o0;
                    for (int k = 0; k < CB; k++) dst[k] = o[b][k];
                }
            }
        }
    }
}

/* dU [36, I, O] -> dw = G^T dU G as [O, I, 3, 3]. */
void wino43_grad_kernel(const float *dU, long O, long I, float *dw, int nthreads)
{
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long o0 = 0; o0 < O; o0 += CB)
        for (long i = 0; i < I; i++) {
            float v[6][6][CB], m[3][6][CB];
            for (int a = 0; a < 36; a++) {
                const float *src = dU + ((long)a * I + i) * O + o0;
                for (int k = 0; k < CB; k++) v[a / 6][a % 6][k] = src[k];
            }
            for (int b = 0; b < 6; b++)          /* m = G^T v */
                for (int k = 0; k < CB; k++) {
                    float v0 = v[0][b][k], v1 = v[1][b][k], v2 = v[2][b][k];
                    float v3 = v[3][b][k], v4 = v[4][b][k], v5 = v[5][b][k];
                    m[0][b][k] = 0.25f * v0 - (v1 + v2) * (1.f / 6.f) + (v3 + v4) * (1.f / 24.f);
                    m[1][b][k] = (v2 - v1) * (1.f / 6.f) + (v3 - v4) * (1.f / 12.f);
                    m[2][b][k] = (v3 + v4 - v1 - v2) * (1.f / 6.f) + v5;
                }
            for (int p = 0; p < 3; p++)          /* dw = m G */
                for (int k = 0; k < CB; k++) {
                    float v0 = m[p][0][k], v1 = m[p][1][k], v2 = m[p][2][k];
                    float v3 = m[p][3][k], v4 = m[p][4][k], v5 = m[p][5][k];
                    float *dst = dw + ((o0 + k) * I + i) * 9 + p * 3;
                    dst[0] = 0.25f * v0 - (v1 + v2) * (1.f / 6.f) + (v3 + v4) * (1.f / 24.f);
                    dst[1] = (v2 - v1) * (1.f / 6.f) + (v3 - v4) * (1.f / 12.f);
                    dst[2] = (v3 + v4 - v1 - v2) * (1.f / 6.f) + v5;
                }
        }
}
"""
BLOCK = 16  # channels per vector block of the C kernel: both channel counts must be multiples
# Fewer 4x4 output tiles than this (over the batch) and the kernel's transform, 36 x in x out
# values written per call, costs more than the products save.
MIN_TILES = 128
CHUNK_BYTES = 4 << 20  # transformed inputs per chunk of tiles: stays in the cache

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


def cache_dir() -> Path:
    """Where compiled kernels live: ``$VIDGEN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/vidgen/kernels``
    (``~/.cache/vidgen/kernels``)."""
    if os.environ.get("VIDGEN_KERNEL_CACHE"):
        return Path(os.environ["VIDGEN_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidgen" / "kernels"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _build() -> ctypes.CDLL:
    """Compiles the kernel once per source, compiler and CPU (``-march=native``) and loads it."""
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256("\0".join([_SOURCE, cc, version, _cpu_flags()]).encode()).hexdigest()[:20]
    out = cache_dir() / f"winograd-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src, lib = Path(tmp) / "winograd.c", Path(tmp) / "winograd.so"
            src.write_text(_SOURCE)
            cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(lib), str(src)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
            os.replace(lib, out)  # atomic: a concurrent process sees the old file or the whole new one
    lib = ctypes.CDLL(str(out))
    args = [ctypes.c_void_p] + [ctypes.c_long] * 6 + [ctypes.c_void_p, ctypes.c_int]
    strides = [ctypes.c_long] * 4
    lib.wino43_input.argtypes = args + [ctypes.c_void_p] + strides
    lib.wino43_output.argtypes = args + [ctypes.c_void_p, ctypes.c_void_p] + strides
    lib.wino43_input.restype = lib.wino43_output.restype = None
    lib.wino43_grad_output.argtypes = args + strides
    for name in ("wino43_kernel", "wino43_grad_kernel"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_int]
    lib.wino43_grad_output.restype = lib.wino43_kernel.restype = lib.wino43_grad_kernel.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled transforms, built on first call; None where they can't be (see ``unavailable``)."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        with _lock:
            if _lib is None and _lib_error is None:
                try:
                    _lib = _build()
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    _lib_error = f"{type(e).__name__}: {e}"
    return _lib


def unavailable() -> str | None:
    """Why the Winograd path is off (None when it is on)."""
    if os.environ.get("VIDGEN_WINOGRAD", "1") == "0":
        return "VIDGEN_WINOGRAD=0"
    library()
    return _lib_error


def eligible(x: torch.Tensor, w: torch.Tensor, any_layout: bool = False) -> bool:
    """Whether ``conv3x3(x, w)`` takes the Winograd path (see the module's notes); with
    ``any_layout``, whether ``winograd_conv3x3`` may take x (channels-last or contiguous)."""
    return (x.device.type == "cpu" and w.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and x.ndim == 4 and tuple(w.shape[-2:]) == (3, 3)
            and x.shape[1] == w.shape[1] and x.shape[1] % BLOCK == 0 and w.shape[0] % BLOCK == 0
            and tiles(x) >= MIN_TILES
            and (is_channels_last(x) or (any_layout and x.is_contiguous()))
            and not torch.compiler.is_compiling() and unavailable() is None)


def tiles(x: torch.Tensor) -> int:
    """Number of 4x4 output tiles of a [N, C, H, W] batch."""
    return x.shape[0] * ((x.shape[2] + 3) // 4) * ((x.shape[3] + 3) // 4)


def _kernel_transform(w: torch.Tensor) -> torch.Tensor:
    """[out, in, 3, 3] -> U = G w G^T as [36, in, out]."""
    o, i = w.shape[:2]
    w = w.detach().contiguous()
    u = torch.empty(36, i, o, dtype=w.dtype)
    library().wino43_kernel(w.data_ptr(), o, i, u.data_ptr(), torch.get_num_threads())
    return u


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _chunks(x: torch.Tensor, c: int, o: int):
    """Tile ranges [t0, t1) of x in chunks small enough for their transformed data to stay in
    the cache, each with (reused) [36, t1 - t0, c] and [36, t1 - t0, o] buffers."""
    count = tiles(x)
    chunk = max(32, min(count, CHUNK_BYTES // (36 * 4 * max(c, o))))
    vbuf, mbuf = torch.empty(36 * chunk * c), torch.empty(36 * chunk * o)
    for t0 in range(0, count, chunk):
        t1 = min(count, t0 + chunk)
        yield t0, t1, vbuf[: 36 * (t1 - t0) * c].view(36, -1, c), mbuf[: 36 * (t1 - t0) * o].view(36, -1, o)


def winograd_conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                     in_scale: torch.Tensor | None = None, out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x * in_scale, w, padding=1) * out_scale + b`` by F(4x4, 3x3), without autograd.

    x: [N, C, H, W], channels-last (the fast layout) or contiguous; the output has x's layout.
    w: [O, C, 3, 3]; b: [O]; in_scale: [N, C] and out_scale: [N, O] (per-sample factors, as a
    modulated convolution has; applied inside the transforms, so they cost no pass of their
    own)."""
    lib = library()
    n, c, h, wd = x.shape
    o = w.shape[0]
    u = _kernel_transform(w)
    x = x.detach()
    b, in_scale, out_scale = _f32(b), _f32(in_scale), _f32(out_scale)
    for t, shape in ((b, (o,)), (in_scale, (n, c)), (out_scale, (n, o))):
        assert t is None or tuple(t.shape) == shape, (tuple(t.shape), shape)
    y = torch.empty(n, o, h, wd, dtype=x.dtype,
                    memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
    threads = torch.get_num_threads()
    xs, ys = [x.stride(i) for i in range(4)], [y.stride(i) for i in range(4)]
    for t0, t1, v, m in _chunks(x, c, o):
        lib.wino43_input(x.data_ptr(), n, h, wd, c, t0, t1, v.data_ptr(), threads, _ptr(in_scale), *xs)
        torch.bmm(v, u, out=m)
        lib.wino43_output(m.data_ptr(), n, h, wd, o, t0, t1, y.data_ptr(), threads, _ptr(b), _ptr(out_scale), *ys)
    return y


def winograd_conv3x3_weight_grad(x: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """The kernel gradient of ``F.conv2d(x, w, padding=1)`` for the output gradient ``gy``, as the
    transpose of the Winograd forward: ``dU = sum over tiles of (B^T x B) (A gy A^T)``, one
    matrix product per transformed position, then ``dw = G^T dU G``. x: [N, C, H, W] and
    gy: [N, O, H, W], either layout. Returns [O, C, 3, 3] (contiguous)."""
    lib = library()
    n, c, h, wd = x.shape
    o = gy.shape[1]
    x, gy = x.detach(), gy.detach()
    du = torch.zeros(36, c, o)
    threads = torch.get_num_threads()
    xs, gs = [x.stride(i) for i in range(4)], [gy.stride(i) for i in range(4)]
    for t0, t1, v, m in _chunks(x, c, o):
        lib.wino43_input(x.data_ptr(), n, h, wd, c, t0, t1, v.data_ptr(), threads, None, *xs)
        lib.wino43_grad_output(gy.data_ptr(), n, h, wd, o, t0, t1, m.data_ptr(), threads, *gs)
        torch.baddbmm(du, v.transpose(1, 2), m, out=du)
    dw = torch.empty(o, c, 3, 3)
    lib.wino43_grad_kernel(du.data_ptr(), o, c, dw.data_ptr(), threads)
    return dw


class _Conv3x3(torch.autograd.Function):
    # The backward is differentiable where it must be: the input gradient is this function
    # again, and under create_graph the kernel gradient is aten's convolution_backward, so a
    # gradient penalty (R1) can differentiate through it. Otherwise the kernel gradient is the
    # transposed Winograd form.
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return winograd_conv3x3(x, w, b)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        gy = gy.contiguous(memory_format=torch.channels_last)
        if ctx.needs_input_grad[0]:
            # the input gradient of a padding-1 3x3 convolution is one with the kernel flipped
            # and in / out swapped
            gx = conv3x3(gy, w.flip(2, 3).transpose(0, 1))
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():  # create_graph: the differentiable direct form
                gw = torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                         [False, True, False])[1]
            else:
                gw = winograd_conv3x3_weight_grad(x, gy)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb


def conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, w, b, padding=1)`` for a [out, in, 3, 3] kernel; by Winograd where it pays."""
    if eligible(x, w) and (b is None or b.dtype == torch.float32):
        return _Conv3x3.apply(x, w, b)
    return F.conv2d(x, w, b, padding=1)
