"""Read PyTorch-style state dicts into numpy, without torch and without running pickled code.

`load_state_dict(path)` accepts
- `.npz` (numpy, loaded with `allow_pickle=False`),
- `.safetensors`,
- `.pth` / `.pt` in PyTorch's zip format (`torch.save` since PyTorch 1.6),
- `.pth` / `.pt` in PyTorch's legacy format (`torch.save` before 1.6, or with
  `_use_new_zipfile_serialization=False`), which many published weights still use (torchvision's
  2017 ImageNet weights, the `lpips` package's linear heads).

A zip `.pth` holds a pickle (`<archive>/data.pkl`) whose tensors point at raw storages
(`<archive>/data/<key>`). A legacy `.pth` is a sequence of pickles (torch's magic number, the
format version, a system-info dict, the object, the list of storage keys) followed by each
storage as a little-endian int64 element count and the raw elements, in the listed key order.
Unpickling normally imports and calls whatever the pickle names, so a checkpoint from an
untrusted source can run arbitrary code. Here the unpickler resolves only the few globals a
tensor state dict needs (`collections.OrderedDict`, torch's tensor/parameter rebuild functions
and typed storage classes), each replaced by a numpy stand-in; any other global is refused with
`UnsafeCheckpointError`. Tensor strides and offsets are checked against the storage size before
the array is viewed, and storage sizes against the file size before anything is allocated.

The state dict may be the top-level object or sit under a 'state_dict' or 'model' key (training
checkpoints such as PiDiNet's `{'epoch', 'state_dict'}`). A leading 'module.' (left by
`DataParallel`) is stripped from every key.

`to_flax_variables(state, expected, torch_key, source)` then fills a Flax variables tree from a
state dict, transposing kernels and naming any missing or mis-shaped key.
"""

import collections
import dataclasses
import io
import pathlib
import pickle
import sys
import zipfile

import jax
import ml_dtypes
import numpy as np
import safetensors.numpy

CONTAINER_KEYS = ("state_dict", "model")
# The first pickle of a legacy torch.save file, and the format version that follows it.
LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001
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
  """numpy version of `torch._utils._rebuild_tensor(_v2)`: a bounds-checked strided view.

  A view, not a copy, because a legacy file's storages are filled only after the whole pickle
  has been read; `load_state_dict` copies every tensor once loading is complete.
  """
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
  return np.lib.stride_tricks.as_strided(storage[storage_offset:], size,
                                         [s * storage.itemsize for s in stride], writeable=False)


def _rebuild_parameter(data, *unused_requires_grad_hooks):
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the allowed globals; storages come from the subclasses."""

  def __init__(self, file, path):
    super().__init__(file)
    self._path = path

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise UnsafeCheckpointError(
          f"{self._path}: refusing to unpickle the global {module}.{name}: a tensor state dict "
          "does not need it and loading it could run arbitrary code.\n" + CONVERT_HINT)
    return _ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    raise UnsafeCheckpointError(f"{self._path}: unexpected persistent id {pid!r}")


class _ZipUnpickler(_RestrictedUnpickler):
  """Reads each storage from `<archive>/data/<key>` when the pickle first names it."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path):
    super().__init__(file, path)
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._storages = {}

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      return super().persistent_load(pid)
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


class _LegacyUnpickler(_RestrictedUnpickler):
  """Allocates each storage when the pickle first names it; the data follow the pickle."""

  def __init__(self, file, path, max_bytes: int):
    super().__init__(file, path)
    self._max_bytes = max_bytes  # The file size: no storage can hold more.
    self.storages = {}

  def persistent_load(self, pid):
    # ('storage', type, root key, location, element count, view (key, offset, size) or None)
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
      return super().persistent_load(pid)
    _, storage_type, key, _, numel, view = pid
    if key not in self.storages:
      if numel * storage_type.dtype.itemsize > self._max_bytes:
        raise pickle.UnpicklingError(f"{self._path}: storage {key} claims {numel} elements, "
                                     "more than the file holds")
      self.storages[key] = np.zeros(numel, storage_type.dtype)
    root = self.storages[key]
    if view is None:
      return root
    _, offset, size = view
    if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset
            and offset + size <= root.size):
      raise pickle.UnpicklingError(f"{self._path}: storage view {view!r} lies outside storage "
                                   f"{key} of {root.size} elements")
    return root[offset:offset + size]


def _load_torch_zip(path: pathlib.Path):
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
      return _ZipUnpickler(f, archive, prefix, byteorder, path).load()


def _load_torch_legacy(path: pathlib.Path):
  data = path.read_bytes()
  f = io.BytesIO(data)
  header = _RestrictedUnpickler(f, path)
  try:
    magic = header.load()
  except UnsafeCheckpointError:
    raise
  except Exception:  # pylint: disable=broad-except
    magic = None  # Not a pickle at all: whatever the unpickler tripped on, the answer is no.
  if magic != LEGACY_MAGIC_NUMBER:
    raise ValueError(f"{path}: not a PyTorch zip checkpoint, nor a legacy (before PyTorch 1.6) "
                     "one: it does not start with torch's magic number.\n" + CONVERT_HINT)
  version, sys_info = header.load(), header.load()
  if version != LEGACY_PROTOCOL_VERSION:
    raise ValueError(f"{path}: legacy checkpoint format version {version!r}, expected "
                     f"{LEGACY_PROTOCOL_VERSION}")
  if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
    raise ValueError(f"{path}: legacy checkpoint written on a big-endian machine; convert it "
                     "there.\n" + CONVERT_HINT)
  body = _LegacyUnpickler(f, path, max_bytes=len(data))
  obj = body.load()
  keys = _RestrictedUnpickler(f, path).load()
  if not (isinstance(keys, list) and set(keys) == set(body.storages)):
    raise pickle.UnpicklingError(f"{path}: the storage key list does not match the storages "
                                 "the tensors use")
  # Each storage: little-endian int64 element count, then the elements, in the listed order.
  for key in keys:
    storage = body.storages[key]
    count = np.frombuffer(f.read(8), "<i8")
    nbytes = storage.size * storage.itemsize
    raw = f.read(nbytes)
    if count.size != 1 or int(count[0]) != storage.size or len(raw) != nbytes:
      raise pickle.UnpicklingError(f"{path}: storage {key} is truncated or its size does not "
                                   f"match the {storage.size} elements its tensors use")
    storage[:] = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
  return obj


def _load_torch(path: pathlib.Path):
  return _load_torch_zip(path) if zipfile.is_zipfile(path) else _load_torch_legacy(path)


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
  """Loads a state dict from `.npz`, `.safetensors` or a PyTorch `.pth`/`.pt` (see module doc).

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
    # Tensors are views of their storages until here (see `_rebuild_tensor`): own them.
    state = {k: np.array(v) for k, v in _find_state_dict(_load_torch(path), path).items()}
  else:
    raise ValueError(f"{path}: unsupported weights format {suffix!r}; expected .npz, "
                     ".safetensors, .pth or .pt")
  return _strip_prefix(state, path)


# Flax kernel layout from torch's, by rank: conv OIHW -> HWIO, linear [out, in] -> [in, out].
_KERNEL_FROM_TORCH = {4: (2, 3, 1, 0), 2: (1, 0)}


def to_flax_variables(state: dict[str, np.ndarray], expected, torch_key, source) -> dict:
  """Fills a Flax variables tree from a torch state dict, checking every key and shape.

  Args:
    state: torch key -> array.
    expected: the variables' shapes, e.g. `jax.eval_shape(module.init, ...)`.
    torch_key: maps a leaf's path (collection first, e.g. ('params', 'conv', 'kernel')) to
      its state-dict key.
    source: what `state` came from, for error messages (a path or a description).

  Leaves named 'kernel' are transposed from torch's layout; every other leaf keeps its shape.
  Entries of `state` that no leaf asks for are ignored. Returns float32 numpy arrays.
  Raises ValueError naming the missing or mis-shaped key and the expected shape.
  """
  def fill(path, leaf):
    names = tuple(p.key for p in path)
    key = torch_key(names)
    order = _KERNEL_FROM_TORCH.get(len(leaf.shape)) if names[-1] == "kernel" else None
    want = tuple(leaf.shape) if order is None else tuple(leaf.shape[i] for i in np.argsort(order))
    if key not in state:
      raise ValueError(f"{source}: missing key {key!r} (expected shape {want})")
    got = tuple(np.shape(state[key]))
    if got != want:
      raise ValueError(f"{source}: key {key!r} has shape {got}, expected {want}")
    array = np.asarray(state[key], np.float32)
    return array if order is None else np.ascontiguousarray(array.transpose(order))

  return jax.tree_util.tree_map_with_path(fill, expected)
