"""Read PyTorch-style state dicts into numpy, without torch and without running pickled code.

`load_state_dict(path)` accepts
- `.npz` (numpy, loaded with `allow_pickle=False`),
- `.safetensors`,
- `.pth` / `.pt` in PyTorch's zip format (`torch.save` since PyTorch 1.6).

A `.pth` file holds a pickle (`<archive>/data.pkl`) whose tensors point at raw storages
(`<archive>/data/<key>`). Unpickling normally imports and calls whatever the pickle names, so a
checkpoint from an untrusted source can run arbitrary code. Here the unpickler resolves only the
few globals a tensor state dict needs (`collections.OrderedDict`, torch's tensor/parameter rebuild
functions and typed storage classes), each replaced by a numpy stand-in; any other global is
refused with `UnsafeCheckpointError`. Tensor strides and offsets are checked against the storage
size before the array is viewed.

The state dict may be the top-level object or sit under a 'state_dict' or 'model' key (training
checkpoints such as PiDiNet's `{'epoch', 'state_dict'}`). A leading 'module.' (left by
`DataParallel`) is stripped from every key.
"""

import collections
import dataclasses
import pathlib
import pickle
import sys
import zipfile

import ml_dtypes
import numpy as np
import safetensors.numpy

CONTAINER_KEYS = ("state_dict", "model")
DATA_PARALLEL_PREFIX = "module."

CONVERT_HINT = (
    "Convert it to .npz or .safetensors on a machine with torch, e.g.\n"
    "  import torch, numpy as np\n"
    "  sd = torch.load(path, map_location='cpu', weights_only=True)\n"
    "  sd = sd.get('state_dict', sd)\n"
    "  np.savez(out_path, **{k: v.float().numpy() for k, v in sd.items()})")


class UnsafeCheckpointError(pickle.UnpicklingError):
  """A `.pth` pickle asked for something a tensor state dict never needs."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stand-in for `torch.FloatStorage` & co.: only the element type matters."""
  dtype: np.dtype


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_requires_grad_hooks_metadata):
  """numpy version of `torch._utils._rebuild_tensor_v2`: a bounds-checked strided copy."""
  size, stride = tuple(size), tuple(stride)
  well_formed = (isinstance(storage, np.ndarray) and len(size) == len(stride) and all(
      isinstance(n, int) and n >= 0 for n in (storage_offset, *size, *stride)))
  if not well_formed:
    raise pickle.UnpicklingError(f"malformed tensor: size {size}, stride {stride}, "
                                 f"offset {storage_offset}")
  if 0 in size:
    return np.zeros(size, storage.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise pickle.UnpicklingError(f"tensor of size {size}, stride {stride}, offset "
                                 f"{storage_offset} reads past its storage of {storage.size} "
                                 "elements")
  view = np.lib.stride_tricks.as_strided(storage[storage_offset:], size,
                                         [s * storage.itemsize for s in stride], writeable=False)
  return np.array(view)


def _rebuild_parameter(data, *unused_requires_grad_hooks):
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickler that only knows the allowed globals and reads storages from the zip archive."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path):
    super().__init__(file)
    self._archive, self._prefix, self._byteorder, self._path = archive, prefix, byteorder, path
    self._storages = {}

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise UnsafeCheckpointError(
          f"{self._path}: refusing to unpickle the global {module}.{name}: a tensor state dict "
          "does not need it and loading it could run arbitrary code.\n" + CONVERT_HINT)
    return _ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise UnsafeCheckpointError(f"{self._path}: unexpected persistent id {pid!r}")
    _, storage_type, key, _, numel = pid
    if key not in self._storages:
      raw = self._archive.read(f"{self._prefix}/data/{key}")
      dtype = storage_type.dtype
      if len(raw) < numel * dtype.itemsize:
        raise pickle.UnpicklingError(f"{self._path}: storage {key} holds {len(raw)} bytes, "
                                     f"expected {numel} x {dtype.itemsize}")
      storage = np.frombuffer(raw, dtype, count=numel)
      self._storages[key] = storage if self._byteorder == sys.byteorder else storage.byteswap()
    return self._storages[key]


def _load_torch_zip(path: pathlib.Path):
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: not a PyTorch zip checkpoint (files written by `torch.save` before "
                     "PyTorch 1.6 are not supported).\n" + CONVERT_HINT)
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError(f"{path}: expected exactly one '<archive>/data.pkl' entry, found "
                       f"{pickles or 'none'}")
    prefix = pickles[0].split("/")[0]
    byteorder = "little"
    if f"{prefix}/byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
    if byteorder not in ("little", "big"):
      raise ValueError(f"{path}: {prefix}/byteorder says {byteorder!r}, expected little or big")
    with archive.open(pickles[0]) as f:
      return _StateDictUnpickler(f, archive, prefix, byteorder, path).load()


def _find_state_dict(obj, path) -> dict:
  """The tensor dict itself, or the one under a conventional container key."""
  if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
    return obj
  if isinstance(obj, dict):
    for key in CONTAINER_KEYS:
      if isinstance(obj.get(key), dict):
        return _find_state_dict(obj[key], path)
  found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
  raise ValueError(f"{path}: expected a dict of tensors, possibly under one of "
                   f"{CONTAINER_KEYS}; found {found}")


def _strip_prefix(state: dict, path) -> dict[str, np.ndarray]:
  stripped = {}
  for key, value in state.items():
    name = key[len(DATA_PARALLEL_PREFIX):] if key.startswith(DATA_PARALLEL_PREFIX) else key
    if name in stripped:
      raise ValueError(f"{path}: key {key!r} collides with {name!r} once "
                       f"'{DATA_PARALLEL_PREFIX}' is removed")
    stripped[name] = value
  return stripped


def load_state_dict(path) -> dict[str, np.ndarray]:
  """Loads a state dict from `.npz`, `.safetensors` or a PyTorch zip `.pth`/`.pt` (see module doc).

  Returns numpy arrays in their stored dtype, keys without a leading 'module.'.
  Raises FileNotFoundError, ValueError for an unknown suffix or layout, and UnsafeCheckpointError
  for a pickle that references anything beyond plain tensors.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"weights file not found: {path}")
  suffix = path.suffix.lower()
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as npz:
      state = {key: npz[key] for key in npz.files}
  elif suffix == ".safetensors":
    state = safetensors.numpy.load_file(str(path))
  elif suffix in (".pth", ".pt"):
    state = _find_state_dict(_load_torch_zip(path), path)
  else:
    raise ValueError(f"{path}: unsupported weights format {suffix!r}; expected .npz, "
                     ".safetensors, .pth or .pt")
  return _strip_prefix(state, path)
