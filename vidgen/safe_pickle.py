"""Read published pickles without running any code from them.

The checkpoints of the NVlabs code bases (StyleGAN2/3, EDM, EDM2, long-video GAN, ...) are
pickles written with ``torch_utils.persistence``: every network object is rebuilt by
``_reconstruct_persistent_obj(meta)``, which compiles and executes the Python source stored in
``meta["module_src"]``. Plain ``pickle.load`` runs that code, and any other global a pickle
names (``os.system``, ``builtins.eval``, a code object) as well. :func:`load` reads the same
files with an unpickler that maps every global to something written here:

- tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` over storages that
  ``torch.storage._load_from_bytes`` carries as legacy (non-zip) ``torch.save`` blobs; each
  blob is parsed by this module with the same restrictions (only ``torch.*Storage`` names);
- data: ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (a dict), numpy arrays, scalars
  and dtypes (under both ``numpy.core`` and ``numpy._core``);
- ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentObject`, a
  plain record of the class name, constructor arguments and state; the module source is
  never compiled, only its length and SHA-256 are kept;
- ``torch.nn.modules.*`` classes, and the names the caller lists in ``allow_stubs``, ->
  :class:`Stub` records that remember what they were called with and the state they were
  given, and never import or call the real object (dill's code objects, functions and types
  become such inert records too);
- anything else -> :class:`UnsafePickleError` before anything is built.

The result is a tree of dicts, lists, tensors, numpy values and records; :func:`state_dict`
flattens a module record into ``nn.Module.state_dict`` names and :func:`find` looks records up
by class name.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from vidgen.errors import VidgenError


class UnsafePickleError(VidgenError):
    """The pickle names a global that is neither data nor an allowed inert record."""


class PickleFormatError(VidgenError):
    """The file is empty, truncated, or not a pickle."""


# --- records -----------------------------------------------------------------------------------
@dataclass
class PersistentObject:
    """A ``torch_utils.persistence`` object, read as data.

    ``module_name`` is a stable stand-in for the embedded module (the reference code names it
    after a random UUID when it executes it): ``"embedded:"`` and the first 12 hex digits of
    the source's SHA-256. ``module_doc`` is the first line of the module's docstring, read
    from the text, which tells which reference file the source is.
    """

    class_name: str
    module_name: str
    init_args: tuple
    init_kwargs: dict
    state: dict
    module_src_sha256: str = ""
    module_src_chars: int = 0
    module_doc: str = ""
    meta_version: int = 0

    def attr(self, name: str, default: Any = None) -> Any:
        """A plain attribute of the object (an entry of its ``__dict__``)."""
        return self.state.get(name, default)

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name}, kwargs={sorted(self.init_kwargs)})"


class Stub(type):
    """Metaclass of the inert stand-ins for allowed globals.

    ``find_class`` returns a stub for an allowed name. Calling a stub (pickle's REDUCE), or
    creating an instance of it (NEWOBJ), returns a *new* stub that records the name and the
    arguments; BUILD records the state, SETITEMS / APPENDS the items. Nothing real is ever
    imported or called. Stubs are classes so that pickle accepts them wherever it expects a
    class (the result of dill's ``_create_type`` is the class of later objects).
    """

    def __call__(cls, *args, **kwargs):  # REDUCE: "calling" the global
        return _make_stub(cls.stub_name, args, kwargs, called=True)

    def __setstate__(cls, state):  # BUILD
        type.__setattr__(cls, "stub_state", state)

    def __setitem__(cls, key, value):  # SETITEM(S)
        cls.stub_items[key] = value

    def append(cls, value):  # APPEND
        cls.stub_list.append(value)

    def extend(cls, values):  # APPENDS
        cls.stub_list.extend(values)

    @property
    def class_name(cls) -> str:
        return cls.stub_name.rpartition(".")[2]

    @property
    def module_name(cls) -> str:
        return cls.stub_name.rpartition(".")[0]

    @property
    def state(cls) -> dict:
        """The state given by BUILD, as a dict (``(dict, slots)`` states are merged)."""
        s = cls.stub_state
        if isinstance(s, tuple) and len(s) == 2 and (s[0] is None or isinstance(s[0], dict)):
            return {**(s[0] or {}), **(s[1] or {})}
        return s if isinstance(s, dict) else {}

    @property
    def init_args(cls) -> tuple:
        return cls.stub_args

    @property
    def init_kwargs(cls) -> dict:
        return cls.stub_kwargs

    def attr(cls, name: str, default: Any = None) -> Any:
        return cls.state.get(name, default)

    def __repr__(cls) -> str:
        what = "call" if cls.stub_called else "global"
        return f"Stub({what} {cls.stub_name})"


class _StubBase:
    def __new__(cls, *args, **kwargs):  # NEWOBJ / NEWOBJ_EX: an instance of a stub class
        return _make_stub(cls.stub_name, args, kwargs, called=True)


def _make_stub(name: str, args: tuple = (), kwargs: dict | None = None, called: bool = False) -> Stub:
    ns = {"stub_name": name, "stub_args": tuple(args), "stub_kwargs": dict(kwargs or {}), "stub_called": called,
          "stub_state": None, "stub_items": {}, "stub_list": []}
    return Stub(name.rpartition(".")[2] or "stub", (_StubBase,), ns)


def is_record(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`PersistentObject` or a :class:`Stub` record."""
    return isinstance(obj, (PersistentObject, Stub))


# --- tensors -----------------------------------------------------------------------------------
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: torch.dtype


@dataclass
class _Storage:
    """A typed storage as a flat 1-D tensor (views share its memory, as torch's do)."""

    flat: torch.Tensor


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise PickleFormatError(f"a tensor refers to {type(storage).__name__}, not to a storage")
    try:
        return storage.flat.as_strided(tuple(size), tuple(stride), int(offset))
    except RuntimeError as exc:
        raise PickleFormatError(f"a tensor does not fit its storage ({exc})") from None


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> torch.Tensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> torch.Tensor:
    return data  # a parameter is read as its tensor


class _Restricted(pickle.Unpickler):
    """``find_class`` resolves only the names in ``table``; ``stubs`` patterns become records."""

    def __init__(self, file, table: dict[str, Any], stubs: tuple[str, ...], where: str, persistent=None):
        super().__init__(file)
        self.table, self.stubs, self.where, self.persistent = table, stubs, where, persistent

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in self.table:
            return self.table[full]
        if any(full == p or (p.endswith(".*") and full.startswith(p[:-1])) for p in self.stubs):
            return _make_stub(full)
        raise UnsafePickleError(f"refused global {full!r}{self.where}")

    def persistent_load(self, pid: Any) -> Any:
        if self.persistent is not None:
            return self.persistent(pid)
        raise PickleFormatError(f"unexpected persistent id {str(pid)[:60]!r}{self.where}")


def _load_legacy_storage(blob: bytes, path: str) -> _Storage:
    """Parse a legacy ``torch.save`` blob holding one storage (torch/serialization.py
    ``_legacy_load``): pickles of the magic number, the protocol version and the system info,
    then the storage object (a persistent id), the list of storage keys, and for each key an
    int64 element count followed by the raw elements."""
    where = " (inside a tensor storage blob)"
    f = io.BytesIO(blob)
    storage_types = {f"torch.{n}": _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()}
    storages: dict[str, tuple[_StorageType, int]] = {}  # root key -> (type, numel)
    views: dict[str, tuple[str, int, int]] = {}  # view key -> (root key, offset, numel)

    def unpickler() -> _Restricted:
        return _Restricted(f, storage_types, (), where, persistent_load)

    def persistent_load(pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise PickleFormatError(f"{path}: unexpected persistent id in a tensor storage blob")
        _, stype, key, _location, numel, view = pid
        if not isinstance(stype, _StorageType):
            raise PickleFormatError(f"{path}: a storage of unknown type in a tensor storage blob")
        storages.setdefault(str(key), (stype, int(numel)))
        if view is not None:
            vkey, offset, vsize = view
            views[str(vkey)] = (str(key), int(offset), int(vsize))
            return ("view", str(vkey))
        return ("root", str(key))

    if unpickler().load() != _LEGACY_MAGIC:
        raise PickleFormatError(f"{path}: a tensor storage blob lacks the torch.save magic number")
    if unpickler().load() != _LEGACY_PROTOCOL:
        raise PickleFormatError(f"{path}: a tensor storage blob has an unknown torch.save protocol")
    sys_info = unpickler().load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    ref = unpickler().load()
    keys = unpickler().load()
    flats: dict[str, torch.Tensor] = {}
    for key in keys:
        if str(key) not in storages:
            raise PickleFormatError(f"{path}: a tensor storage blob lists an unknown storage key")
        stype, numel = storages[str(key)]
        (count,) = struct.unpack("<q" if little else ">q", f.read(8))
        itemsize = torch.empty((), dtype=stype.dtype).element_size()
        data = f.read(count * itemsize)
        if count != numel or len(data) != count * itemsize:
            raise PickleFormatError(f"{path} is truncated (a tensor storage is short)")
        arr = bytearray(data)
        flat = torch.frombuffer(arr, dtype=stype.dtype) if count else torch.empty(0, dtype=stype.dtype)
        if not little and itemsize > 1:
            flat = torch.from_numpy(flat.numpy().byteswap().copy()) if stype.dtype != torch.bfloat16 else \
                torch.frombuffer(bytearray(np.frombuffer(data, dtype=">u2").astype("<u2").tobytes()), dtype=torch.bfloat16)
        flats[str(key)] = flat
    if not (isinstance(ref, tuple) and len(ref) == 2):
        raise PickleFormatError(f"{path}: a tensor storage blob does not hold a storage")
    kind, key = ref
    if kind == "root":
        if key not in flats:
            raise PickleFormatError(f"{path}: a tensor storage blob has no data for its storage")
        return _Storage(flats[key])
    root, offset, numel = views[key]
    return _Storage(flats[root][offset:offset + numel])


# --- numpy -------------------------------------------------------------------------------------
def _numpy_multiarray():
    core = getattr(np, "_core", None)
    return core.multiarray if core is not None else np.core.multiarray


def _np_reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused numpy array subclass {subtype!r}")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, dtype_code)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"refused numpy scalar of {dtype!r}")
    if data is None:
        return _numpy_multiarray().scalar(dtype)
    return _numpy_multiarray().scalar(dtype, data)


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, (str, bytes)):
        raise UnsafePickleError(f"refused numpy dtype {spec!r}")
    return np.dtype(spec, align, copy)


def _codecs_encode(obj, encoding="utf-8"):
    """Protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refused _codecs.encode call")
    return obj.encode("latin1")


# --- persistence -------------------------------------------------------------------------------
def _docstring_line(src: str) -> str:
    """The first line of a module's docstring, found in the text (the source is never parsed as
    Python)."""
    for line in src.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        for q in ('"""', "'''"):
            if s.startswith(q):
                return s[3:].split(q)[0].strip()
        return ""
    return ""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict):
        raise PickleFormatError("a persistent object without its meta dictionary")
    src = meta.get("module_src") or ""
    if not isinstance(src, str):
        src = ""
    sha = hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
    state = meta.get("state")
    state = dict(state) if isinstance(state, dict) else {"__state__": state}
    args = state.get("_init_args", ())
    kwargs = state.get("_init_kwargs", {})
    return PersistentObject(
        class_name=str(meta.get("class_name", "")), module_name=f"embedded:{sha[:12]}",
        init_args=tuple(args) if isinstance(args, (list, tuple)) else (),
        init_kwargs=dict(kwargs) if isinstance(kwargs, dict) else {}, state=state,
        module_src_sha256=sha, module_src_chars=len(src), module_doc=_docstring_line(src),
        meta_version=int(meta.get("version", 0) or 0))


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as a dict (attribute access to its keys)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# --- the loader --------------------------------------------------------------------------------
DEFAULT_STUBS = ("torch.nn.modules.*",)  # module classes: inert records of their state


def _table(path: str) -> dict[str, Any]:
    t: dict[str, Any] = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch.storage._load_from_bytes": lambda blob: _load_legacy_storage(_as_bytes(blob, path), path),
        "collections.OrderedDict": OrderedDict,
        "dnnlib.util.EasyDict": EasyDict,
        "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
        "_codecs.encode": _codecs_encode,
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": _np_dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        t[f"{core}.multiarray._reconstruct"] = _np_reconstruct
        t[f"{core}.multiarray.scalar"] = _np_scalar
    return t


def _as_bytes(blob: Any, path: str) -> bytes:
    if not isinstance(blob, (bytes, bytearray)):
        raise PickleFormatError(f"{path}: a tensor storage is not stored as bytes")
    return bytes(blob)


def _check_head(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise PickleFormatError(f"{path} is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        raise PickleFormatError(f"{path} is a zip archive (a torch.save file?), not a pickle; "
                                "load it with torch.load(weights_only=True)")
    if head[:1] != b"\x80" or head[1:2] not in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise PickleFormatError(f"{path} is not a pickle (it starts with {head!r}; published checkpoints "
                                "are pickles of protocol 2 to 5)")


def load(path: str | os.PathLike, *, allow_stubs: Iterable[str] = ()) -> Any:
    """Read the pickle ``path`` without executing code from it.

    ``allow_stubs``: further global names to read as inert :class:`Stub` records, exact
    (``"builtins.getattr"``) or as a prefix pattern (``"networks.*"``). Raises
    :class:`UnsafePickleError` ("FILE: refused global 'os.system'") for any other global,
    :class:`PickleFormatError` for an empty, truncated or non-pickle file.
    """
    path = Path(path)
    if not path.is_file():
        raise PickleFormatError(f"{path} does not exist")
    _check_head(path)
    stubs = DEFAULT_STUBS + tuple(allow_stubs)
    try:
        with open(path, "rb") as f:
            u = _Restricted(f, _table(str(path)), stubs, "")
            obj = u.load()
            trailing = f.read(1)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except PickleFormatError as exc:
        msg = str(exc)
        raise PickleFormatError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (EOFError, struct.error) as exc:
        raise PickleFormatError(f"{path} is truncated ({exc or 'unexpected end of file'})") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RecursionError, MemoryError, OverflowError) as exc:
        text = str(exc)
        if "truncated" in text or "ran out of input" in text.lower():
            raise PickleFormatError(f"{path} is truncated ({text})") from None
        raise PickleFormatError(f"{path} is not a readable pickle ({type(exc).__name__}: {text[:200]})") from None
    if trailing:
        raise PickleFormatError(f"{path} has data after the end of its pickle (not a single pickle?)")
    return obj


# --- helpers for converters --------------------------------------------------------------------
def class_name(obj: Any) -> str:
    """The class name of a record, else of the Python object."""
    return obj.class_name if is_record(obj) else type(obj).__name__


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if is_record(obj):
        mods = obj.attr("_modules")
        if isinstance(mods, dict):
            yield from ((str(k), v) for k, v in mods.items() if v is not None)
        return
    if isinstance(obj, dict):
        yield from ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        yield from ((str(i), v) for i, v in enumerate(obj))


def walk(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, object) of every record in ``tree`` (dicts, lists and sub-modules)."""
    stack = [(prefix, tree)]
    while stack:
        path, obj = stack.pop()
        if is_record(obj):
            yield path, obj
        kids = list(_children(obj))
        for name, child in reversed(kids):
            stack.append((f"{path}.{name}" if path else name, child))


def find(tree: Any, class_name: str) -> list[tuple[str, Any]]:
    """(path, record) of every record of ``class_name`` in ``tree``, in depth-first order."""
    return [(p, r) for p, r in walk(tree) if r.class_name == class_name]


def modules(record: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, record) of a module record and all its sub-modules, like ``nn.Module.named_modules``."""
    yield prefix, record
    mods = record.attr("_modules") if is_record(record) else None
    if isinstance(mods, dict):
        for name, child in mods.items():
            if child is not None:
                yield from modules(child, f"{prefix}.{name}" if prefix else str(name))


def state_dict(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a module record under ``nn.Module.state_dict`` names: ``_parameters``
    and persistent ``_buffers`` of every sub-module in ``_modules``, recursively."""
    if not is_record(record):
        raise TypeError(f"state_dict needs a module record, got {type(record).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, mod in modules(record, prefix.rstrip(".")):
        head = f"{name}." if name else ""
        params = mod.attr("_parameters") or {}
        buffers = mod.attr("_buffers") or {}
        skip = set(mod.attr("_non_persistent_buffers_set") or ())
        for k, v in params.items():
            if isinstance(v, torch.Tensor):
                out[head + k] = v
        for k, v in buffers.items():
            if isinstance(v, torch.Tensor) and k not in skip:
                out[head + k] = v
    return out


def parameters(record: Any) -> dict[str, torch.Tensor]:
    """The ``_parameters`` of a module record and its sub-modules (no buffers), by name."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in modules(record):
        for k, v in (mod.attr("_parameters") or {}).items():
            if isinstance(v, torch.Tensor):
                out[f"{name}.{k}" if name else k] = v
    return out


def num_params(record: Any) -> int:
    """Number of parameter elements of a module record (as ``sum(p.numel() for p in net.parameters())``)."""
    return sum(v.numel() for v in parameters(record).values())


def summary(tree: Any) -> dict[str, int]:
    """Count of records per class name in ``tree``."""
    counts: dict[str, int] = {}
    for _, r in walk(tree):
        counts[r.class_name] = counts.get(r.class_name, 0) + 1
    return counts


def _main(argv: list[str]) -> int:  # python -m vidgen.safe_pickle FILE: list what a pickle holds
    for p in argv:
        tree = load(p)
        print(p, summary(tree))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
