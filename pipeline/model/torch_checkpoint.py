"""Read legacy (non-zip) PyTorch checkpoints into NumPy without importing torch.

The unpickler is restricted: it resolves only the handful of globals a plain
``state_dict`` needs and refuses anything else, so a tampered file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
    """The checkpoint references a Python global outside the allowed set."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type[np.generic]


@dataclass(frozen=True)
class _TensorRef:
    storage_key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: tuple[str, Any], offset: int, shape: tuple, stride: tuple, *_: Any):
    return _TensorRef(storage[0], offset, tuple(shape), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: IO[bytes], storages: dict[str, np.dtype]):
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(f"checkpoint references forbidden global {module}.{name}")

    def persistent_load(self, saved_id: tuple) -> tuple[str, Any]:
        kind, storage_type, key, _location, _numel = saved_id[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"unexpected persistent id {saved_id[:2]!r}")
        self._storages[key] = np.dtype(storage_type.dtype)
        return (key, storage_type)


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` from a legacy-format ``torch.save`` of a state dict."""
    storages: dict[str, np.dtype] = {}
    with open(path, "rb") as stream:
        if pickle.load(stream) != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch checkpoint (zip checkpoints unsupported)")
        pickle.load(stream)  # protocol version
        pickle.load(stream)  # sys info
        tree = _RestrictedUnpickler(stream, storages).load()
        keys = pickle.load(stream)
        buffers: dict[str, np.ndarray] = {}
        for key in keys:
            (count,) = struct.unpack("<q", stream.read(8))
            dtype = storages[key]
            buffers[key] = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype)
    return {name: _materialise(ref, buffers) for name, ref in tree.items() if isinstance(ref, _TensorRef)}


def _materialise(ref: _TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    flat = buffers[ref.storage_key]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=tuple(s * item for s in ref.stride)
    )
    return np.array(view)
