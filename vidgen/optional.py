"""Optional dependencies: import them with an error that names the extra to install.

Heavy libraries of the field are extras, not requirements (pyproject.toml)::

    text    open_clip (CLIP text and image towers), timm (the DINO ViT of a projected D)
    latent  diffusers (AutoencoderKL, the latent space of the EDM2 img512 models)
    align   kornia (frame registration)

``require("open_clip", "text")`` returns the module or raises :class:`VidgenError` with the
``pip install`` line. timm, open_clip, torch-fidelity and diffusers import torchvision; see
:func:`_prepare_torchvision` for the one case where that needs help.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

from vidgen.errors import VidgenError

_NEEDS_TORCHVISION = {"timm", "open_clip", "torch_fidelity", "diffusers"}
_torchvision_ready = False


def _prepare_torchvision() -> None:
    """Let torchvision's Python parts import when its compiled ops cannot load.

    A torchvision wheel built for a CUDA torch cannot load its C++ ops (``_C``) beside a CPU
    build of the same torch release. Its transforms and models are pure Python and work, but
    ``import torchvision`` registers fake kernels for ``torchvision::nms`` and ``qnms``
    unconditionally and fails when those operators were never defined. When (and only when)
    ``_C`` does not load, the two operator schemas are declared here without kernels, so
    the import succeeds; calling ``torchvision.ops.nms`` still fails, as it would anyway.
    """
    global _torchvision_ready
    if _torchvision_ready:
        return
    _torchvision_ready = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.origin:
        return
    import torch

    folder = os.path.dirname(spec.origin)
    libs = [f for f in os.listdir(folder) if f.startswith("_C.") and f.endswith((".so", ".pyd", ".dylib"))]
    if not libs:
        return
    try:
        torch.ops.load_library(os.path.join(folder, libs[0]))
        return
    except (OSError, RuntimeError):
        pass
    if hasattr(torch.ops.torchvision, "nms"):
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _prepare_torchvision.lib = lib  # keep the registration alive


def require(module: str, extra: str, what: str = "") -> ModuleType:
    """Import ``module`` (e.g. ``"open_clip"``) or raise a one-line error naming the extra."""
    top = module.split(".")[0]
    if top in _NEEDS_TORCHVISION:
        _prepare_torchvision()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = f" for {what}" if what else ""
        raise VidgenError(f"{top} is not installed{need}; install the optional extra: "
                          f"pip install 'vidgen[{extra}]' ({exc})") from None


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module.split(".")[0]) is not None
