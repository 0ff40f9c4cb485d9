"""Read a PyTorch state dict saved in the legacy (pre-1.6) format as numpy arrays, running no pickled code.

That format is a run of pickles (a magic number, the protocol version, system information,
the state dict, the list of storage keys) followed by each storage's raw bytes, each after
its element count as 8 little-endian bytes. The pickles are read by an unpickler that knows
four names only (an ordered dict, the tensor rebuild function and the storage types) and
builds nothing but dicts and numpy arrays: a hostile or damaged file is a ModelError, never
code run. PyTorch is not needed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from .errors import ImageError, ModelError

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
#: Larger than any detector this reads; a file past it is refused before it is parsed.
MAX_BYTES = 64 << 20
MAX_DIMS = 8
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StateDict(dict):
    """What the pickle's OrderedDict becomes; BUILD may set its _metadata."""


class _StorageType:
    __slots__ = ("dtype",)

    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)


class _Storage:
    __slots__ = ("dtype", "numel", "array")

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class _TensorRef:
    """A tensor's place in a storage, resolved to an array once the storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor that does not point at a storage")
    if not (_is_index(offset) and _is_shape(size) and _is_shape(stride) and len(size) == len(stride)):
        raise pickle.UnpicklingError("a tensor with a malformed offset, size or stride")
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _is_index(value) -> bool:
    return type(value) is int and 0 <= value < 1 << 40


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and len(value) <= MAX_DIMS and all(_is_index(v) for v in value)


class _Unpickler(pickle.Unpickler):
    """Knows only the names a plain tensor state dict uses; storages become placeholders."""

    def __init__(self, fh, storages: dict):
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a plain tensor state dict never holds")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[3], str) and _is_index(pid[4]) and pid[5] is None):
            raise pickle.UnpicklingError("a reference that is not a plain storage")
        _, kind, key, _, numel, _ = pid
        storage = self.storages.setdefault(key, _Storage(kind.dtype, numel))
        if (storage.dtype, storage.numel) != (kind.dtype, numel):
            raise pickle.UnpicklingError(f"storage {key} is described twice, differently")
        return storage


def read_state_dict(path: str | Path, env: str = "") -> dict[str, np.ndarray]:
    """The tensors of a legacy-format .pth state dict, by name, as numpy arrays.

    env names the variable that points at the file, for the error message."""
    from .io import read_file

    where = f" (set by {env})" if env else ""
    try:
        data = read_file(path, str(path), limit=MAX_BYTES)
    except ImageError as exc:
        raise ModelError(f"cannot read the weights file{where}: {exc}") from None
    try:
        return _parse(io.BytesIO(data))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}{where}: not a PyTorch legacy state dict of plain tensors ({exc})") from None


def _parse(fh: io.BytesIO) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}
    if _Unpickler(fh, storages).load() != MAGIC:
        raise pickle.UnpicklingError("no PyTorch legacy magic number (a newer zip-format file, or not PyTorch)")
    if _Unpickler(fh, storages).load() != PROTOCOL:
        raise pickle.UnpicklingError("an unknown PyTorch protocol version")
    info = _Unpickler(fh, storages).load()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise pickle.UnpicklingError("not saved on a little-endian machine")
    state = _Unpickler(fh, storages).load()
    keys = _Unpickler(fh, storages).load()
    if not isinstance(state, _StateDict) or not all(isinstance(k, str) for k in state):
        raise pickle.UnpicklingError("the object saved is not a state dict")
    if not isinstance(keys, list) or sorted(keys) != sorted(storages) or len(set(keys)) != len(keys):
        raise pickle.UnpicklingError("the list of storages does not match the tensors")
    for key in keys:
        storage = storages[key]
        count = int.from_bytes(fh.read(8), "little")
        if count != storage.numel:
            raise pickle.UnpicklingError(f"storage {key} holds {count} elements where {storage.numel} were announced")
        raw = fh.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise pickle.UnpicklingError("the file ends inside a storage (truncated)")
        storage.array = np.frombuffer(raw, storage.dtype)
    if fh.read(1):
        raise pickle.UnpicklingError("bytes follow the last storage")
    return {name: _materialise(name, ref) for name, ref in state.items()}


def _materialise(name: str, ref) -> np.ndarray:
    if not isinstance(ref, _TensorRef):
        raise pickle.UnpicklingError(f"{name} is not a tensor")
    array = ref.storage.array
    last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride)) if all(ref.size) else ref.offset - 1
    if last >= len(array):
        raise pickle.UnpicklingError(f"{name} reaches past the end of its storage")
    if not all(ref.size):
        return np.zeros(ref.size, array.dtype.newbyteorder("="))
    strides = tuple(st * array.itemsize for st in ref.stride)
    view = np.lib.stride_tricks.as_strided(array[ref.offset:], shape=ref.size, strides=strides, writeable=False)
    return np.array(view, dtype=array.dtype.newbyteorder("="))
